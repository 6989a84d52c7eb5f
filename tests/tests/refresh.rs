//! Share refresh between separate enclave processes (each node: its own token, enclave, host and
//! store), relayed by an untrusted test relay: same group key, fresh shares of the next epoch;
//! a participant can be removed; a cheating participant is named; the previous epoch's sealed
//! share leaves the store and an old store put back is refused.

use frostgate_common::error::ErrorCode;
use frostgate_common::ids::{DkgId, KeyId};
use frostgate_common::protocol::RefreshVotes;
use frostgate_common::protocol::*;
mod common;
use common::consensus_valid;
use frostgate_tests::dkg::{
    dkg_key, relay_over as relay, runtime as rt, sign_message_multi, sign_multi, start_nodes as cluster, stored_key,
    unsealed_share, Relay, Tamper,
};
use frostgate_tests::signing::*;

/// Every node's view of the key.
async fn key_views(relay: &Relay, key: KeyId) -> Vec<KeyInfo> {
    let mut out = Vec::new();
    for (_, c) in &relay.nodes {
        out.push(c.request(KeyRef { key }).await.expect("key"));
    }
    out
}

#[test]
fn refresh_2_of_3_and_3_of_5_keeps_the_group_key_and_signs_with_any_quorum() {
    let rt = rt();
    for (t, n) in [(2u16, 3u16), (3, 5)] {
        let nodes = cluster(n);
        rt.block_on(async {
            let relay = relay(&nodes).await;
            let before = dkg_key(&relay, t).await;
            // A session opened under epoch 0 and left unfinished (node 1's nonce committed).
            let c = &relay.nodes[0].1;
            let (stale, _) = open_session(c, before.key, random(), TaprootMode::Bip86).await.expect("session");
            let quorum: Vec<_> = (1..=t).map(pid).collect();
            let attempt = open_attempt(c, stale, &quorum).await.expect("attempt");
            round1(c, attempt, pid(1)).await.expect("round 1");
            for epoch in 1..=2u64 {
                let run = relay.refresh(before.key, &Tamper::default()).await;
                assert!(run.blames.is_empty() && run.errors.is_empty(), "{t}-of-{n}: {run:?}");
                assert_eq!(run.keys.len(), n as usize);
                for (p, r) in &run.keys {
                    assert_eq!(r.epoch, epoch, "node {p}");
                    assert_eq!(r.key.key, before.key, "node {p}: the group key changed");
                    assert_eq!(r.key.bip86_output_key, before.bip86_output_key);
                    assert_eq!(r.key.threshold, t);
                    assert_eq!(r.key.seats.as_inner(), &[*p]);
                }
            }
            let views = key_views(&relay, before.key).await;
            assert!(views.iter().all(|v| v.public_key_package == views[0].public_key_package), "nodes disagree");
            assert_ne!(views[0].public_key_package, before.public_key_package, "the verifying shares must change");
            let old = frost_secp256k1_tr::keys::PublicKeyPackage::deserialize(before.public_key_package.as_inner())
                .expect("package");
            let new = frost_secp256k1_tr::keys::PublicKeyPackage::deserialize(views[0].public_key_package.as_inner())
                .expect("package");
            assert_eq!(old.verifying_key(), new.verifying_key());
            for (id, share) in new.verifying_shares() {
                assert_ne!(old.verifying_shares().get(id), Some(share), "verifying share {id:?} unchanged");
            }
            // The session of the previous epoch is gone with its attempt and nonce.
            let e = round1(c, attempt, pid(1)).await.expect_err("an attempt of the previous epoch");
            assert_eq!(e.code(), ErrorCode::UnknownAttempt, "{e}");
            let e = open_attempt(c, stale, &quorum).await.expect_err("a session of the previous epoch");
            assert_eq!(e.code(), ErrorCode::UnknownSession, "{e}");
            // A transaction spending the key's BIP86 output, signed by the refreshed shares, is
            // accepted by Bitcoin Core's interpreter.
            {
                use bitcoin::hashes::Hash;
                use bitcoin::sighash::{Prevouts, SighashCache, TapSighashType};
                let output = bitcoin_output_key(before.key.as_bytes(), &TaprootMode::Bip86);
                let to = frostgate_tests::psbt::random_address().script_pubkey();
                let psbt = frostgate_tests::psbt::spend(before.key.as_bytes(), &output, &[100_000], &[(to, 90_000)]);
                let spent = [psbt.inputs[0].witness_utxo.clone().expect("utxo")];
                let mut tx = psbt.unsigned_tx.clone();
                let sighash = SighashCache::new(&tx)
                    .taproot_key_spend_signature_hash(0, &Prevouts::All(&spent), TapSighashType::Default)
                    .expect("sighash");
                let signers: Vec<_> = relay.nodes[n as usize - t as usize..].to_vec();
                let (sig, _, _) =
                    sign_message_multi(&signers, before.key, TaprootMode::Bip86, sighash.to_byte_array()).await;
                tx.input[0].witness = bitcoin::Witness::from_slice(&[sig.to_bytes()]);
                consensus_valid(&tx, &spent);
            }
            // Every quorum signs, in every mode, under the unchanged key (checked by libsecp256k1).
            for first in 0..=(n - t) as usize {
                let signers: Vec<_> = relay.nodes[first..first + t as usize].to_vec();
                for mode in [TaprootMode::Bip86, TaprootMode::ScriptTree { merkle_root: random() }] {
                    let (_, _, output_key) = sign_multi(&signers, before.key, mode).await;
                    assert_eq!(output_key, bitcoin_output_key(before.key.as_bytes(), &mode));
                }
            }
        });
    }
}

