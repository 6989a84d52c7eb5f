//! The host store with real processes: an enclave and a host (`frostgate host serve`)
//! per node, killed with SIGKILL, their database tampered with, and faults injected at each step
//! of the commit protocol.

use frostgate_common::error::{ErrorCode, RecoveryClass};
use frostgate_common::protocol::*;
use frostgate_tests::node::Node;
use frostgate_tests::signing::*;
use std::collections::BTreeMap;
use std::path::Path;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

fn code<T: std::fmt::Debug>(r: Result<T, frostgate_common::Error>) -> ErrorCode {
    r.expect_err("expected an error").code()
}

async fn sign_fully(c: &Caller, key: &KeyInfo, signers: &[frostgate_common::ids::ParticipantId]) -> Prepared {
    let p = prepare(c, key.key, signers, TaprootMode::Bip86).await;
    let shares = sign_all(c, &p).await;
    match aggregate(c, p.attempt, p.mode, &p.package, &shares).await.expect("aggregate") {
        AggregateOutcome::Signed { signature, output_key } => {
            assert!(libsecp_verifies(&signature, &p.message, &output_key))
        }
        other => panic!("{other:?}"),
    }
    p
}

async fn health(c: &Caller) -> HealthReply {
    c.request(Health).await.expect("health")
}

fn snapshot_db(db: &Path, to: &Path) {
    let _ = std::fs::remove_file(to);
    let conn = rusqlite::Connection::open(db).expect("open");
    conn.execute("VACUUM INTO ?1", [to.display().to_string()]).expect("vacuum into");
}

fn restore_db(from: &Path, db: &Path) {
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(from, db).expect("restore");
}

fn versions(db: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut s = conn.prepare("SELECT version FROM records ORDER BY version").expect("prepare");
    s.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect()
}

#[test]
fn markers_keys_and_completions_survive_sigkill_of_both_processes() {
    let mut node = Node::new();
    node.start();
    let rt = rt();
    let (key, done, half) = rt.block_on(async {
        let c = node.caller().await;
        let key = dealer(&c, 2, 3).await;
        let done = sign_fully(&c, &key, &[pid(1), pid(3)]).await;
        let half = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        round2(&c, half.attempt, pid(1), half.mode, &half.package).await.expect("share");
        (key, done, half)
    });
    node.kill();
    node.start();
    rt.block_on(async {
        let c = node.caller().await;
        assert_eq!(health(&c).await.state, ServiceState::Ready);
        // The consumed marker survived: no second share, whatever the package.
        assert_eq!(
            code(round2(&c, half.attempt, pid(1), half.mode, &half.package).await),
            ErrorCode::NonceAlreadyConsumed
        );
        assert_eq!(code(round1(&c, half.attempt, pid(1)).await), ErrorCode::NonceAlreadyConsumed);
        // The other seat's nonce was lost with the process: a package with its old commitment
        // can never be signed.
        let fresh = round1(&c, half.attempt, pid(2)).await.expect("a fresh nonce");
        assert_ne!(fresh, half.commitments[&pid(2)]);
        assert_eq!(
            code(round2(&c, half.attempt, pid(2), half.mode, &half.package).await),
            ErrorCode::SigningPackageMismatch
        );
        // The completion survived.
        let shares: BTreeMap<_, _> = done.commitments.keys().map(|s| (*s, vec![0u8; 32])).collect();
        let e = aggregate(&c, done.attempt, done.mode, &done.package, &shares).await.expect_err("completed");
        assert_eq!((e.code(), e.recovery_class()), (ErrorCode::AttemptCompleted, RecoveryClass::NewAttempt));
        // The key survived and signs.
        sign_fully(&c, &key, &[pid(2), pid(3)]).await;
    });
    assert!(node.verify(&node.db).expect("store verifies").contains("store verified"));
}

