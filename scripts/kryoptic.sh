#!/usr/bin/env bash
# Portability check: builds kryoptic (a second PKCS#11 implementation, a Rust soft token from
# crates.io) and runs frostgate's custody tests against it. Each test makes its own kryoptic
# token (sqlite database) in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."

KRYOPTIC_VERSION=1.5.4
root=$(pwd)
out="$root/target/kryoptic-$KRYOPTIC_VERSION"
module="$out/release/libkryoptic_pkcs11.so"

# Build dependencies: bindgen (libclang), OpenSSL headers, pkg-config.
need=()
dpkg -s libclang-dev >/dev/null 2>&1 || need+=(libclang-dev)
dpkg -s libssl-dev >/dev/null 2>&1 || need+=(libssl-dev)
command -v pkg-config >/dev/null 2>&1 || need+=(pkg-config)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  echo "kryoptic: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if [ ! -f "$module" ]; then
  work=$(mktemp -d -t frostgate-kryoptic-XXXXXX)
  trap 'rm -rf "$work"' EXIT
  # Fetch the pinned crate through cargo (the registry is the only source), then build it with
  # its own lockfile.
  mkdir -p "$work/fetch/src"
  printf '[package]\nname = "fetch"\nversion = "0.0.0"\nedition = "2021"\n[dependencies]\nkryoptic = { version = "=%s", default-features = false }\n' \
    "$KRYOPTIC_VERSION" > "$work/fetch/Cargo.toml"
  : > "$work/fetch/src/lib.rs"
  cargo fetch --quiet --manifest-path "$work/fetch/Cargo.toml"
  crate=$(ls "${CARGO_HOME:-$HOME/.cargo}"/registry/cache/*/kryoptic-"$KRYOPTIC_VERSION".crate | head -n1)
  tar -xzf "$crate" -C "$work"
  echo "kryoptic: building $KRYOPTIC_VERSION"
  cargo build --quiet --release --locked \
    --manifest-path "$work/kryoptic-$KRYOPTIC_VERSION/Cargo.toml" \
    --no-default-features --features "minimal,kryoptic-lib/dynamic" \
    --target-dir "$out"
fi
echo "kryoptic: module $module"

FROSTGATE_TEST_PKCS11=kryoptic FROSTGATE_KRYOPTIC_MODULE="$module" \
  cargo test --quiet --workspace --all-features --test custody_sealing --test custody_token --test custody_profiles --test anchor
# The end-to-end checks on a 2-of-3 cluster of kryoptic tokens (tests/tests/tokens.rs).
FROSTGATE_KRYOPTIC_MODULE="$module" \
  cargo test --quiet -p frostgate-tests --all-features --test tokens kryoptic_end_to_end -- --ignored
