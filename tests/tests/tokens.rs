//! The same end-to-end checks on every token kind frostgate runs on, each a 2-of-3 development
//! cluster whose every node has its own token of that kind (`dev cluster init --token`): the
//! custody profile `token init` chose and recorded; a DKG; a BIP341 sighash signed and verified by
//! libsecp256k1; a PSBT signed, finalized and accepted by Bitcoin Core's interpreter; a node
//! restart; a rolled-back store refused; a key-encryption-key rotation (or, on a token that cannot
//! generate keys, a refusal naming the token's own command); a seat backup restored onto a
//! replacement node with a fresh token; the tokens seen from outside with `pkcs11-tool` (every
//! secret object sensitive and never extractable); and no share in clear anywhere on disk.
//!
//! kryoptic runs only where `FROSTGATE_KRYOPTIC_MODULE` names a built module (`scripts/kryoptic.sh`
//! builds it and runs this file's `kryoptic` test); openCryptoki needs root (its slot daemon and
//! token state are machine-wide).

mod common;

use bitcoin::consensus::encode::deserialize_hex;
use bitcoin::Transaction;
use frostgate_common::ids::KeyId;
use frostgate_tests::dev_cluster::DevCluster;
use frostgate_tests::host_bin;
use frostgate_tests::psbt::{p2tr, random_address, spend, write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

const ENCLAVE_USER: &str = "frostgate-dev-enclave";

fn root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn append(path: &Path, text: &str) {
    let mut s = std::fs::read_to_string(path).expect("config");
    s.push_str(text);
    std::fs::write(path, s).expect("config");
}

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).expect("hex").try_into().expect("32 bytes")
}

fn verify_bip340(output_key: &[u8; 32], message: &[u8; 32], signature: &str) {
    use bitcoin::secp256k1::{schnorr::Signature, Message, Secp256k1, XOnlyPublicKey};
    let secp = Secp256k1::verification_only();
    let key = XOnlyPublicKey::from_slice(output_key).expect("x-only key");
    let sig = Signature::from_slice(&hex::decode(signature).expect("hex")).expect("signature");
    secp.verify_schnorr(&sig, &Message::from_digest(*message), &key).expect("libsecp256k1 accepts the signature");
}

/// Every file under `dir` (not following links).
fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_dir() => files(&p, out),
            Ok(m) if m.is_file() => out.push(p),
            _ => {}
        }
    }
}

/// `pkcs11-tool` logged in to node `i`'s token: (module, label, PIN) from its enclave.toml.
fn outside_view(c: &DevCluster, i: u16, args: &[&str]) -> std::process::Output {
    let config = std::fs::read_to_string(c.node(i).join("enclave/enclave.toml")).expect("config");
    let field = |name: &str| {
        config
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} = \"")))
            .map(|v| v.trim_end_matches('"').to_string())
    };
    let module = field("module").unwrap_or_else(|| "/usr/lib/softhsm/libsofthsm2.so".into());
    let label = field("token_label").expect("label");
    let pin = std::fs::read_to_string(c.node(i).join("enclave/pin")).expect("pin").trim().to_string();
    // As the enclave's user: a TPM's broker serves that user only.
    let mut cmd = if root() {
        let mut r = Command::new("runuser");
        r.args(["-u", ENCLAVE_USER, "--", "pkcs11-tool"]);
        r
    } else {
        Command::new("pkcs11-tool")
    };
    cmd.args(["--module", &module, "--token-label", &label, "--login", "--pin", &pin])
        .args(args)
        .envs(c.token_env(i))
        .output()
        .expect("pkcs11-tool")
}