/// Starts the node's enclave and host on its current store: the host must refuse with `expected`,
/// and the enclave (asked directly) must name the same code.
fn expect_refused(node: &mut Node, name: &str, expected: ErrorCode) {
    node.start_enclave();
    let log = node.try_start_host().expect_err("the host must not come up on a bad store");
    let line = format!("error: {} (recovery: operator)", expected.code());
    assert!(log.contains(&line), "{name}: expected {line}\n{log}");
    let status = std::process::Command::new(frostgate_tests::host_bin())
        .args(["enclave", "status", "--json", "--connect"])
        .arg(node.tokens.path().join("enclave.sock"))
        .output()
        .expect("status");
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).expect("json");
    assert_eq!(v["refusal_code"], expected.code(), "{name}: the enclave reports why it refuses");
    node.kill();
}

#[test]
fn tampering_deletion_reordering_and_rollback_are_detected_at_boot() {
    let mut node = Node::new();
    node.start();
    let dir = node.tokens.path().to_path_buf();
    let older = dir.join("older.db");
    let pristine = dir.join("pristine.db");
    rt().block_on(async {
        let c = node.caller().await;
        let key = dealer(&c, 2, 3).await;
        snapshot_db(&node.db, &older);
        sign_fully(&c, &key, &[pid(1), pid(2)]).await;
        sign_fully(&c, &key, &[pid(2), pid(3)]).await;
    });
    node.kill();
    snapshot_db(&node.db, &pristine);
    let all = versions(&pristine);
    assert!(all.len() >= 8, "{all:?}");
    let mid = all[all.len() / 2];
    let last = *all.last().expect("last");
    type Tamper = Box<dyn Fn(&rusqlite::Connection)>;
    let cases: Vec<(&str, Tamper, ErrorCode)> = vec![
        (
            "byte of a middle body",
            Box::new(move |c| {
                // The byte is changed whatever it was (set to a fixed value it would be unchanged one
                // time in 256, and the store would rightly boot).
                c.execute("UPDATE records SET body = CAST(substr(body, 1, 3) || CASE WHEN substr(body, 4, 1) = X'FF' THEN X'00' ELSE X'FF' END || substr(body, 5) AS BLOB) WHERE version = ?1", [mid]).expect("u");
            }),
            ErrorCode::StoreTampered,
        ),
        (
            "byte of the last mac",
            Box::new(move |c| {
                c.execute(
                    "UPDATE records SET mac = CAST(CASE WHEN substr(mac, 1, 1) = X'00' THEN X'01' ELSE X'00' END || substr(mac, 2) AS BLOB) WHERE version = ?1",
                    [last],
                )
                .expect("u");
            }),
            ErrorCode::StoreTampered,
        ),
        (
            "middle record deleted",
            Box::new(move |c| {
                c.execute("DELETE FROM records WHERE version = ?1", [mid]).expect("d");
            }),
            ErrorCode::StoreTampered,
        ),
        (
            "records reordered",
            Box::new(move |c| {
                c.execute_batch(&format!(
                "UPDATE records SET version = -1 WHERE version = {mid}; UPDATE records SET version = {mid} WHERE version = {next}; UPDATE records SET version = {next} WHERE version = -1;",
                next = mid + 1
            )).expect("swap");
            }),
            ErrorCode::StoreTampered,
        ),
        (
            "last record deleted",
            Box::new(move |c| {
                c.execute("DELETE FROM records WHERE version = ?1", [last]).expect("d");
            }),
            ErrorCode::StoreRollbackDetected,
        ),
        (
            "every record deleted",
            Box::new(|c| {
                c.execute("DELETE FROM records", []).expect("d");
            }),
            ErrorCode::StoreRollbackDetected,
        ),
    ];
    for (name, tamper, expected) in cases {
        restore_db(&pristine, &node.db);
        tamper(&rusqlite::Connection::open(&node.db).expect("open"));
        expect_refused(&mut node, name, expected);
    }
    restore_db(&older, &node.db);
    expect_refused(&mut node, "older copy restored", ErrorCode::StoreRollbackDetected);
    // The genuine store still boots and signs.
    restore_db(&pristine, &node.db);
    node.start();
    rt().block_on(async {
        let c = node.caller().await;
        let key = c.request(KeyRef { key: key_of(&node).await }).await.expect("key");
        sign_fully(&c, &key, &[pid(1), pid(3)]).await;
    });
}

