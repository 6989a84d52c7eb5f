//! The host store's file as found on disk: a damaged file is refused with `store_damaged`
//! (recovery class `operator`) and left byte for byte as it was, write-ahead log included; the
//! inspection commands never create or convert a file.

use frostgate_common::bounded::RecordBody;
use frostgate_common::error::{ErrorCode, RecoveryClass};
use frostgate_common::protocol::StoreRecord;
use frostgate_host::node::store::HostStore;
use std::path::{Path, PathBuf};

fn record(version: u64, prev: [u8; 32]) -> StoreRecord {
    let mut mac = [0u8; 32];
    mac[..8].copy_from_slice(&version.to_be_bytes());
    StoreRecord { version, prev_mac: prev, body: RecordBody::new(vec![7u8; 300]).expect("bounded"), mac }
}

/// A store with a compaction behind it (main file written) and 40 records since, which live only
/// in the write-ahead log (no checkpoint on close).
fn store_with_wal(dir: &Path) -> PathBuf {
    let db = dir.join("host.db");
    let store = HostStore::open(&db).expect("open");
    let mut prev = [0u8; 32];
    for v in 1..=60u64 {
        let r = record(v, prev);
        prev = r.mac;
        store.append(&[r], (v == 20).then_some(1)).expect("append");
    }
    drop(store);
    let wal = wal_of(&db);
    assert!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) > 0, "records since the checkpoint are in the WAL");
    db
}

fn wal_of(db: &Path) -> PathBuf {
    PathBuf::from(format!("{}-wal", db.display()))
}

/// Both files' bytes (None: absent).
fn snapshot(db: &Path) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    (std::fs::read(db).ok(), std::fs::read(wal_of(db)).ok())
}

fn assert_damaged_and_untouched(db: &Path) {
    let before = snapshot(db);
    let e = HostStore::open(db).expect_err("a damaged store must not open");
    assert_eq!(e.code(), ErrorCode::StoreDamaged, "{e}");
    assert_eq!(e.recovery_class(), RecoveryClass::Operator, "{e}");
    assert!(snapshot(db) == before, "the damaged store and its WAL must be left as found");
    let e = HostStore::open_existing(db).expect_err("nor open for inspection");
    assert_eq!(e.code(), ErrorCode::StoreDamaged, "{e}");
    assert!(snapshot(db) == before, "inspection must leave it as found");
}

#[test]
fn an_intact_store_reopens_with_every_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = store_with_wal(dir.path());
    let store = HostStore::open(&db).expect("reopen");
    let stats = store.stats().expect("stats");
    assert_eq!((stats.first_version, stats.head_version), (1, 60));
    assert_eq!(store.records().expect("records").len(), 60);
}

#[test]
fn a_store_cut_short_is_refused_and_left_as_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = store_with_wal(dir.path());
    let bytes = std::fs::read(&db).expect("read");
    // Mid-page, and at a page boundary with the root pages gone.
    for cut in [bytes.len() / 2 + 100, 4096, 50] {
        std::fs::write(&db, &bytes[..cut.min(bytes.len() - 1)]).expect("truncate");
        assert_damaged_and_untouched(&db);
    }
}

#[test]
fn a_garbage_store_is_refused_and_left_as_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = store_with_wal(dir.path());
    let len = std::fs::metadata(&db).expect("meta").len() as usize;
    let garbage: Vec<u8> = (0..len).map(|i| (i * 131 % 251) as u8).collect();
    std::fs::write(&db, &garbage).expect("garbage");
    assert_damaged_and_untouched(&db);
    // A valid header over garbage pages.
    let dir = tempfile::tempdir().expect("tempdir");
    let db = store_with_wal(dir.path());
    let mut bytes = std::fs::read(&db).expect("read");
    for b in bytes.iter_mut().skip(100) {
        *b ^= 0x5a;
    }
    std::fs::write(&db, &bytes).expect("corrupt");
    assert_damaged_and_untouched(&db);
}

fn frostgate(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_frostgate")).args(args).output().expect("run frostgate")
}

#[test]
fn store_stats_never_creates_or_converts_a_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("missing.db");
    let out = frostgate(&["store", "stats", "--db", missing.to_str().expect("utf-8")]);
    assert!(!out.status.success(), "stats of a missing store must fail");
    assert!(!missing.exists(), "stats must not create a store");

    let empty = dir.path().join("empty.db");
    std::fs::write(&empty, b"").expect("empty");
    let out = frostgate(&["store", "stats", "--db", empty.to_str().expect("utf-8")]);
    assert!(!out.status.success(), "stats of an empty file must fail");
    assert!(String::from_utf8_lossy(&out.stderr).contains("store_damaged"), "{out:?}");
    assert_eq!(std::fs::metadata(&empty).expect("meta").len(), 0, "stats must not convert the file");
    assert!(!wal_of(&empty).exists());

    let db = store_with_wal(dir.path());
    let before = snapshot(&db);
    let out = frostgate(&["store", "stats", "--db", db.to_str().expect("utf-8"), "--json"]);
    assert!(out.status.success(), "{out:?}");
    let stats: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(stats["head_version"], 60, "{stats}");
    assert!(snapshot(&db) == before, "stats must not write");

    std::fs::write(&db, b"not a database at all, just text").expect("garbage");
    let before = snapshot(&db);
    let out = frostgate(&["store", "stats", "--db", db.to_str().expect("utf-8")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("store_damaged") && stderr.contains("operator"), "{stderr}");
    assert_eq!(out.status.code(), Some(3), "operator errors exit 3: {stderr}");
    assert!(snapshot(&db) == before);
}