/// Whether shares `(id, share)` interpolate at zero to the secret key of `verifying_key`.
fn reconstructs(shares: &[(u16, &[u8])], verifying_key: &[u8]) -> bool {
    use frost_secp256k1_tr::{Field, Group};
    type F = frost_secp256k1_tr::Secp256K1ScalarField;
    let scalar = |b: &[u8]| F::deserialize(&b.try_into().expect("32 bytes")).expect("scalar");
    let x = |i: u16| scalar(&frost_secp256k1_tr::Identifier::try_from(i).expect("id").serialize());
    let mut secret = F::zero();
    for (i, share) in shares {
        let mut lambda = F::one();
        for (j, _) in shares.iter().filter(|(j, _)| j != i) {
            lambda *= x(*j) * F::invert(&(x(*j) - x(*i))).expect("distinct");
        }
        secret += lambda * scalar(share);
    }
    let point = frost_secp256k1_tr::Secp256K1Group::generator() * secret;
    frost_secp256k1_tr::Secp256K1Group::serialize(&point).expect("point").as_slice() == verifying_key
}

#[test]
fn a_refresh_without_a_participant_removes_its_seat() {
    let mut nodes = cluster(3);
    let rt = rt();
    // Down to n = t (2 seats for a threshold of 2) only where the operator allowed it: a
    // coordinator asking for it is refused by the enclaves themselves.
    let key = rt.block_on(async {
        let relay = relay(&nodes).await;
        let key = dkg_key(&relay, 2).await.key;
        let run = relay.only(&[pid(1), pid(2)]).refresh(key, &Tamper::default()).await;
        assert!(run.keys.is_empty(), "{run:?}");
        for p in [pid(1), pid(2)] {
            let e = run.errors.get(&p).unwrap_or_else(|| panic!("node {p}: {run:?}"));
            assert_eq!(e.code(), ErrorCode::DkgConfigInvalid, "{e}");
            assert!(e.message().contains("allow_removal_to_threshold"), "{e}");
        }
        for v in key_views(&relay, key).await {
            assert_eq!(v.participants.as_inner().len(), 3, "nothing changed");
        }
        key
    });
    for n in nodes.iter_mut().take(2) {
        n.kill();
        n.allow_removal_to_threshold();
        n.start();
    }
    let (key, verifying_key) = rt.block_on(async {
        let relay = relay(&nodes).await;
        let remaining = relay.only(&[pid(1), pid(2)]);
        let run = remaining.refresh(key, &Tamper::default()).await;
        assert!(run.blames.is_empty() && run.errors.is_empty(), "{run:?}");
        for r in run.keys.values() {
            assert_eq!((r.epoch, r.key.participants.as_inner().as_slice()), (1, &[pid(1), pid(2)][..]));
        }
        sign_multi(&remaining.nodes, key, TaprootMode::Bip86).await;
        // The refreshed nodes no longer sign with participant 3.
        let c = &relay.nodes[0].1;
        let (session, _) = open_session(c, key, random(), TaprootMode::Bip86).await.expect("session");
        let e = open_attempt(c, session, &[pid(1), pid(3)]).await.expect_err("participant 3 was removed");
        assert_eq!(e.code(), ErrorCode::SignerSetInvalid, "{e}");
        // Nor can the removed node join a later refresh.
        let run = relay.refresh(key, &Tamper::default()).await;
        assert!(run.keys.is_empty(), "{run:?}");
        for p in [pid(1), pid(2)] {
            assert_eq!(run.errors.get(&p).map(|e| e.code()), Some(ErrorCode::DkgConfigInvalid), "node {p}: {run:?}");
        }
        let package = key_views(&relay, key).await.remove(0).public_key_package;
        let package = frost_secp256k1_tr::keys::PublicKeyPackage::deserialize(package.as_inner()).expect("package");
        (key, package.verifying_key().serialize().expect("key"))
    });
    for n in nodes.iter_mut() {
        n.kill();
    }
    // Node 3's share (still epoch 0) combines with neither refreshed share; the refreshed ones do.
    let shares: Vec<(u64, Vec<u8>)> = (1..=3).map(|i| unsealed_share(&nodes[i - 1], key, pid(i as u16))).collect();
    assert_eq!(shares.iter().map(|s| s.0).collect::<Vec<_>>(), [1, 1, 0]);
    assert!(reconstructs(&[(1, &shares[0].1), (2, &shares[1].1)], &verifying_key));
    assert!(!reconstructs(&[(1, &shares[0].1), (3, &shares[2].1)], &verifying_key));
    assert!(!reconstructs(&[(2, &shares[1].1), (3, &shares[2].1)], &verifying_key));
}

