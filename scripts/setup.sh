#!/usr/bin/env bash
# Installs what frostgate needs on Debian, idempotently: SoftHSM2 (the token for local use and
# tests), swtpm + tpm2-pkcs11 and openCryptoki (the other token kinds the suite runs on), OpenSC
# (pkcs11-tool, to audit a token from outside), procps and passwd (pgrep, useradd),
# iproute2 and iptables (network-namespace test), and grpcio-tools from PyPI (Google's protoc, for the generated-client test). Safe to run repeatedly.
set -euo pipefail

need=()
command -v softhsm2-util >/dev/null 2>&1 && [ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
command -v pkcs11-tool >/dev/null 2>&1 || need+=(opensc)
# pgrep/pkill (tests, the leftover-process check) and useradd (two-user clusters, as root).
command -v pgrep >/dev/null 2>&1 || need+=(procps)
command -v useradd >/dev/null 2>&1 || need+=(passwd)
# Bitcoin Core's script interpreter (the `bitcoinconsensus` test dependency) is C++.
command -v c++ >/dev/null 2>&1 || need+=(g++)
# The nodes-on-separate-network-hosts test: namespaces, veth, a bridge (iproute2) and packet loss
# (iptables' statistic match).
command -v ip >/dev/null 2>&1 || need+=(iproute2)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
# The tokens operators own, in the suite (tests/tests/tokens.rs, `dev cluster init --token`): a
# TPM 2.0 (swtpm behind tpm2-abrmd on a private D-Bus, tpm2-pkcs11 and its tool) and openCryptoki.
for p in swtpm swtpm-tools libtpm2-pkcs11-1 libtpm2-pkcs11-tools tpm2-tools tpm2-abrmd libtss2-tcti-tabrmd0 dbus opencryptoki; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
# The signing service's request log on PostgreSQL (tests/tests/service_faults.rs, request_log.rs):
# Debian's server; the tests start private servers (initdb + pg_ctl in temp dirs), never the
# system's. `runuser` (util-linux) runs them as `postgres` when the suite runs as root.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)

if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || { echo "setup: need root or sudo to install ${need[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "setup: installing ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }

# Google's protoc and the Python gRPC runtime, for the test that generates a client in another
# language from host/proto (pinned; PyPI).
if ! python3 -c 'import grpc_tools, grpc' >/dev/null 2>&1; then
  echo "setup: installing grpcio-tools (PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check "grpcio-tools==1.76.0" "grpcio==1.76.0" \
    || python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "grpcio-tools==1.76.0" "grpcio==1.76.0"
fi
echo "setup: softhsm2 $(softhsm2-util --version), pkcs11-tool at $(command -v pkcs11-tool)"
