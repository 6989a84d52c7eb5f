//! The enclave's store when loads race commits (found by the chaos soak, seed 20261202, cycle
//! ~175, and by the commit protocol's model, `scripts/model/`): a host re-streamed its store
//! while the enclave, live again, committed and anchored a new record; the stream ended behind
//! the new anchor and was judged a rollback, and the node refused everything for good. Now a
//! load while the store is live is neither judged nor adopted, the host holds its commits while
//! it streams, a load that completes after another is not adopted, and a commit the host refuses
//! makes the enclave wait for a reload instead of refusing every later commit.

use frostgate_common::channel::{refuse_all, Channel, Handler};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{AttemptId, ParticipantId};
use frostgate_common::protocol::StoreRecords;
use frostgate_common::protocol::{Message, PersistAck, Side, StoreLoad, StoreRecord};
use frostgate_enclave::markers::{MarkerStore, PersistError, Record};
use frostgate_enclave::store::ChainedStore;
use frostgate_host::node::store::HostStore;
use frostgate_tests::token::TokenDir;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// A host committing into a real `HostStore`; refuses one commit when `refuse` is set.
fn host(db: Arc<HostStore>, refuse: Arc<AtomicBool>) -> Handler {
    Arc::new(move |m: Message| {
        let (db, refuse) = (db.clone(), refuse.clone());
        Box::pin(async move {
            let Message::PersistRecords(p) = m else {
                return Message::error(ErrorCode::UnexpectedMessage, "not served");
            };
            if refuse.swap(false, Ordering::SeqCst) {
                return Message::error(ErrorCode::StoreCommitFailed, "refused (test)");
            }
            match tokio::task::spawn_blocking(move || db.append(p.records.as_inner(), p.compact_before)).await {
                Ok(Ok(head_version)) => Message::PersistAck(PersistAck { head_version }),
                Ok(Err(e)) => Message::Error(e),
                Err(e) => Message::error(ErrorCode::Internal, e.to_string()),
            }
        })
    })
}

fn load(records: Vec<StoreRecord>, first: bool, last: bool) -> StoreLoad {
    StoreLoad { first, last, verify_only: false, records: StoreRecords::new(records).expect("bound") }
}

fn record(n: u8) -> Record {
    Record::NonceConsumed { attempt: AttemptId::from_bytes([n; 16]), seat: ParticipantId::new(1).expect("id") }
}

fn code(e: PersistError) -> ErrorCode {
    match e {
        PersistError::NotWritten(e) | PersistError::Unknown(e) => e.code(),
    }
}

struct Fixture {
    store: ChainedStore,
    db: Arc<HostStore>,
    refuse: Arc<AtomicBool>,
    channel: Channel,
    custody: Arc<frostgate_enclave::custody::Custody>,
    _host: Channel,
    _dir: tempfile::TempDir,
}

/// One token directory per process, a token per test, all created before the PKCS#11 module
/// is first loaded (it sees only the tokens present then).
fn token(label: &str) -> Arc<frostgate_enclave::custody::Custody> {
    type Tokens = (TokenDir, Vec<frostgate_tests::token::TestToken>);
    static TOKENS: std::sync::Mutex<Option<Tokens>> = std::sync::Mutex::new(None);
    let mut tokens = TOKENS.lock().unwrap_or_else(|p| p.into_inner());
    let (_, all) = tokens.get_or_insert_with(|| {
        let dir = TokenDir::new();
        let all: Vec<_> = (1..=6).map(|i| dir.add_token(&format!("race{i}"))).collect();
        all[0].export_env();
        (dir, all)
    });
    let token = all.iter().find(|t| t.label == label).expect("a token of this label");
    Arc::new(token.open_custody())
}

impl Fixture {
    fn new(label: &str) -> Fixture {
        let custody = token(label);
        let store = ChainedStore::open(custody.clone(), 10_000).expect("open");
        let tmp = tempfile::tempdir().expect("dir");
        let db = Arc::new(HostStore::open(&tmp.path().join("host.db")).expect("db"));
        let refuse = Arc::new(AtomicBool::new(false));
        let (enclave_end, host_end) = tokio::io::duplex(1 << 20);
        let (er, ew) = tokio::io::split(enclave_end);
        let (hr, hw) = tokio::io::split(host_end);
        let (channel, _) = Channel::start(Side::Enclave, Box::new(er), Box::new(ew), refuse_all());
        let (host, _) = Channel::start(Side::Host, Box::new(hr), Box::new(hw), host(db.clone(), refuse.clone()));
        Fixture { store, db, refuse, channel, custody, _host: host, _dir: tmp }
    }