#[test]
fn a_cheating_participant_is_named_and_no_share_changes() {
    let nodes = cluster(3);
    rt().block_on(async {
        let relay = relay(&nodes).await;
        let before = dkg_key(&relay, 2).await;
        // A round-2 ciphertext altered in transit: the recipient names the sender.
        let tamper = Tamper { envelope: Some((pid(2), pid(1))), ..Tamper::default() };
        let run = relay.refresh(before.key, &tamper).await;
        let blame = run.blames.get(&pid(1)).expect("node 1 blames");
        assert_eq!((blame.code, blame.culprit), (ErrorCode::DkgDecryptFailed, pid(2)));
        assert!(run.keys.is_empty(), "{run:?}");
        // A contribution that is not a sharing of zero under its sender's commitment (a round-1
        // package participant 1 never sent, shown to participant 3 only): 3 names 1.
        let (_secret, fake) = frost_secp256k1_tr::keys::refresh::refresh_dkg_part1(
            frost_secp256k1_tr::Identifier::try_from(1u16).expect("id"),
            3,
            2,
            frost_secp256k1_tr::rand_core::OsRng,
        )
        .expect("part 1");
        let tamper = Tamper { round1: Some((pid(3), pid(1), fake.serialize().expect("bytes"))), ..Tamper::default() };
        let run = relay.refresh(before.key, &tamper).await;
        let blame = run.blames.get(&pid(3)).expect("the victim aborts");
        assert_eq!((blame.code, blame.culprit), (ErrorCode::DkgInvalidShare, pid(1)), "{run:?}");
        assert!(run.keys.is_empty(), "{run:?}");
        // A relay that forges a confirmation: refused by everyone.
        let run = relay.refresh(before.key, &Tamper { confirmation: Some(pid(2)), ..Tamper::default() }).await;
        assert!(run.keys.is_empty(), "{run:?}");
        assert!(run.errors.values().all(|e| e.code() == ErrorCode::DkgTranscriptMismatch), "{run:?}");
        // One refresh of a key at a time per enclave: two confirmed refreshes activated on
        // different nodes would leave the seats on different sharings.
        let participants = relay.participants().await;
        let c = &relay.nodes[0].1;
        let start = |dkg| RefreshStart { dkg, key: before.key, me: pid(1), participants: participants.clone() };
        let (first, second) = (DkgId::from_bytes(random()), DkgId::from_bytes(random()));
        c.request(start(first)).await.expect("a refresh");
        let e = c.request(start(second)).await.expect_err("a second refresh of the same key");
        assert_eq!(e.code(), ErrorCode::DkgConfigInvalid, "{e}");
        assert!(e.message().contains("already running"), "{e}");
        c.request(DkgRef { dkg: first }).await.expect("abort");
        c.request(start(second)).await.expect("after the abort");
        c.request(DkgRef { dkg: second }).await.expect("abort");
        // Nothing changed: epoch 0, the DKG's package, and the old shares still sign.
        for v in key_views(&relay, before.key).await {
            assert_eq!(v.public_key_package, before.public_key_package);
        }
        sign_multi(&relay.nodes[1..], before.key, TaprootMode::Bip86).await;
    });
}

