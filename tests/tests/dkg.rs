//! DKG between separate enclave processes (each node: its own token, enclave, host and store),
//! relayed by an untrusted test relay.

use frostgate_common::error::ErrorCode;
use frostgate_common::protocol::*;
use frostgate_tests::dkg::{
    relay_over as relay, runtime as rt, sign_multi, start_nodes as cluster, unsealed_share, Relay, Tamper,
};
use frostgate_tests::node::Node;
use frostgate_tests::signing::*;

async fn holds_no_key(relay: &Relay, key: frostgate_common::ids::KeyId) {
    for (p, c) in &relay.nodes {
        let e = c.call(Message::GetKey(KeyRef { key })).await.expect_err("no key may be active");
        assert_eq!(e.code(), ErrorCode::UnknownKey, "node {p}");
    }
}

#[test]
fn dkg_2_of_3_and_3_of_5_then_sign_in_every_mode() {
    let rt = rt();
    for (t, n) in [(2u16, 3u16), (3, 5)] {
        let nodes = cluster(n);
        rt.block_on(async {
            let relay = relay(&nodes).await;
            let run = relay.run(t, &Tamper::default()).await;
            assert!(run.blames.is_empty() && run.errors.is_empty(), "{run:?}");
            assert_eq!(run.keys.len(), n as usize);
            let first = run.keys.values().next().expect("key").clone();
            for (p, k) in &run.keys {
                assert_eq!(k.key, first.key, "node {p} derived another key");
                assert_eq!(k.threshold, t);
                assert_eq!(k.seats.as_inner(), &[*p], "each enclave holds exactly its own seat");
                assert_eq!(k.public_key_package, first.public_key_package);
            }
            // The P2TR output key matches rust-bitcoin's BIP341 computation.
            assert_eq!(first.bip86_output_key, bitcoin_output_key(first.key.as_bytes(), &TaprootMode::Bip86));
            let signers: Vec<_> = relay.nodes.iter().rev().take(t as usize).rev().cloned().collect();
            for mode in [TaprootMode::Bip86, TaprootMode::ScriptTree { merkle_root: random() }, TaprootMode::Untweaked]
            {
                let (_, _, output_key) = sign_multi(&signers, first.key, mode).await;
                assert_eq!(output_key, bitcoin_output_key(first.key.as_bytes(), &mode), "{t}-of-{n} {mode:?}");
            }
        });
    }
}

#[test]
fn a_tampered_round2_ciphertext_names_its_sender_and_no_key_is_activated() {
    let nodes = cluster(3);
    rt().block_on(async {
        let relay = relay(&nodes).await;
        let tamper = Tamper { envelope: Some((pid(2), pid(1))), ..Tamper::default() };
        let run = relay.run(2, &tamper).await;
        let blame = run.blames.get(&pid(1)).expect("node 1 blames");
        assert_eq!((blame.code, blame.culprit), (ErrorCode::DkgDecryptFailed, pid(2)));
        assert!(run.keys.is_empty(), "{run:?}");
        for p in [pid(2), pid(3)] {
            assert_eq!(run.errors.get(&p).map(|e| e.code()), Some(ErrorCode::DkgTranscriptMismatch), "node {p}");
        }
        for key in &run.confirmed_keys {
            holds_no_key(&relay, *key).await;
        }
        // A fresh DKG among the same nodes succeeds.
        let run = relay.run(2, &Tamper::default()).await;
        assert_eq!(run.keys.len(), 3, "{run:?}");
    });
}

#[test]
fn an_equivocating_relay_aborts_the_dkg_with_no_key_activated_anywhere() {
    let nodes = cluster(3);
    rt().block_on(async {
        let relay = relay(&nodes).await;
        // A valid round-1 package for participant 1 that participant 1 never sent, shown to
        // participant 3 only.
        let (_secret, fake) = frost_secp256k1_tr::keys::dkg::part1(
            frost_secp256k1_tr::Identifier::try_from(1u16).expect("id"),
            3,
            2,
            frost_secp256k1_tr::rand_core::OsRng,
        )
        .expect("part1");
        let tamper = Tamper { round1: Some((pid(3), pid(1), fake.serialize().expect("bytes"))), ..Tamper::default() };
        let run = relay.run(2, &tamper).await;
        assert!(run.keys.is_empty(), "no key may be activated: {run:?}");
        let blame = run.blames.get(&pid(3)).expect("the victim aborts");
        assert_eq!((blame.code, blame.culprit), (ErrorCode::DkgInvalidShare, pid(1)), "candidate culprit");
        for p in [pid(1), pid(2)] {
            assert_eq!(run.errors.get(&p).map(|e| e.code()), Some(ErrorCode::DkgTranscriptMismatch), "node {p}");
        }
        for key in &run.confirmed_keys {
            holds_no_key(&relay, *key).await;
        }

        // A relay that forges one participant's transcript confirmation is refused by everyone.
        let run = relay.run(2, &Tamper { confirmation: Some(pid(2)), ..Tamper::default() }).await;
        assert!(run.keys.is_empty(), "{run:?}");
        assert!(
            run.errors.values().all(|e| e.code() == ErrorCode::DkgTranscriptMismatch) && run.errors.len() == 3,
            "{run:?}"
        );
        for key in &run.confirmed_keys {
            holds_no_key(&relay, *key).await;
        }
    });
}