    fn rows(&self) -> Vec<StoreRecord> {
        self.db.records().expect("rows")
    }

    /// A whole load of what the host has now (not adopted); "load again" (a commit still winding
    /// down) is retried, as the host does.
    async fn load_all(&self) -> Result<frostgate_enclave::store::Loaded, Error> {
        for _ in 0..100 {
            match self.store.load_chunk(&load(self.rows(), true, true)) {
                Err(e) if e.code() == ErrorCode::StoreNotLoaded => {
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await
                }
                Err(e) => return Err(e),
                Ok(p) => return Ok(p.done.expect("done")),
            }
        }
        Err(Error::new(ErrorCode::StoreNotLoaded, "still loading after 1 s"))
    }

    /// [`Self::load_all`], adopted.
    async fn reload(&self) -> Result<u64, Error> {
        let loaded = self.load_all().await?;
        self.store.adopt(self.channel.clone(), &loaded);
        Ok(loaded.head.version)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_read_before_a_commit_is_never_judged_a_rollback() {
    let f = Fixture::new("race1");
    assert_eq!(f.reload().await.expect("boot"), 0);
    f.store.persist(vec![record(1)]).await.expect("commit 1");

    // A reload the host queued reads the store (record 1) ...
    let stale = f.rows();
    // ... the live store commits and anchors record 2 ...
    f.store.persist(vec![record(2)]).await.expect("commit 2");
    // ... and the stream arrives, in one chunk or in several: live, so no verdict, no adoption.
    let one = f.store.load_chunk(&load(stale.clone(), true, true)).expect("a stale one-chunk stream is ignored");
    assert!(one.done.is_none());
    f.store.load_chunk(&load(stale.clone(), true, false)).expect("first chunk ignored");
    f.store.persist(vec![record(3)]).await.expect("commit 3 between the chunks");
    assert!(f.store.load_chunk(&load(vec![], false, true)).expect("last chunk ignored").done.is_none());
    // The store stayed live on its head.
    f.store.persist(vec![record(4)]).await.expect("commit 4");
    assert_eq!(f.rows().len(), 4);

    // From a fresh process (not live), the old copy is what it is: a rollback.
    let fresh = ChainedStore::open(f.custody.clone(), 10_000).expect("open");
    let e = fresh.load_chunk(&load(stale, true, true)).expect_err("rolled back");
    assert_eq!(e.code(), ErrorCode::StoreRollbackDetected, "{e}");
    // And the current copy loads.
    let loaded = fresh.load_chunk(&load(f.rows(), true, true)).expect("current").done.expect("done");
    assert_eq!(loaded.head.version, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_host_refuses_makes_the_store_wait_for_a_reload() {
    let f = Fixture::new("race2");
    f.reload().await.expect("boot");
    f.store.persist(vec![record(1)]).await.expect("commit 1");
    f.refuse.store(true, Ordering::SeqCst);
    let e = f.store.persist(vec![record(2)]).await.expect_err("refused");
    assert!(matches!(e, PersistError::NotWritten(_)));
    // Not "keep committing on a head the host may not have": wait for the host's store.
    let e = f.store.persist(vec![record(3)]).await.expect_err("not loaded");
    assert_eq!(code(e), ErrorCode::StoreNotLoaded);
    assert_eq!(f.reload().await.expect("reload"), 1);
    f.store.persist(vec![record(4)]).await.expect("live again");
    assert_eq!(f.rows().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_latest_completed_load_is_adopted() {
    let f = Fixture::new("race3");
    f.reload().await.expect("boot");
    f.store.persist(vec![record(1)]).await.expect("commit 1");
    f.refuse.store(true, Ordering::SeqCst);
    let _ = f.store.persist(vec![record(2)]).await.expect_err("refused: not loaded now");
    // Two loads complete before either is adopted (two reloads on one connection).
    let first = f.load_all().await.expect("load 1");
    let second = f.load_all().await.expect("load 2");
    f.store.adopt(f.channel.clone(), &first);
    let e = f.store.persist(vec![record(3)]).await.expect_err("the superseded load was not adopted");
    assert_eq!(code(e), ErrorCode::StoreNotLoaded);
    f.store.adopt(f.channel.clone(), &second);
    f.store.persist(vec![record(4)]).await.expect("the latest load is live");
    // A late adoption of the older load changes nothing (it would fork the chain).
    f.store.adopt(f.channel.clone(), &first);
    f.store.persist(vec![record(5)]).await.expect("still chaining from the live head");
    assert_eq!(f.rows().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_holds_commits_while_it_streams() {
    let f = Fixture::new("race4");
    f.reload().await.expect("boot");
    let held = f.db.hold_commits().await;
    let store = f.store.clone();
    let commit = tokio::spawn(async move { store.persist(vec![record(1)]).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!commit.is_finished(), "a commit landed while the store was being streamed");
    assert!(f.rows().is_empty());
    drop(held);
    commit.await.expect("task").expect("the commit lands once the stream is done");
    assert_eq!(f.rows().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_on_a_connection_that_ended_is_not_adopted() {
    let f = Fixture::new("race5");
    // A second connection whose host goes away before its load is adopted.
    let (enclave_end, host_end) = tokio::io::duplex(1 << 16);
    let (er, ew) = tokio::io::split(enclave_end);
    let (gone, done) = Channel::start(Side::Enclave, Box::new(er), Box::new(ew), refuse_all());
    let loaded = f.store.load_chunk(&load(f.rows(), true, true)).expect("load").done.expect("done");
    drop(host_end);
    done.await.expect("the connection ended");
    f.store.adopt(gone, &loaded);
    let e = f.store.persist(vec![record(1)]).await.expect_err("not live on a dead connection");
    assert_eq!(code(e), ErrorCode::StoreNotLoaded);
    // The next connection's load goes live.
    f.reload().await.expect("reload");
    f.store.persist(vec![record(2)]).await.expect("live");
}

/// The newest anchor slot deleted (with the PIN): a fresh process adopts the current store, but
/// not one rolled back by that commit, nor one cut inside it (a commit's last record is MACed as
/// its end), though both extend the partner slot's head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_its_newest_slot_the_anchor_adopts_only_whole_commits() {
    use frostgate_enclave::store::anchor;
    use frostgate_enclave::store::chain::{Head, StoreKey};
    let f = Fixture::new("race6");
    f.reload().await.expect("boot");
    f.store.persist(vec![record(1)]).await.expect("commit 1");
    f.store.persist(vec![record(2), record(3), record(4)]).await.expect("commit 2: three records");
    let rows = f.rows();
    assert_eq!(rows.len(), 4);
    let key = StoreKey::new(f.custody.derive_store_key().expect("key"));
    let newest = anchor::slot_label(&key, Head { version: 4, mac: rows[3].mac }, true);
    f.custody
        .token()
        .with_session(|s| {
            let app = cryptoki::object::Attribute::Application(anchor::label(&f.custody).into_bytes());
            for h in s.find_objects(&[app]).expect("find") {
                let attrs = s.get_attributes(h, &[cryptoki::object::AttributeType::Label]).expect("label");
                if attrs.contains(&cryptoki::object::Attribute::Label(newest.clone())) {
                    s.destroy_object(h).expect("destroy");
                    return Ok(());
                }
            }
            panic!("no slot holds head 4");
        })
        .expect("session");
    let fresh = || ChainedStore::open(f.custody.clone(), 10_000).expect("open");
    for cut in 1..4 {
        let e = fresh().load_chunk(&load(rows[..cut].to_vec(), true, true)).expect_err("behind the deleted slot");
        assert_eq!(e.code(), ErrorCode::StoreAnchorInvalid, "store cut after record {cut}: {e}");
    }
    let loaded = fresh().load_chunk(&load(rows, true, true)).expect("the whole store").done.expect("done");
    assert_eq!(loaded.head.version, 4);
    // Adopting it finished the anchor: complete again, at 4.
    let a = anchor::read(&f.custody, &key).expect("anchor");
    assert_eq!((a.head.version, a.complete), (4, true));
}