#[test]
fn the_previous_epoch_leaves_the_store_and_an_old_store_put_back_is_refused() {
    let mut nodes = cluster(3);
    let rt = rt();
    let key = rt.block_on(async { dkg_key(&relay(&nodes).await, 2).await.key });
    // Node 1's store as it is at epoch 0 (a consistent copy, taken while the node is stopped).
    nodes[0].kill();
    let saved = nodes[0].db.with_extension("epoch0");
    std::fs::copy(&nodes[0].db, &saved).expect("copy");
    for suffix in ["-wal", "-shm"] {
        let from = format!("{}{suffix}", nodes[0].db.display());
        if std::path::Path::new(&from).exists() {
            std::fs::copy(&from, format!("{}{suffix}", saved.display())).expect("copy");
        }
    }
    let (_, old_share) = unsealed_share(&nodes[0], key, pid(1));
    let old_blob = stored_key(&nodes[0].db, key).1[0].2.clone();
    nodes[0].start();
    let relay = rt.block_on(async {
        let relay = self::relay(&nodes).await;
        let run = relay.refresh(key, &Tamper::default()).await;
        assert_eq!(run.keys.len(), 3, "{run:?}");
        sign_multi(&relay.nodes[..2], key, TaprootMode::Bip86).await;
        relay
    });
    let recorded = relay.recorded.lock().expect("lock").clone();
    for n in nodes.iter_mut() {
        n.kill();
    }
    let (epoch, new_share) = unsealed_share(&nodes[0], key, pid(1));
    assert_eq!(epoch, 1);
    assert_ne!(new_share, old_share);
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for suffix in ["", "-wal"] {
        let bytes = std::fs::read(format!("{}{suffix}", nodes[0].db.display())).unwrap_or_default();
        assert!(!contains(&bytes, &old_blob), "the previous epoch's sealed share is still in host.db{suffix}");
    }
    for n in &nodes {
        for share in [&old_share, &new_share] {
            for suffix in ["", "-wal"] {
                let bytes = std::fs::read(format!("{}{suffix}", n.db.display())).unwrap_or_default();
                assert!(!contains(&bytes, share), "a share in a store file");
            }
            assert!(!contains(n.logs().as_bytes(), share), "a share in the logs");
            assert!(!n.logs().contains(&hex::encode(share)), "a share (hex) in the logs");
        }
    }
    assert!(recorded.len() > 20);
    for m in &recorded {
        assert!(!contains(m, &old_share) && !contains(m, &new_share), "a share in a relayed message");
    }
    // The epoch-0 store put back: the enclave's anchor says it is older.
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", nodes[0].db.display()));
        let from = format!("{}{suffix}", saved.display());
        if std::path::Path::new(&from).exists() {
            std::fs::copy(&from, format!("{}{suffix}", nodes[0].db.display())).expect("restore");
        }
    }
    nodes[0].start_enclave();
    let log = nodes[0].try_start_host().expect_err("an old store must be refused");
    assert!(log.contains("store_rollback_detected"), "{log}");
}

/// The outside review's bricked key: a 2-of-2 key whose refresh loses node 2's activation (a
/// network cut at that moment). Before, node 1 switched to the new epoch alone and no signature
/// could be made again. Activation is now an atomic commitment: `RefreshActivate` only prepares
/// the new share beside the old one, and a commit needs every participant's signed vote that it
/// prepared; a node that did not prepare votes "never" (and then never prepares it), which
/// abandons the refresh everywhere. So the key still signs at its epoch, across restarts, and a
/// later refresh goes through.
#[test]
fn a_refresh_whose_activation_fails_on_one_node_leaves_the_key_signing() {
    let mut nodes = cluster(2);
    let rt = rt();
    let key = rt.block_on(async {
        let relay = relay(&nodes).await;
        let key = dkg_key(&relay, 2).await.key;
        let lost = Tamper { lost_activation: Some(pid(2)), ..Tamper::default() };
        let run = relay.refresh(key, &lost).await;
        assert_eq!(run.keys.get(&pid(1)).map(|k| k.epoch), Some(1), "node 1 prepared epoch 1: {run:?}");
        assert!(run.errors.contains_key(&pid(2)), "{run:?}");
        // Nothing was committed: both nodes sign at epoch 0.
        sign_multi(&relay.nodes, key, TaprootMode::Bip86).await;
        key
    });
    // The abandoned share does not come back with a restart.
    nodes[0].kill();
    nodes[0].start();
    rt.block_on(async {
        let relay = relay(&nodes).await;
        sign_multi(&relay.nodes, key, TaprootMode::Bip86).await;
        let run = relay.refresh(key, &Tamper::default()).await;
        assert!(run.errors.is_empty() && run.blames.is_empty(), "{run:?}");
        for k in run.keys.values() {
            assert_eq!(k.epoch, 1, "{run:?}");
        }
        sign_multi(&relay.nodes, key, TaprootMode::Bip86).await;
        // The commit is idempotent for the refresh in force.
        let dkg = run.dkg.expect("dkg id");
        let votes = RefreshVotes::new(relay.votes(dkg, key).await).expect("bound");
        for (_, c) in &relay.nodes {
            let again = c.request(RefreshCommit { dkg, key, epoch: 1, votes: votes.clone() }).await.expect("again");
            assert_eq!(again.epoch, 1);
        }
    });
    // Restarted at epoch 1, both still sign.
    for n in nodes.iter_mut() {
        n.kill();
        n.start();
    }
    rt.block_on(async { sign_multi(&relay(&nodes).await.nodes, key, TaprootMode::Bip86).await });
}

