//! The enclave's store under a reload that races a commit (found by the chaos soak, seed
//! 20261202, cycle ~175): a host re-streamed its store while the enclave, already live again,
//! committed and anchored a new record. The stream ended one record behind the new anchor and
//! the enclave called it a rollback; the node then refused everything, for good. A load during
//! which the anchor moved is now "load again", never a verdict.

use frostgate_common::bounded::StoreRecords;
use frostgate_common::channel::{refuse_all, Channel, Handler};
use frostgate_common::error::ErrorCode;
use frostgate_common::ids::{AttemptId, ParticipantId};
use frostgate_common::protocol::{Message, PersistAck, Side, StoreLoad, StoreRecord};
use frostgate_enclave::markers::{MarkerStore, Record};
use frostgate_enclave::store::ChainedStore;
use frostgate_tests::token::TokenDir;
use std::sync::{Arc, Mutex};

/// A host that keeps acknowledged records in memory.
fn host(rows: Arc<Mutex<Vec<StoreRecord>>>) -> Handler {
    Arc::new(move |m: Message| {
        let rows = rows.clone();
        Box::pin(async move {
            match m {
                Message::PersistRecords(p) => {
                    let mut rows = rows.lock().expect("rows");
                    rows.extend(p.records.as_inner().iter().cloned());
                    let head_version = rows.last().map_or(0, |r| r.version);
                    Message::PersistAck(PersistAck { head_version })
                }
                other => Message::error(ErrorCode::UnexpectedMessage, format!("{} not served", other.info().name)),
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

#[tokio::test]
async fn a_load_that_races_a_commit_is_retried_not_judged_a_rollback() {
    let dir = TokenDir::new();
    let token = dir.add_token("race");
    token.export_env();
    let custody = Arc::new(token.open_custody());
    let store = ChainedStore::open(custody, 10_000).expect("open");
    let rows = Arc::new(Mutex::new(Vec::new()));
    let (enclave_end, host_end) = tokio::io::duplex(1 << 20);
    let (er, ew) = tokio::io::split(enclave_end);
    let (hr, hw) = tokio::io::split(host_end);
    let (channel, _) = Channel::start(Side::Enclave, Box::new(er), Box::new(ew), refuse_all());
    let _host = Channel::start(Side::Host, Box::new(hr), Box::new(hw), host(rows.clone()));

    // Boot: the empty store loads and goes live.
    let loaded = store.load_chunk(&load(vec![], true, true)).expect("boot load").done.expect("done");
    store.adopt(channel.clone(), loaded.head);
    store.persist(vec![record(1)]).await.expect("commit 1");

    // The host starts re-streaming what it has (record 1) ...
    let stale = rows.lock().expect("rows").clone();
    store.load_chunk(&load(stale.clone(), true, false)).expect("first chunk");
    // ... while the live store commits and anchors record 2 ...
    store.persist(vec![record(2)]).await.expect("commit 2");
    // ... and the stream ends at record 1, behind the new anchor: load again, not a rollback.
    let e = store.load_chunk(&load(vec![], false, true)).expect_err("a stale stream is not adopted");
    assert_eq!(e.code(), ErrorCode::StoreNotLoaded, "{e}");

    // The store stays live and a fresh stream loads.
    store.persist(vec![record(3)]).await.expect("commit 3 after the refused stream");
    let all = rows.lock().expect("rows").clone();
    assert_eq!(all.len(), 3);
    let again = store.load_chunk(&load(all, true, true)).expect("a current stream loads").done.expect("done");
    assert_eq!(again.head.version, 3);
    assert_eq!(again.records.len(), 3);

    // A real rollback is still one: the stream ends behind an anchor that did not move.
    let old = stale;
    let e = store.load_chunk(&load(old, true, true)).expect_err("rolled back");
    assert_eq!(e.code(), ErrorCode::StoreRollbackDetected, "{e}");
}
