//! Signing through the real enclave process and the real channel: the host reaches the engine
//! only through boundary messages.

use frostgate_common::protocol::TaprootMode;
use frostgate_common::transport::Address;
use frostgate_host::node::enclave::EnclaveClient;
use frostgate_tests::signing::*;
use frostgate_tests::token::TokenDir;
use frostgate_tests::EnclaveProcess;
use std::process::Command;

#[test]
fn the_enclave_process_signs_2_of_3_in_every_mode_over_the_channel() {
    let dir = TokenDir::new();
    let token = dir.add_token("proc");
    let config = token.config.display().to_string();
    let o = Command::new(frostgate_tests::host_bin())
        .args(["token", "init", "--config", &config])
        .envs(token.env().iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .expect("init");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let enclave = EnclaveProcess::start_with_env(&["--config", &config], token.env());
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt").block_on(async {
        let store =
            std::sync::Arc::new(frostgate_host::node::store::HostStore::open(&dir.path().join("host.db")).expect("db"));
        let client = EnclaveClient::connect_with_store(Address::Unix(enclave.socket.clone()), Some(store.clone()))
            .await
            .expect("connect");
        client.load_store(&store, false).await.expect("load");
        let c = Caller::Channel(client.channel().clone());
        let key = dealer(&c, 2, 3).await;
        for mode in [TaprootMode::Bip86, TaprootMode::ScriptTree { merkle_root: random() }, TaprootMode::Untweaked] {
            let p = prepare(&c, key.key, &[pid(1), pid(3)], mode).await;
            assert_eq!(p.output_key, bitcoin_output_key(key.key.as_bytes(), &mode));
            let shares = sign_all(&c, &p).await;
            match aggregate(&c, p.attempt, mode, &p.package, &shares).await.expect("aggregate") {
                frostgate_common::protocol::AggregateOutcome::Signed { signature, output_key } => {
                    assert!(libsecp_verifies(&signature, &p.message, &output_key), "{mode:?}");
                }
                other => panic!("{other:?}"),
            }
        }
    });
    let logs = enclave.logs();
    assert!(logs.contains("DEVELOPMENT dealer key created"), "{logs}");
    assert!(!logs.contains(&token.pin));
}