#[test]
fn a_restart_mid_dkg_aborts_cleanly_and_a_fresh_dkg_succeeds() {
    let mut nodes = cluster(3);
    let rt = rt();
    let dkg = rt.block_on(async {
        let relay = relay(&nodes).await;
        let run = relay.run(2, &Tamper { stop_after_round2: true, ..Tamper::default() }).await;
        assert!(run.errors.is_empty() && run.blames.is_empty(), "{run:?}");
        run.dkg.expect("id")
    });
    nodes[1].kill();
    nodes[1].start();
    rt.block_on(async {
        let relay = relay(&nodes).await;
        let restarted = &relay.nodes[1].1;
        let finish = DkgFinish { dkg, envelopes: frostgate_common::protocol::DkgEnvelopes::new(vec![]).expect("b") };
        let e = restarted.call(Message::DkgFinish(finish)).await.expect_err("the secret is gone");
        assert_eq!(
            (e.code(), e.recovery_class()),
            (ErrorCode::DkgUnknown, frostgate_common::RecoveryClass::NewAttempt)
        );
        for (p, c) in [&relay.nodes[0], &relay.nodes[2]] {
            assert_eq!(c.request(DkgRef { dkg }).await.expect("abort").dkg, dkg, "node {p}");
        }
        let run = relay.run(2, &Tamper::default()).await;
        assert_eq!(run.keys.len(), 3, "{run:?}");
        let key = run.keys.values().next().expect("key").key;
        sign_multi(&[relay.nodes[0].clone(), relay.nodes[1].clone()], key, TaprootMode::Bip86).await;
    });
}

#[test]
fn no_dkg_share_appears_in_any_store_log_or_relayed_message() {
    let mut nodes = cluster(3);
    let rt = rt();
    let (relay, key) = rt.block_on(async {
        let relay = relay(&nodes).await;
        let run = relay.run(2, &Tamper::default()).await;
        assert_eq!(run.keys.len(), 3, "{run:?}");
        let key = run.keys.values().next().expect("key").key;
        sign_multi(&[relay.nodes[0].clone(), relay.nodes[2].clone()], key, TaprootMode::Bip86).await;
        (relay, key)
    });
    for n in nodes.iter_mut() {
        n.kill();
    }
    // Recover node 1's share the only legitimate way: its own token unseals its own blob.
    let (_, share) = unsealed_share(&nodes[0], key, pid(1));
    assert_eq!(share.len(), 32);
    let contains = |hay: &[u8]| hay.windows(share.len()).any(|w| w == share.as_slice());
    for n in &nodes {
        for suffix in ["", "-wal"] {
            let bytes = std::fs::read(format!("{}{suffix}", n.db.display())).unwrap_or_default();
            assert!(!contains(&bytes), "a share in a store file");
        }
        assert!(!contains(n.logs().as_bytes()), "a share in the logs");
        assert!(!n.logs().contains(&hex::encode(&share)), "a share (hex) in the logs");
        assert!(!n.logs().contains(&n.token.pin), "a PIN in the logs");
    }
    let recorded = relay.recorded.lock().expect("lock");
    assert!(recorded.len() > 20);
    for m in recorded.iter() {
        assert!(!contains(m), "a share in a relayed message");
    }
}

#[test]
fn a_host_that_substitutes_an_identity_key_or_an_unpinned_enclave_gets_no_dkg() {
    let nodes = cluster(3);
    rt().block_on(async {
        let relay = relay(&nodes).await;
        // The relay swaps participant 2's identity key for participant 3's (a man in the middle
        // would use its own): every enclave refuses, because its own [group] pins differ.
        let run = relay.run(2, &Tamper { identity: Some((pid(2), pid(3))), ..Tamper::default() }).await;
        assert!(run.keys.is_empty());
        assert_eq!(run.errors.len(), 3, "{run:?}");
        assert!(run.errors.values().all(|e| e.code() == ErrorCode::DkgConfigInvalid), "{run:?}");
    });
    // Enclaves with no pinned group refuse every DKG.
    let mut unpinned: Vec<Node> = (0..2).map(|_| Node::new()).collect();
    for n in unpinned.iter_mut() {
        n.start();
    }
    rt().block_on(async {
        let relay = relay(&unpinned).await;
        let run = relay.run(2, &Tamper::default()).await;
        assert!(run.keys.is_empty());
        for p in [pid(1), pid(2)] {
            let e = run.errors.get(&p).expect("refused");
            assert_eq!(e.code(), ErrorCode::DkgConfigInvalid);
            assert!(e.message().contains("no [group]"), "{e}");
        }
    });
}