/// The key id stored on the node (read back through the store verification path).
async fn key_of(node: &Node) -> frostgate_common::ids::KeyId {
    let conn = rusqlite::Connection::open(&node.db).expect("open");
    let body: Vec<u8> =
        conn.query_row("SELECT body FROM records ORDER BY version LIMIT 1", [], |r| r.get(0)).expect("first record");
    match postcard::from_bytes::<frostgate_enclave::markers::Record>(&body).expect("record") {
        frostgate_enclave::markers::Record::KeyAdded { key, .. } => key,
        other => panic!("{other:?}"),
    }
}

#[test]
fn faults_at_every_commit_step_never_release_two_shares_and_leave_a_loadable_store() {
    for point in
        ["host_before_commit", "host_after_commit_before_ack", "after_ack_before_anchor", "after_anchor_before_release"]
    {
        let mut node = Node::new();
        node.start();
        let rt = rt();
        let (key, p) = rt.block_on(async {
            let c = node.caller().await;
            let key = dealer(&c, 2, 3).await;
            let p = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
            // Session and attempt bindings are committed without a wait; an awaited commit
            // (a new key) is a barrier after which they are durable (commits are FIFO), so the
            // armed fault below hits the round-2 marker's commit.
            dealer(&c, 2, 3).await;
            (key, p)
        });
        node.arm(point);
        let first = rt.block_on(async {
            let c = node.caller().await;
            round2(&c, p.attempt, pid(1), p.mode, &p.package).await
        });
        let mut released = usize::from(first.is_ok());
        match point {
            "host_before_commit" => {
                let e = first.expect_err("refused");
                assert_eq!(
                    (e.code(), e.recovery_class()),
                    (ErrorCode::StoreCommitFailed, RecoveryClass::Retry),
                    "{point}"
                );
                node.disarm();
            }
            "host_after_commit_before_ack" => {
                assert!(first.is_err(), "{point}: no share without an ack");
                node.host.take().expect("host").wait_exit();
                assert!(
                    node.logs().contains("DEVELOPMENT fault injection"),
                    "{point}: the fault fired\n{}",
                    node.logs()
                );
                node.disarm();
                // The enclave kept running; a new host reloads the store (finishing the anchor).
                node.try_start_host().expect("host restarts");
            }
            _ => {
                assert!(first.is_err(), "{point}: the enclave crashed before releasing");
                node.enclave.take().expect("enclave").wait_exit();
                assert!(
                    node.logs().contains("DEVELOPMENT fault injection"),
                    "{point}: the fault fired\n{}",
                    node.logs()
                );
                node.kill();
                node.start();
            }
        }
        rt.block_on(async {
            let c = node.caller().await;
            // A refused commit makes the enclave wait for the host's store, which the host streams
            // again when it sees the refusal.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
            while health(&c).await.state != ServiceState::Ready && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            assert_eq!(health(&c).await.state, ServiceState::Ready, "{point}: loadable\n{}", node.logs());
            match round2(&c, p.attempt, pid(1), p.mode, &p.package).await {
                Ok(_) => released += 1,
                Err(e) => assert_eq!(e.code(), ErrorCode::NonceAlreadyConsumed, "{point}"),
            }
            assert!(released <= 1, "{point}: {released} shares released for one nonce");
            if point == "host_before_commit" {
                assert_eq!(released, 1, "the marker was rolled back and the nonce kept: the retry signs");
            }
            // The node keeps working.
            sign_fully(&c, &key, &[pid(2), pid(3)]).await;
        });
        assert!(node.verify(&node.db).is_ok(), "{point}: the store verifies\n{}", node.logs());
    }
}

