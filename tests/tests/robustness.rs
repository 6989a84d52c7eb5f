//! Fail closed on any input: arbitrary decodable messages of every kind, sent to the enclave's
//! request handler (real SoftHSM custody, a dev-dealer key, live sessions), never panic and are
//! always answered with a reply kind or a typed error.

use frostgate_common::protocol::*;
use frostgate_enclave::markers::MemoryStore;
use frostgate_enclave::rounds::{Engine, Limits};
use frostgate_enclave::service::Service;
use frostgate_tests::signing::*;
use frostgate_tests::token::TokenDir;
use proptest::prelude::any;
use std::sync::{Arc, OnceLock};

struct Fixture {
    service: Arc<Service>,
    rt: tokio::runtime::Runtime,
    _dir: TokenDir,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = TokenDir::new();
        let token = dir.add_token("fuzz");
        token.export_env();
        let custody = Arc::new(token.open_custody());
        let service =
            Arc::new(Service::from_engine(Some(Engine::new(custody, Arc::new(MemoryStore::new()), Limits::default()))));
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("rt");
        // Some live state, so random requests also hit real keys, sessions and nonces.
        rt.block_on(async {
            let c = Caller::Service(service.clone());
            let key = dealer(&c, 2, 3).await;
            prepare(&c, key.key, &[pid(1), pid(2)], TaprootMode::Bip86).await;
        });
        Fixture { service, rt, _dir: dir }
    })
}

#[test]
fn any_decodable_message_gets_a_reply_or_a_typed_error() {
    use proptest::strategy::{Strategy, ValueTree};
    let f = fixture();
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = (0u8..(KINDS.len() as u8), proptest::collection::vec(any::<u8>(), 0..200));
    let mut decoded = 0;
    let mut kinds = std::collections::BTreeSet::new();
    for _ in 0..4_000 {
        let (kind, body) = strategy.new_tree(&mut runner).expect("value").current();
        let mut bytes = vec![kind];
        bytes.extend(body);
        let Ok(message) = postcard::from_bytes::<Message>(&bytes) else { continue };
        decoded += 1;
        kinds.insert(message.kind());
        let name = message.info().name;
        let reply = f.rt.block_on(f.service.handle(message));
        assert_eq!(reply.info().role, Role::Reply, "{name}: {reply:?}");
        if let Message::Error(e) = &reply {
            assert!(frostgate_common::ErrorCode::from_code(e.code().code()).is_some());
        }
    }
    // Not vacuous: many messages decoded, across most kinds (the rest need structure random
    // bytes rarely have, and are covered by the typed tests).
    assert!(decoded > 400, "only {decoded} random messages decoded");
    assert!(kinds.len() >= KINDS.len() / 2, "kinds covered: {kinds:?}");
}