fn end_to_end(kind: &str, profile: &str) {
    let work = tempfile::tempdir().expect("dir");
    let private = work.path().join("recovery.key");
    let o = Command::new(host_bin())
        .args(["recovery-key", "--private-key-out", &private.display().to_string()])
        .output()
        .expect("recovery-key");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let public = String::from_utf8_lossy(&o.stdout).split_whitespace().nth(3).expect("public key").to_string();

    let c = DevCluster::init(&host_bin(), 3, 2, &["--token", kind]);
    for i in 1..=3 {
        let config = c.node(i).join("enclave/enclave.toml");
        let text = std::fs::read_to_string(&config).expect("config");
        assert!(text.contains(&format!("profile = \"{profile}\"")), "{kind}: {text}");
        append(&config, &format!("\n[recovery]\npublic_key = \"{public}\"\n"));
    }
    c.up(&[]).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    let status = c.run(&["status", "--cluster", &c.file(), "--json"]).expect("status");
    for n in status["nodes"].as_array().expect("nodes") {
        assert_eq!(n["state"], "ready", "{status}");
        assert_eq!(n["custody_profile"], profile, "{status}");
    }
    let socket = format!("unix:{}", c.node(1).join("run/enclave.sock").display());
    let enclave = c.run(&["enclave", "status", "--connect", &socket, "--json"]).expect("enclave status");
    assert_eq!(enclave["custody_profile"], profile, "{enclave}");
    assert!(enclave["hsm_calls"]["decrypt"].as_u64().is_some(), "{enclave}");

    // DKG, a BIP341 sighash, a PSBT.
    let key = c.keygen();
    let key_hex = key["key"].as_str().expect("key").to_string();
    let (internal, output) = (hex32(&key_hex), hex32(key["output_key"].as_str().expect("output key")));
    let sighash = |amount: u64| {
        let o = Command::new(host_bin())
            .args(["dev", "sighash", "--output-key", &hex::encode(output), "--amount", &amount.to_string()])
            .output()
            .expect("sighash");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let sign_verified = |amount: u64| {
        let m = sighash(amount);
        let sig = c.sign(&key_hex, &m).unwrap_or_else(|e| panic!("{kind}: {e}\n{}", c.logs()));
        verify_bip340(&output, &hex32(&m), sig["signature"].as_str().expect("signature"));
        sig
    };
    sign_verified(100_000);
    let to = random_address();
    let psbt = spend(&internal, &output, &[120_000], &[(to.script_pubkey(), 100_000), (p2tr(&output), 19_000)]);
    let path = write(work.path(), "pay.psbt", &psbt);
    let out = c
        .run(&["sign-psbt", "--cluster", &c.file(), "--key", &key_hex, "--psbt", &path, "--finalize", "--json"])
        .unwrap_or_else(|e| panic!("{kind}: {e}\n{}", c.logs()));
    let tx: Transaction = deserialize_hex(out["tx"].as_str().expect("tx")).expect("transaction");
    let spent: Vec<_> = psbt.inputs.iter().map(|i| i.witness_utxo.clone().expect("utxo")).collect();
    common::consensus_valid(&tx, &spent);

    // A restart: node 1 killed and started again signs (node 3 down, so node 1 must).
    c.kill(1);
    c.up(&[]).expect("up");
    c.kill(3);
    let sig = sign_verified(100_001);
    assert!(sig["signers"].as_array().expect("signers").iter().any(|s| s == 1), "{sig}");

    // A rolled-back store is refused: node 2's store copied, a signing by node 2, the copy put back.
    let db = c.node(2).join("host/host.db");
    let older = work.path().join("older.db");
    rusqlite::Connection::open(&db)
        .expect("db")
        .execute("VACUUM INTO ?1", [older.display().to_string()])
        .expect("copy");
    let sig = sign_verified(100_002);
    assert!(sig["signers"].as_array().expect("signers").iter().any(|s| s == 2), "{sig}");
    c.kill(2);
    let latest = work.path().join("latest.db");
    rusqlite::Connection::open(&db)
        .expect("db")
        .execute("VACUUM INTO ?1", [latest.display().to_string()])
        .expect("copy");
    let put = |from: &Path| {
        for suffix in ["-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
        }
        std::fs::copy(from, &db).expect("copy back");
    };
    put(&older);
    let e = c.up(&[]).expect_err("a rolled-back store must not come up");
    assert!(e.contains("node 2") && e.contains("store_rollback_detected"), "{kind}: {e}");
    put(&latest);
    c.up(&[]).unwrap_or_else(|e| panic!("{kind}: the current store: {e}\n{}", c.logs()));

    // Key-encryption-key rotation on node 1.
    let socket = |i: u16| format!("unix:{}", c.node(i).join("host/host.sock").display());
    let o = Command::new(host_bin())
        .args(["token", "rotate-kek", "--connect", &socket(1), "--json"])
        .output()
        .expect("rotate");
    let said = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    if kind == "tpm2" {
        // tpm2-pkcs11 has no C_GenerateKey: refused, naming the tool's command for the next key;
        // nothing changed. The operator runs it; the restarted node seals under the new key, and
        // a second `rotate-kek` reseals every share and destroys the old one.
        assert!(
            !o.status.success() && said.contains("hsm_mechanism_missing") && said.contains("tpm2_ptool addkey"),
            "{said}"
        );
        let id = said.split("--id=").nth(1).and_then(|r| r.split_whitespace().next()).expect("the id to use");
        let config = std::fs::read_to_string(c.node(1).join("enclave/enclave.toml")).expect("config");
        let token =
            config.lines().find_map(|l| l.strip_prefix("token_label = \"")).expect("label").trim_end_matches('"');
        let pin = std::fs::read_to_string(c.node(1).join("enclave/pin")).expect("pin").trim().to_string();
        let mut ptool = if root() {
            let mut r = Command::new("runuser");
            r.args(["-u", ENCLAVE_USER, "--", "tpm2_ptool"]);
            r
        } else {
            Command::new("tpm2_ptool")
        };
        let made = ptool
            .args(["addkey", "--algorithm=aes256", &format!("--label={token}"), "--key-label=frostgate-kek"])
            .args([format!("--id={id}"), format!("--userpin={pin}")])
            .envs(c.token_env(1))
            .output()
            .expect("tpm2_ptool");
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
        c.kill(1);
        c.up(&[]).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
        let o = Command::new(host_bin())
            .args(["token", "rotate-kek", "--connect", &socket(1), "--json"])
            .output()
            .expect("rotate");
        assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stderr), c.logs());
        // One key-encryption key left, the operator's; the node boots and signs with it below.
        let listing = String::from_utf8_lossy(&outside_view(&c, 1, &["-O"]).stdout).to_string();
        assert_eq!(listing.matches("label:      frostgate-kek").count(), 1, "{listing}");
        c.kill(1);
        c.up(&[]).unwrap_or_else(|e| panic!("{e}\n{}", c.logs()));
    } else {
        assert!(o.status.success(), "{kind}: {said}\n{}", c.logs());
    }
    c.kill(2);
    let sig = sign_verified(100_003);
    assert!(sig["signers"].as_array().expect("signers").iter().any(|s| s == 1), "{sig}");
    c.up(&[]).expect("up");

    // Backup of seat 3, node 3 replaced by a fresh token and an empty store, the seat restored.
    let backup = work.path().join("seat3.json");
    let o = Command::new(host_bin())
        .args(["backup", "--connect", &socket(3), "--key", &key_hex, "--out", &backup.display().to_string()])
        .output()
        .expect("backup");
    assert!(o.status.success(), "{kind}: {}{}", String::from_utf8_lossy(&o.stderr), c.logs());
    c.kill(3);
    let key_id = KeyId::from_str(&key_hex).expect("key id");
    let share = |i: u16| c.unsealed_share(i, key_id);
    let lost = share(3);
    let d = c.dir.display().to_string();
    c.run(&["dev", "cluster", "replace-node", "--dir", &d, "--node", "3"]).unwrap_or_else(|e| panic!("{kind}: {e}"));
    let key_file = c.node(3).join("enclave/recovery.key");
    std::fs::copy(&private, &key_file).expect("copy");
    if root() {
        let user = nix::unistd::User::from_name(ENCLAVE_USER).expect("lookup").expect("user");
        nix::unistd::chown(&key_file, Some(user.uid), Some(user.gid)).expect("chown");
    }
    append(&c.node(3).join("enclave/enclave.toml"), &format!("private_key_file = \"{}\"\n", key_file.display()));
    for i in [1, 2] {
        c.kill(i);
    }
    c.up(&[]).unwrap_or_else(|e| panic!("{kind}: {e}\n{}", c.logs()));
    let o = Command::new(host_bin())
        .args(["restore", "--connect", &socket(3), "--file", &backup.display().to_string(), "--cluster", &c.file()])
        .output()
        .expect("restore");
    assert!(o.status.success(), "{kind}: {}{}", String::from_utf8_lossy(&o.stderr), c.logs());
    c.kill(2);
    let sig = sign_verified(100_004);
    assert!(sig["signers"].as_array().expect("signers").iter().any(|s| s == 3), "{sig}");

    // From outside: every secret object sensitive and never extractable; a secret's value unreadable.
    for i in 1..=3 {
        let o = outside_view(&c, i, &["-O"]);
        let listing = String::from_utf8_lossy(&o.stdout).to_string();
        let mut secrets = 0;
        // One object per header line (not indented), its attributes indented below it.
        let mut objects: Vec<String> = Vec::new();
        for line in listing.lines() {
            match objects.last_mut() {
                Some(o) if line.starts_with(' ') => o.push_str(&format!("\n{line}")),
                _ => objects.push(line.to_string()),
            }
        }
        for object in
            objects.iter().filter(|o| o.starts_with("Secret Key Object") || o.starts_with("Private Key Object"))
        {
            secrets += 1;
            assert!(object.contains("sensitive") && object.contains("never extractable"), "{kind} node {i}: {object}");
        }
        assert!(
            secrets >= 1,
            "{kind} node {i}: no secret object listed:\n{listing}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let o = outside_view(&c, i, &["--read-object", "--type", "secrkey", "--label", "frostgate-kek"]);
        assert!(!o.status.success() || o.stdout.is_empty(), "{kind} node {i}: the key-encryption key was read");
    }

    // No share in clear anywhere on disk: the lost seat's share, the restored one (the same) and
    // node 1's, searched for as bytes and as hex in every file of the cluster and the tokens.
    c.kill(1);
    let mine = share(1);
    assert_eq!(share(3), lost, "{kind}: the restored share is the lost one");
    let mut all = Vec::new();
    files(&c.dir, &mut all);
    if kind == "opencryptoki" {
        files(Path::new("/var/lib/opencryptoki"), &mut all);
    }
    assert!(all.len() > 10, "{all:?}");
    for f in &all {
        let bytes = std::fs::read(f).unwrap_or_default();
        for s in [&lost, &mine] {
            let hex = hex::encode(s);
            assert!(
                !bytes.windows(s.len()).any(|w| w == s.as_slice())
                    && !bytes.windows(hex.len()).any(|w| w == hex.as_bytes()),
                "{kind}: a share in clear in {}",
                f.display()
            );
        }
    }
}

#[test]
fn softhsm_end_to_end() {
    end_to_end("softhsm", "full");
}

#[test]
fn tpm2_end_to_end() {
    end_to_end("tpm2", "aes_only");
}

#[test]
fn opencryptoki_end_to_end() {
    if !root() {
        // A skipped test must say so where CI logs show it.
        #[allow(clippy::print_stderr)]
        {
            eprintln!("SKIPPED: openCryptoki's slot daemon and token state are machine-wide; run as root");
        }
        return;
    }
    end_to_end("opencryptoki", "cbc_hmac");
}

#[test]
#[ignore = "scripts/kryoptic.sh builds kryoptic and runs this test"]
fn kryoptic_end_to_end() {
    assert!(std::env::var_os("FROSTGATE_KRYOPTIC_MODULE").is_some(), "set FROSTGATE_KRYOPTIC_MODULE");
    end_to_end("kryoptic", "full");
}