#[test]
fn a_thousand_concurrent_duplicates_release_one_share_and_commits_are_grouped() {
    let mut node = Node::new();
    node.start();
    rt().block_on(async {
        let c = node.caller().await;
        let key = dealer(&c, 2, 3).await;
        let p = prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        let tasks: Vec<_> = (0..1000)
            .map(|_| {
                let (c, p) = (c.clone(), p.clone());
                tokio::spawn(async move { round2(&c, p.attempt, pid(1), p.mode, &p.package).await })
            })
            .collect();
        let mut ok = 0;
        for t in tasks {
            match t.await.expect("join") {
                Ok(_) => ok += 1,
                Err(e) => assert_eq!(e.code(), ErrorCode::NonceAlreadyConsumed),
            }
        }
        assert_eq!(ok, 1, "exactly one share for 1000 duplicates");

        // Group commit: 64 distinct round-2 markers in flight at once share commits.
        let mut prepared = Vec::new();
        for _ in 0..32 {
            prepared.push(prepare(&c, key.key, &[pid(2), pid(3)], TaprootMode::Bip86).await);
        }
        // Barrier: an awaited commit after which every earlier (unawaited) binding is durable,
        // so the window below counts exactly the 64 round-2 markers.
        dealer(&c, 2, 3).await;
        let before = health(&c).await;
        let started = std::time::Instant::now();
        let tasks: Vec<_> = prepared
            .iter()
            .flat_map(|p| [pid(2), pid(3)].map(|s| (p.clone(), s)))
            .map(|(p, s)| {
                let c = c.clone();
                tokio::spawn(async move { round2(&c, p.attempt, s, p.mode, &p.package).await })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("share");
        }
        let elapsed = started.elapsed();
        let after = health(&c).await;
        let (commits, records) =
            (after.store_commits - before.store_commits, after.store_records - before.store_records);
        println!("group commit: {records} markers in {commits} commits over {elapsed:?}");
        assert_eq!(records, 64);
        assert!(commits < records, "{commits} commits for {records} markers: no grouping");
    });
}

fn wait_for(what: &str, node: &Node, mut done: impl FnMut(&[i64]) -> bool) -> Vec<i64> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v = versions(&node.db);
        if done(&v) {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "{what} did not happen:\n{}", node.logs());
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn compaction_replaces_old_records_with_a_snapshot_that_boots() {
    let mut node = Node::new();
    node.enclave_args = ["--session-ttl-secs", "1", "--sweep-interval-secs", "1", "--compact-after-records", "20"]
        .map(String::from)
        .to_vec();
    node.start();
    let rt = rt();
    let (key, old) = rt.block_on(async {
        let c = node.caller().await;
        let key = dealer(&c, 2, 3).await;
        let mut last = None;
        for _ in 0..3 {
            last = Some(sign_fully(&c, &key, &[pid(1), pid(2)]).await);
        }
        (key, last.expect("signed"))
    });
    // 1 key + 3 x (session, attempt, 2 consumed, completed) = 16 records; then the sweep records
    // the three session expiries (19), still under the threshold.
    let grown = wait_for("session expiry", &node, |v| v.len() >= 19);
    assert_eq!(grown.first(), Some(&1));
    rt.block_on(async {
        let c = node.caller().await;
        sign_fully(&c, &key, &[pid(2), pid(3)]).await;
    });
    // Past the threshold: the next sweep writes a snapshot of the live state and the host drops
    // every older record.
    let compacted = wait_for("compaction", &node, |v| v.first().is_some_and(|f| *f > 1));
    assert!(compacted.len() < grown.len(), "{compacted:?} vs {grown:?}");
    let conn = rusqlite::Connection::open(&node.db).expect("open");
    let first: Vec<u8> =
        conn.query_row("SELECT body FROM records ORDER BY version LIMIT 1", [], |r| r.get(0)).expect("row");
    assert!(matches!(
        postcard::from_bytes::<frostgate_enclave::markers::Record>(&first).expect("record"),
        frostgate_enclave::markers::Record::SnapshotBegin { .. }
    ));
    let stats = std::process::Command::new(frostgate_tests::host_bin())
        .args(["store", "stats", "--json", "--db"])
        .arg(&node.db)
        .output()
        .expect("stats");
    let stats: serde_json::Value = serde_json::from_slice(&stats.stdout).expect("json");
    let rows = versions(&node.db);
    assert_eq!(stats["records"], rows.len() as u64);
    assert_eq!(stats["first_version"], rows[0] as u64);
    node.kill();
    node.start();
    rt.block_on(async {
        let c = node.caller().await;
        assert_eq!(health(&c).await.state, ServiceState::Ready, "{}", node.logs());
        // The expired session is gone for good; the key survived the snapshot and signs.
        assert_eq!(code(open_attempt(&c, old.session, &[pid(1), pid(2)]).await), ErrorCode::UnknownSession);
        sign_fully(&c, &key, &[pid(1), pid(3)]).await;
    });
    assert!(node.verify(&node.db).is_ok());
}

#[test]
fn a_store_load_sent_right_after_connecting_always_finds_its_connection() {
    // Regression: the first request on a fresh connection raced the recording of the
    // connection's own channel ("connection without a channel").
    let mut node = Node::new();
    node.start_enclave();
    let enclave = node.tokens.path().join("enclave.sock");
    rt().block_on(async {
        let store = std::sync::Arc::new(frostgate_host::node::store::HostStore::open(&node.db).expect("db"));
        for i in 0..50 {
            let client = frostgate_host::node::enclave::EnclaveClient::connect_with_store(
                frostgate_common::transport::Address::Unix(enclave.clone()),
                Some(store.clone()),
            )
            .await
            .expect("connect");
            let status = client.load_store(&store, false).await.unwrap_or_else(|e| panic!("load {i}: {e}"));
            assert_eq!(status.state, ServiceState::Ready);
        }
    });
}

/// The anchor can be deleted (from outside, with the PIN) or replaced by a forged object: either
/// way the enclave refuses the store with a typed code, and signing never resumes on a store that
/// could be a rollback. Putting the genuine anchor back makes the node serve again. The anchor is
/// its slots: private data objects whose application is `frostgate-store-anchor` and whose label
/// holds the head (what `pkcs11-tool` shows an auditor).
#[test]
fn a_deleted_or_forged_anchor_fails_closed() {
    let mut node = Node::new();
    node.start();
    let older = node.tokens.path().join("older.db");
    rt().block_on(async {
        let c = node.caller().await;
        let key = dealer(&c, 2, 3).await;
        snapshot_db(&node.db, &older);
        sign_fully(&c, &key, &[pid(1), pid(2)]).await;
    });
    node.kill();
    let application = "frostgate-store-anchor";
    let list =
        |node: &Node| String::from_utf8_lossy(&node.token.pkcs11_tool(&["-O", "--type", "data"]).stdout).into_owned();
    // The labels of the objects whose application is the anchor's (the slots).
    let slots = |node: &Node| -> Vec<String> {
        let listing = list(node);
        let mut label = String::new();
        let mut out = Vec::new();
        for line in listing.lines().map(str::trim) {
            if let Some(l) = line.strip_prefix("label:") {
                label = l.trim().trim_matches('\'').to_string();
            } else if line.strip_prefix("application:").map(|a| a.trim().trim_matches('\'')) == Some(application) {
                out.push(label.clone());
            }
        }
        out
    };
    // Keep the genuine slots' labels to restore them later.
    let genuine = slots(&node);
    assert_eq!(genuine.len(), 2, "two slots after signing:\n{}", list(&node));
    for l in &genuine {
        let value = l.strip_prefix("anchor/v1/paired:").or_else(|| l.strip_prefix("anchor/v1:"));
        assert_eq!(value.map(str::len), Some(144), "version | mac | tag: {l}");
    }
    let delete_all = |node: &Node| {
        for _ in 0..4 {
            if slots(node).is_empty() {
                return;
            }
            let o = node.token.pkcs11_tool(&["--delete-object", "--type", "data", "--application-label", application]);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        }
        assert!(slots(node).is_empty(), "slots left:\n{}", list(node));
    };
    let any = node.tokens.path().join("slot.bin");
    std::fs::write(&any, b"slot").expect("file");
    let write = |node: &Node, label: &str, private: bool| {
        let mut args = vec![
            "--write-object",
            any.to_str().expect("utf8"),
            "--type",
            "data",
            "--label",
            label,
            "--application-label",
            application,
        ];
        if private {
            args.push("--private");
        }
        let o = node.token.pkcs11_tool(&args);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    };

    let expect_refused = |node: &mut Node, name: &str, db: &Path, expected: ErrorCode| {
        restore_db(db, &node.db);
        expect_refused(node, name, expected);
    };
    let pristine = node.tokens.path().join("pristine.db");
    snapshot_db(&node.db, &pristine);

    // 1. The newest slot deleted and the store rolled back by exactly that commit: refused, though
    //    the partner holds a genuine head (an anchor missing its newest slot is adopted only by a
    //    store ahead of the partner, the one case a crash leaves). The current store is adopted.
    let version_of = |label: &str| -> i64 {
        let value = hex::decode(label.rsplit(':').next().expect("hex")).expect("hex");
        i64::from_be_bytes(value[..8].try_into().expect("8 bytes"))
    };
    let (newest, partner) = if version_of(&genuine[0]) > version_of(&genuine[1]) { (0, 1) } else { (1, 0) };
    assert!(versions(&pristine).last().copied() >= Some(version_of(&genuine[newest])));
    let o = node.token.pkcs11_tool(&["--delete-object", "--type", "data", "--label", &genuine[newest]]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(slots(&node), vec![genuine[partner].clone()]);
    let behind = node.tokens.path().join("behind.db");
    snapshot_db(&pristine, &behind);
    rusqlite::Connection::open(&behind)
        .expect("open")
        .execute("DELETE FROM records WHERE version > ?1", [version_of(&genuine[partner])])
        .expect("truncate");
    expect_refused(&mut node, "newest slot deleted, store one commit behind", &behind, ErrorCode::StoreAnchorInvalid);
    // (A store cut inside the newest commit is refused too: `store_load.rs`.)
    restore_db(&pristine, &node.db);
    node.start();
    rt().block_on(async {
        let c = node.caller().await;
        assert_eq!(health(&c).await.state, ServiceState::Ready, "the current store extends the partner");
    });
    node.kill();
    write(&node, &genuine[newest], true);

    // 2. Deleted with pkcs11-tool: neither the current store nor an older copy is adopted.
    delete_all(&node);
    expect_refused(&mut node, "anchor deleted, current store", &pristine, ErrorCode::StoreAnchorMissing);
    expect_refused(&mut node, "anchor deleted, older store", &older, ErrorCode::StoreAnchorMissing);

    // 3. Forged: a private slot with the older store's head and a tag that was not made with this
    //    token's store key.
    let conn = rusqlite::Connection::open(&older).expect("open");
    let (version, mac): (i64, Vec<u8>) = conn
        .query_row("SELECT version, mac FROM records ORDER BY version DESC LIMIT 1", [], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("older head");
    let mut forged = (version as u64).to_be_bytes().to_vec();
    forged.extend_from_slice(&mac);
    forged.extend_from_slice(&[0x5a; 32]);
    write(&node, &format!("anchor/v1/paired:{}", hex::encode(&forged)), true);
    expect_refused(&mut node, "forged anchor, older store", &older, ErrorCode::StoreAnchorInvalid);
    delete_all(&node);
    // 4. The genuine head copied into a public object: refused (the enclave's slots are private).
    write(&node, &genuine[0], false);
    expect_refused(&mut node, "public copy of the anchor", &pristine, ErrorCode::StoreAnchorInvalid);
    delete_all(&node);

    // 5. The genuine slots restored by the operator: the genuine store boots and signs again.
    for l in &genuine {
        write(&node, l, true);
    }
    restore_db(&pristine, &node.db);
    node.start();
    rt().block_on(async {
        let c = node.caller().await;
        assert_eq!(health(&c).await.state, ServiceState::Ready);
        let key = c.request(KeyRef { key: key_of(&node).await }).await.expect("key");
        sign_fully(&c, &key, &[pid(1), pid(3)]).await;
    });
}

/// A session and attempt whose background binding commits fail still never release a share
/// before the bindings are durable: they are committed with the consumed marker. After a kill -9
/// the attempt is known (its marker refuses a second share) instead of unknown.
#[test]
fn a_share_never_leaves_before_its_bindings_are_durable() {
    let mut node = Node::new();
    node.start();
    let rt = rt();
    let enclave_log = node.tokens.path().join("enclave.log");
    let (key, attempt, pkg) = rt.block_on(async {
        let c = node.caller().await;
        let key = dealer(&c, 2, 3).await;
        node.arm("host_before_commit");
        let message = random::<32>();
        let (session, _) = open_session(&c, key.key, message, TaprootMode::Bip86).await.expect("session");
        // A refused background commit makes the enclave wait for the host's store (reloaded when
        // a request fails with store_not_loaded): requests meanwhile are retried.
        let signers = [pid(1), pid(2)];
        let attempt = retry_not_loaded(|| open_attempt(&c, session, &signers)).await.expect("attempt");
        // Both background commits were refused by the host.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while std::fs::read_to_string(&enclave_log).unwrap_or_default().matches("binding not committed").count() < 2 {
            assert!(std::time::Instant::now() < deadline, "{}", node.logs());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        node.disarm();
        let mut commitments = BTreeMap::new();
        for s in [pid(1), pid(2)] {
            commitments.insert(s, retry_not_loaded(|| round1(&c, attempt, s)).await.expect("round 1"));
        }
        let pkg = package(&commitments, &message);
        retry_not_loaded(|| round2(&c, attempt, pid(1), TaprootMode::Bip86, &pkg)).await.expect("share");
        (key, attempt, pkg)
    });
    node.kill();
    node.start();
    rt.block_on(async {
        let c = node.caller().await;
        assert_eq!(
            code(round2(&c, attempt, pid(1), TaprootMode::Bip86, &pkg).await),
            ErrorCode::NonceAlreadyConsumed,
            "the attempt and its marker were durable before the share left"
        );
        sign_fully(&c, &key, &[pid(1), pid(2)]).await;
    });
}

/// `call` again while it fails with `store_not_loaded` (the host is streaming its store), up to 10 s.
async fn retry_not_loaded<T, F, Fut>(mut call: F) -> Result<T, frostgate_common::Error>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, frostgate_common::Error>>,
{
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match call().await {
            Err(e) if e.code() == ErrorCode::StoreNotLoaded && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            other => return other,
        }
    }
}

/// ROAST aborts every failed attempt. Aborted attempts leave no markers behind: after thousands
/// of aborted attempts (each with a consumed nonce) a snapshot holds the key and the session only,
/// and the store stays bounded. An aborted attempt's consumed seat still never signs again.
#[test]
fn aborted_attempts_leave_no_markers_and_snapshots_stay_bounded() {
    const ABORTED: usize = 1000;
    let mut node = Node::new();
    node.enclave_args = ["--sweep-interval-secs", "1", "--compact-after-records", "500"].map(String::from).to_vec();
    node.start();
    let rt = rt();
    rt.block_on(async {
        let c = node.caller().await;
        let key = dealer(&c, 2, 3).await;
        let message = random::<32>();
        let (session, _) = open_session(&c, key.key, message, TaprootMode::Bip86).await.expect("session");
        for i in 0..ABORTED {
            let attempt = open_attempt(&c, session, &[pid(1), pid(2)]).await.expect("attempt");
            let mut commitments = BTreeMap::new();
            for s in [pid(1), pid(2)] {
                commitments.insert(s, round1(&c, attempt, s).await.expect("round 1"));
            }
            let pkg = package(&commitments, &message);
            round2(&c, attempt, pid(1), TaprootMode::Bip86, &pkg).await.expect("share");
            c.request(AttemptRef { attempt }).await.expect("abort");
            if i == 0 {
                // The consumed seat of an aborted attempt: no share, whatever comes next.
                assert_eq!(
                    code(round2(&c, attempt, pid(1), TaprootMode::Bip86, &pkg).await),
                    ErrorCode::UnknownAttempt
                );
            }
        }
    });
    // 1 key + 1 session + 1000 x (attempt, marker) records: compaction must have run, and its
    // snapshot holds no marker of an aborted attempt.
    let rows = wait_for("compaction", &node, |v| v.first().is_some_and(|f| *f > 1));
    let conn = rusqlite::Connection::open(&node.db).expect("open");
    let mut stmt = conn.prepare("SELECT body FROM records ORDER BY version").expect("prepare");
    let bodies: Vec<Vec<u8>> = stmt.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect();
    use frostgate_enclave::markers::Record;
    let records: Vec<Record> = bodies.iter().map(|b| postcard::from_bytes(b).expect("record")).collect();
    let end = records.iter().position(|r| matches!(r, Record::SnapshotEnd { .. })).expect("a complete snapshot");
    let snapshot = &records[..=end];
    assert!(matches!(snapshot[0], Record::SnapshotBegin { .. }));
    let markers = snapshot.iter().filter(|r| matches!(r, Record::NonceConsumed { .. })).count();
    let attempts = snapshot.iter().filter(|r| matches!(r, Record::AttemptBound { .. })).count();
    // At most the one attempt in flight when the snapshot was taken (before the fix: every
    // aborted attempt's marker, hundreds).
    assert!(
        markers <= 1 && attempts <= 1,
        "the snapshot carries aborted attempts: {markers} markers, {attempts} attempts"
    );
    assert!(snapshot.len() <= 6, "begin, key, session, [attempt, marker,] end: {} records", snapshot.len());
    assert!(rows.len() < 2 * ABORTED, "{} records kept", rows.len());
    // The compacted store boots.
    node.kill();
    node.start();
    rt.block_on(async {
        let c = node.caller().await;
        assert_eq!(health(&c).await.state, ServiceState::Ready, "{}", node.logs());
    });
}

/// `frostgate store verify` (a verify-only load) in the middle of a host's load has a loader of
/// its own: the host's load completes and is adopted, and the verification reports the store.
#[test]
fn a_verify_only_load_during_a_load_does_not_disturb_it() {
    use frostgate_common::protocol::StoreRecords;
    use frostgate_common::transport::Address;
    use frostgate_host::node::enclave::EnclaveClient;
    let mut node = Node::new();
    node.start();
    let rt = rt();
    rt.block_on(async {
        let c = node.caller().await;
        let key = dealer(&c, 2, 3).await;
        sign_fully(&c, &key, &[pid(1), pid(2)]).await;
    });
    node.kill();
    let records = frostgate_host::node::store::HostStore::open(&node.db).expect("db").records().expect("records");
    assert!(records.len() >= 3, "{}", records.len());
    node.start_enclave();
    rt.block_on(async {
        let address = Address::Unix(node.tokens.path().join("enclave.sock"));
        let host = EnclaveClient::connect(address.clone()).await.expect("host connection");
        let verifier = EnclaveClient::connect(address).await.expect("verifier connection");
        let load = |first, last, verify_only, rs: &[frostgate_common::protocol::StoreRecord]| {
            Message::StoreLoad(StoreLoad {
                first,
                last,
                verify_only,
                records: StoreRecords::new(rs.to_vec()).expect("bounded"),
            })
        };
        // The host's load: first chunk.
        host.channel().call(load(true, false, false, &records[..1]), None).await.expect("first chunk");
        // A whole verify-only load on another connection, in between.
        match verifier.channel().call(load(true, true, true, &records), None).await.expect("verify") {
            Message::StoreStatus(s) => assert_eq!(s.head_version, records.last().expect("last").version),
            other => panic!("{other:?}"),
        }
        // The host's load goes on where it was and is adopted.
        match host.channel().call(load(false, true, false, &records[1..]), None).await.expect("last chunk") {
            Message::StoreStatus(s) => {
                assert_eq!(s.state, ServiceState::Ready);
                assert_eq!(s.records, records.len() as u64);
            }
            other => panic!("{other:?}"),
        }
    });
}