/// The review's attacks on the commit, by a coordinator that controls which node hears what:
/// node 1 alone prepared a refresh; a commit with node 1's vote alone, or with node 2's "never"
/// vote, is refused, and node 2 can no longer prepare it. And with a refresh prepared
/// everywhere but not committed, a second refresh cannot be prepared anywhere (two refreshes
/// committed on different nodes would split the key); ending the first goes through.
#[test]
fn a_refresh_commits_only_with_every_participants_prepared_vote() {
    let nodes = cluster(2);
    rt().block_on(async {
        let relay = relay(&nodes).await;
        let key = dkg_key(&relay, 2).await.key;
        let partial = Tamper { lost_activation: Some(pid(2)), stop_after_activation: true, ..Tamper::default() };
        let run = relay.refresh(key, &partial).await;
        let dkg = run.dkg.expect("dkg id");
        let node1 = &relay.nodes[0].1;
        let own = relay.only(&[pid(1)]).votes(dkg, key).await;
        assert!(own.iter().all(|v| v.prepared), "{own:?}");
        let e = node1
            .request(RefreshCommit { dkg, key, epoch: 1, votes: RefreshVotes::new(own.clone()).expect("bound") })
            .await
            .expect_err("node 2 did not vote");
        assert_eq!(e.code(), ErrorCode::DkgConfigInvalid, "{e}");
        let all = relay.votes(dkg, key).await;
        assert_eq!(all.iter().filter(|v| !v.prepared).count(), 1, "node 2 votes never: {all:?}");
        let e = node1
            .request(RefreshCommit { dkg, key, epoch: 1, votes: RefreshVotes::new(all.clone()).expect("bound") })
            .await
            .expect_err("node 2 never prepared");
        assert_eq!(e.code(), ErrorCode::DkgConfigInvalid, "{e}");
        // Node 1's prepared share is dropped on node 2's vote; the key signs at epoch 0.
        let dropped = node1
            .request(RefreshAbandon { dkg, key, votes: RefreshVotes::new(all).expect("bound") })
            .await
            .expect("abandon");
        assert!(dropped.dropped);
        sign_multi(&relay.nodes, key, TaprootMode::Bip86).await;

        // Prepared everywhere, not committed: a second refresh is refused at preparation.
        let stop = Tamper { stop_after_activation: true, ..Tamper::default() };
        let first = relay.refresh(key, &stop).await;
        assert_eq!(first.keys.len(), 2, "{first:?}");
        let second = relay.refresh(key, &stop).await;
        assert!(second.keys.is_empty(), "{second:?}");
        for p in [pid(1), pid(2)] {
            let e = second.errors.get(&p).unwrap_or_else(|| panic!("node {p}: {second:?}"));
            assert_eq!(e.code(), ErrorCode::DkgPhase, "{e}");
        }
        // Ending the first: every node prepared it, so it commits everywhere.
        let dkg = first.dkg.expect("dkg id");
        let votes = RefreshVotes::new(relay.votes(dkg, key).await).expect("bound");
        for (_, c) in &relay.nodes {
            let k = c.request(RefreshCommit { dkg, key, epoch: 1, votes: votes.clone() }).await.expect("commit");
            assert_eq!(k.epoch, 1);
        }
        sign_multi(&relay.nodes, key, TaprootMode::Bip86).await;
    });
}