#[test]
fn out_of_order_unknown_and_invalid_proof_dkg_requests_get_their_codes() {
    let nodes = cluster(3);
    rt().block_on(async {
        let relay = relay(&nodes).await;
        let participants = relay.participants().await;
        let dkg = frostgate_common::ids::DkgId::from_bytes(random());
        let (_, c1) = &relay.nodes[0];
        let start = DkgStart { dkg, threshold: 2, me: pid(1), participants: participants.clone() };
        assert!(matches!(c1.call(Message::DkgStart(start)).await.expect("start"), Message::DkgRound1(_)));
        // Finish and activate before round 2: out of order.
        let finish = DkgFinish { dkg, envelopes: frostgate_common::protocol::DkgEnvelopes::new(vec![]).expect("b") };
        assert_eq!(c1.call(Message::DkgFinish(finish)).await.expect_err("phase").code(), ErrorCode::DkgPhase);
        let activate =
            DkgActivate { dkg, confirmations: frostgate_common::protocol::DkgConfirmations::new(vec![]).expect("b") };
        assert_eq!(c1.call(Message::DkgActivate(activate)).await.expect_err("phase").code(), ErrorCode::DkgPhase);
        // An unknown DKG id.
        let other = DkgRef { dkg: frostgate_common::ids::DkgId::from_bytes(random()) };
        assert_eq!(c1.call(Message::DkgAbort(other)).await.expect_err("unknown").code(), ErrorCode::DkgUnknown);
        c1.call(Message::DkgAbort(DkgRef { dkg })).await.expect("abort");

        // A proof of knowledge made for identifier 2, presented as participant 1's: node 2 and
        // node 3 reject it and name participant 1.
        let (_secret, forged) = frost_secp256k1_tr::keys::dkg::part1(
            frost_secp256k1_tr::Identifier::try_from(2u16).expect("id"),
            3,
            2,
            frost_secp256k1_tr::rand_core::OsRng,
        )
        .expect("part1");
        let tamper = Tamper { round1: Some((pid(3), pid(1), forged.serialize().expect("bytes"))), ..Tamper::default() };
        let run = relay.run(2, &tamper).await;
        let blame = run.blames.get(&pid(3)).expect("node 3 blames");
        assert_eq!((blame.code, blame.culprit), (ErrorCode::DkgInvalidProof, pid(1)));
        assert!(run.keys.is_empty(), "{run:?}");
    });
}

/// Unfinished DKGs (a caller that starts DKGs and never finishes them) expire: they fill the
/// registry only until their TTL, then a real DKG runs.
#[test]
fn unfinished_dkgs_expire_and_free_the_registry() {
    let mut nodes: Vec<Node> = (0..2).map(|_| Node::new()).collect();
    Node::pin_group(&nodes);
    for n in nodes.iter_mut() {
        n.enclave_args = ["--dkg-ttl-secs", "2", "--sweep-interval-secs", "1"].map(String::from).to_vec();
        n.start();
    }
    rt().block_on(async {
        let relay = relay(&nodes).await;
        let participants = relay.participants().await;
        let c = &relay.nodes[0].1;
        let start =
            |dkg| Message::DkgStart(DkgStart { dkg, threshold: 2, me: pid(1), participants: participants.clone() });
        for _ in 0..frostgate_enclave::dkg::MAX_DKGS {
            c.call(start(frostgate_common::ids::DkgId::from_bytes(random()))).await.expect("start");
        }
        let e = c.call(start(frostgate_common::ids::DkgId::from_bytes(random()))).await.expect_err("full");
        assert_eq!(e.code(), ErrorCode::RegistryFull, "{e}");
        // Bounded wait for the TTL to pass (the enclave's clock decides, not the test's).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match c.call(start(frostgate_common::ids::DkgId::from_bytes(random()))).await {
                Ok(_) => break,
                Err(e) if e.code() == ErrorCode::RegistryFull && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(200)).await
                }
                Err(e) => panic!("{e}"),
            }
        }
        let run = relay.run(2, &Tamper::default()).await;
        assert!(run.blames.is_empty() && run.errors.is_empty(), "{run:?}");
        assert_eq!(run.keys.len(), 2);
    });
}
