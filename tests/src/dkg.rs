//! A test relay for DKG between real nodes: it routes the enclaves' messages exactly as an
//! untrusted coordinator would, can tamper with them, and records every message it relays.

use crate::signing::{libsecp_verifies, package, random, Caller};
use frostgate_common::bounded::*;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{AttemptId, DkgId, KeyId, ParticipantId, SessionId};
use frostgate_common::protocol::*;
use frostgate_host::api::convert::Proto;
use frostgate_host::api::rpc::NetworkRequest;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Ways the relay misbehaves.
#[derive(Debug, Default)]
pub struct Tamper {
    /// Replace the round-1 package that `(to, from)` receives.
    pub round1: Option<(ParticipantId, ParticipantId, Vec<u8>)>,
    /// Flip a byte of the envelope `(from, to)`.
    pub envelope: Option<(ParticipantId, ParticipantId)>,
    /// Replace the transcript hash in `from`'s confirmation.
    pub confirmation: Option<ParticipantId>,
    /// Stop after round 2 (for restart tests).
    pub stop_after_round2: bool,
    /// Announce participant `.0` with participant `.1`'s identity key.
    pub identity: Option<(ParticipantId, ParticipantId)>,
    /// This participant's activation fails (never reaches it: a network cut at that moment).
    pub lost_activation: Option<ParticipantId>,
    /// Stop after the activations (a coordinator that dies before ending the refresh).
    pub stop_after_activation: bool,
}

/// What each node answered (`K`: what activation returns, `KeyRefreshed` for a refresh).
#[derive(Debug)]
pub struct DkgRun<K = KeyInfo> {
    /// The DKG id.
    pub dkg: Option<DkgId>,
    /// Activated keys by node.
    pub keys: BTreeMap<ParticipantId, K>,
    /// Blames by the node that reported them.
    pub blames: BTreeMap<ParticipantId, DkgBlame>,
    /// Errors by node.
    pub errors: BTreeMap<ParticipantId, Error>,
    /// Key ids the nodes confirmed.
    pub confirmed_keys: Vec<KeyId>,
}

impl<K> Default for DkgRun<K> {
    fn default() -> Self {
        DkgRun {
            dkg: None,
            keys: BTreeMap::new(),
            blames: BTreeMap::new(),
            errors: BTreeMap::new(),
            confirmed_keys: Vec::new(),
        }
    }
}

/// The relay.
#[derive(Clone)]
pub struct Relay {
    /// Nodes by participant id.
    pub nodes: Vec<(ParticipantId, Caller)>,
    /// Frame encodings of every request and reply relayed.
    pub recorded: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Relay(..)")
    }
}

enum Step<T> {
    Ok(T),
    Blame(DkgBlame),
    Err(Error),
}

/// Keeps a node's step result; the first failure per node is the cause, later ones only echo it.
fn note<T, K>(run: &mut DkgRun<K>, at: ParticipantId, s: Step<T>) -> Option<T> {
    match s {
        Step::Ok(t) => Some(t),
        Step::Blame(b) => {
            run.blames.entry(at).or_insert(b);
            None
        }
        Step::Err(e) => {
            run.errors.entry(at).or_insert(e);
            None
        }
    }
}

impl Relay {
    /// A relay over nodes.
    pub fn new(nodes: Vec<(ParticipantId, Caller)>) -> Relay {
        Relay { nodes, recorded: Arc::new(Mutex::new(Vec::new())) }
    }

    /// One DKG step, recording the frame encoding of the request and the reply.
    async fn call<R, T>(&self, c: &Caller, r: R) -> Step<T>
    where
        R: NetworkRequest<Reply = DkgOutcome<T>> + Clone,
        DkgOutcome<T>: Proto + Clone,
        T: Into<Message>,
    {
        let encode = |m: Message| {
            frostgate_common::frame::encode(&frostgate_common::frame::Frame { request_id: 1, message: m })
                .expect("encodes")
        };
        self.recorded.lock().expect("lock").push(encode(r.clone().into()));
        match c.request(r).await {
            Ok(reply) => {
                self.recorded.lock().expect("lock").push(encode(reply.clone().into()));
                match reply {
                    DkgOutcome::Blame(b) => Step::Blame(b),
                    DkgOutcome::Done(t) => Step::Ok(t),
                }
            }
            Err(e) => Step::Err(e),
        }
    }

    /// Each node's pinned identity.
    pub async fn participants(&self) -> DkgParticipants {
        let mut out = Vec::new();
        for (id, c) in &self.nodes {
            let identity_key = c.request(GetIdentity).await.expect("identity");
            out.push(DkgParticipant { id: *id, identity_key });
        }
        DkgParticipants::new(out).expect("bound")
    }

    /// Runs a DKG as far as it goes.
    pub async fn run(&self, threshold: u16, tamper: &Tamper) -> DkgRun {
        let dkg = DkgId::from_bytes(random());
        self.run_with_id(dkg, threshold, tamper).await
    }

    /// Runs a DKG with a chosen id.
    pub async fn run_with_id(&self, dkg: DkgId, threshold: u16, tamper: &Tamper) -> DkgRun {
        let start = |me, participants| DkgStart { dkg, threshold, me, participants };
        let activate = |confirmations| DkgActivate { dkg, confirmations };
        self.steps(dkg, start, activate, tamper).await
    }

    /// Runs a share refresh of `key` among the relay's nodes as far as it goes.
    pub async fn refresh(&self, key: KeyId, tamper: &Tamper) -> DkgRun<KeyRefreshed> {
        let dkg = DkgId::from_bytes(random());
        let start = |me, participants| RefreshStart { dkg, key, me, participants };
        let activate = |confirmations| RefreshActivate { dkg, confirmations };
        let mut run = self.steps(dkg, start, activate, tamper).await;
        if tamper.stop_after_activation {
            return run;
        }
        // Phase 2, as the coordinator does it: every node's vote, then commit or abandon.
        let votes = self.votes(dkg, key).await;
        let all = RefreshVotes::new(votes.clone()).expect("bound");
        if votes.len() == self.nodes.len() && votes.iter().all(|v| v.prepared) {
            let epoch = votes[0].epoch;
            for (me, c) in &self.nodes {
                match c.request(RefreshCommit { dkg, key, epoch, votes: all.clone() }).await {
                    Ok(k) => drop(run.keys.insert(*me, k)),
                    Err(e) => {
                        run.keys.remove(me);
                        run.errors.insert(*me, e);
                    }
                }
            }
        } else {
            for (_, c) in &self.nodes {
                let _ = c.request(RefreshAbandon { dkg, key, votes: all.clone() }).await;
            }
        }
        run
    }

    /// Every node's signed vote on refresh `dkg` (those that answer).
    pub async fn votes(&self, dkg: DkgId, key: KeyId) -> Vec<RefreshVote> {
        let mut out = Vec::new();
        for (_, c) in &self.nodes {
            if let Ok(v) = c.request(GetRefreshVote { dkg, key }).await {
                out.push(v);
            }
        }
        out
    }

    /// Repairs `seat` of `key` onto the relay's node for that seat with `helpers`, as far as it
    /// goes (`tamper.envelope` alters a delta or a sigma in transit). The new node's key, if any,
    /// is in `keys`.
    pub async fn repair(&self, key: KeyId, seat: ParticipantId, helpers: &[ParticipantId], tamper: &Tamper) -> DkgRun {
        let repair = DkgId::from_bytes(random());
        let mut run = DkgRun { dkg: Some(repair), ..DkgRun::default() };
        let node = |p: ParticipantId| self.nodes.iter().find(|(id, _)| *id == p).map(|(_, c)| c).expect("node");
        let identity_key = node(seat).request(GetIdentity).await.expect("identity");
        let ids = Signers::new(helpers.to_vec()).expect("bound");
        let alter = |envelopes: &mut Vec<DkgEnvelope>| {
            for e in envelopes.iter_mut().filter(|e| Some((e.from, e.to)) == tamper.envelope) {
                let mut b = e.ciphertext.clone().into_inner();
                let last = b.len() - 1;
                b[last] ^= 1;
                e.ciphertext = DkgCiphertext::new(b).expect("bound");
            }
        };
        let mut deltas = Vec::new();
        for h in helpers {
            let m = RepairStart { repair, key, seat, identity_key: identity_key.clone(), me: *h, helpers: ids.clone() };
            if let Some(e) = note(&mut run, *h, self.call::<_, DkgEnvelopes>(node(*h), m).await) {
                deltas.extend(e.into_inner());
            }
        }
        alter(&mut deltas);
        let mut sigmas = Vec::new();
        for h in helpers {
            let mine: Vec<DkgEnvelope> = deltas.iter().filter(|e| e.to == *h).cloned().collect();
            let m = RepairSigma { repair, envelopes: DkgEnvelopes::new(mine).expect("bound") };
            if let Some(e) = note(&mut run, *h, self.call::<_, DkgEnvelopes>(node(*h), m).await) {
                sigmas.extend(e.into_inner());
            }
        }
        if !run.blames.is_empty() || !run.errors.is_empty() {
            return run;
        }
        alter(&mut sigmas);
        let public_key_package = node(helpers[0]).request(KeyRef { key }).await.expect("key").public_key_package;
        let m = RepairFinish {
            repair,
            key,
            seat,
            public_key_package,
            envelopes: DkgEnvelopes::new(sigmas).expect("bound"),
        };
        if let Some(k) = note(&mut run, seat, self.call::<_, KeyInfo>(node(seat), m).await) {
            run.keys.insert(seat, k);
        }
        run
    }

    /// The relay with only these nodes.
    pub fn only(&self, ids: &[ParticipantId]) -> Relay {
        let nodes = self.nodes.iter().filter(|(p, _)| ids.contains(p)).cloned().collect();
        Relay { nodes, recorded: self.recorded.clone() }
    }

    async fn steps<S, A, K>(
        &self,
        dkg: DkgId,
        start: impl Fn(ParticipantId, DkgParticipants) -> S,
        activate: impl Fn(DkgConfirmations) -> A,
        tamper: &Tamper,
    ) -> DkgRun<K>
    where
        S: NetworkRequest<Reply = DkgOutcome<DkgRound1Package>> + Clone,
        A: NetworkRequest<Reply = DkgOutcome<K>> + Clone,
        DkgOutcome<K>: Proto + Clone,
        K: Into<Message>,
    {
        let mut run = DkgRun { dkg: Some(dkg), ..DkgRun::default() };
        let mut participants = self.participants().await;
        if let Some((victim, with)) = tamper.identity {
            let mut list = participants.clone().into_inner();
            let key = list.iter().find(|p| p.id == with).map(|p| p.identity_key.clone()).expect("participant");
            for p in list.iter_mut().filter(|p| p.id == victim) {
                p.identity_key = key.clone();
            }
            participants = DkgParticipants::new(list).expect("bound");
        }
        let mut round1 = BTreeMap::new();
        for (me, c) in &self.nodes {
            let m = start(*me, participants.clone());
            if let Some(p) = note(&mut run, *me, self.call::<_, DkgRound1Package>(c, m).await) {
                round1.insert(*me, p);
            }
        }
        let mut envelopes: Vec<DkgEnvelope> = Vec::new();
        for (me, c) in &self.nodes {
            let mut others: Vec<DkgRound1Package> =
                round1.iter().filter(|(k, _)| *k != me).map(|(_, p)| p.clone()).collect();
            if let Some((to, from, bytes)) = &tamper.round1 {
                if to == me {
                    for p in others.iter_mut().filter(|p| p.from == *from) {
                        p.package = DkgPackageBytes::new(bytes.clone()).expect("bound");
                    }
                }
            }
            let m = DkgRound2 { dkg, round1: DkgRound1Packages::new(others).expect("bound") };
            if let Some(e) = note(&mut run, *me, self.call::<_, DkgEnvelopes>(c, m).await) {
                envelopes.extend(e.into_inner());
            }
        }
        if tamper.stop_after_round2 {
            return run;
        }
        if let Some((from, to)) = tamper.envelope {
            for e in envelopes.iter_mut().filter(|e| e.from == from && e.to == to) {
                let mut b = e.ciphertext.clone().into_inner();
                let last = b.len() - 1;
                b[last] ^= 1;
                e.ciphertext = DkgCiphertext::new(b).expect("bound");
            }
        }
        let mut confirmations = Vec::new();
        for (me, c) in &self.nodes {
            let mine: Vec<DkgEnvelope> = envelopes.iter().filter(|e| e.to == *me).cloned().collect();
            let m = DkgFinish { dkg, envelopes: DkgEnvelopes::new(mine).expect("bound") };
            if let Some(mut conf) = note(&mut run, *me, self.call::<_, DkgConfirmation>(c, m).await) {
                run.confirmed_keys.push(conf.key);
                if tamper.confirmation == Some(*me) {
                    conf.transcript_hash = random();
                }
                confirmations.push(conf);
            }
        }
        for (me, c) in &self.nodes {
            if run.blames.contains_key(me) || run.errors.contains_key(me) {
                continue;
            }
            if tamper.lost_activation == Some(*me) {
                run.errors.insert(*me, Error::new(ErrorCode::ChannelClosed, "activation lost (tamper)"));
                continue;
            }
            let m = activate(DkgConfirmations::new(confirmations.clone()).expect("bound"));
            if let Some(k) = note(&mut run, *me, self.call::<_, K>(c, m).await) {
                run.keys.insert(*me, k);
            }
        }
        run
    }
}

/// Signs with several nodes, each holding its own seat: every signer opens the same session and
/// attempt, runs round 1 and round 2; the first aggregates. Returns the signature, message and
/// output key, checked by libsecp256k1.
pub async fn sign_multi(
    signers: &[(ParticipantId, Caller)],
    key: KeyId,
    mode: TaprootMode,
) -> (Bip340Signature, [u8; 32], [u8; 32]) {
    sign_message_multi(signers, key, mode, random()).await
}

/// [`sign_multi`] of a chosen 32-byte message (e.g. a transaction's sighash).
pub async fn sign_message_multi(
    signers: &[(ParticipantId, Caller)],
    key: KeyId,
    mode: TaprootMode,
    message: [u8; 32],
) -> (Bip340Signature, [u8; 32], [u8; 32]) {
    let session = SessionId::from_bytes(random());
    let attempt = AttemptId::from_bytes(random());
    let ids: Vec<ParticipantId> = signers.iter().map(|(p, _)| *p).collect();
    let mut commitments = BTreeMap::new();
    let mut output = None;
    for (p, c) in signers {
        output = Some(c.request(OpenSession { session, key, message, mode }).await.expect("session").output_key);
        let open = OpenAttempt { session, attempt, signers: Signers::new(ids.clone()).expect("b") };
        c.request(open).await.expect("attempt");
        commitments.insert(*p, crate::signing::round1(c, attempt, *p).await.expect("round 1"));
    }
    let pkg = package(&commitments, &message);
    let mut shares = BTreeMap::new();
    for (p, c) in signers {
        shares.insert(*p, crate::signing::round2(c, attempt, *p, mode, &pkg).await.expect("round 2"));
    }
    match crate::signing::aggregate(&signers[0].1, attempt, mode, &pkg, &shares).await.expect("aggregate") {
        AggregateOutcome::Signed { signature, output_key } => {
            assert_eq!(Some(output_key), output);
            assert!(libsecp_verifies(&signature, &message, &output_key), "libsecp256k1 rejects the signature");
            (signature, message, output_key)
        }
        other => panic!("{other:?}"),
    }
}

/// A stored key: (public key package, seats as (seat, epoch, sealed blob)).
pub type StoredKey = (Vec<u8>, Vec<(ParticipantId, u64, Vec<u8>)>);

/// The newest `KeyAdded` record of `key` in the store at `db`.
pub fn stored_key(db: &std::path::Path, key: KeyId) -> StoredKey {
    let conn = rusqlite::Connection::open(db).expect("db");
    let mut s = conn.prepare("SELECT body FROM records ORDER BY version").expect("prepare");
    let bodies: Vec<Vec<u8>> = s.query_map([], |r| r.get(0)).expect("query").map(|r| r.expect("row")).collect();
    bodies
        .iter()
        .rev()
        .find_map(|b| match postcard::from_bytes::<frostgate_enclave::markers::Record>(b) {
            Ok(frostgate_enclave::markers::Record::KeyAdded { key: k, public_key_package, seats }) if k == key => {
                Some((public_key_package, seats))
            }
            _ => None,
        })
        .expect("the key's record")
}

/// The signing share of `seat` as the node's own token unseals it from its store (the node's
/// processes must be stopped), in a process of its own: (epoch, 32-byte share).
pub fn unsealed_share(node: &crate::node::Node, key: KeyId, seat: ParticipantId) -> (u64, Vec<u8>) {
    unseal_with(&node.token.config, &node.db, node.token.env(), None, key, seat)
}

/// As [`unsealed_share`] for an enclave configuration, a store and the token's environment, run
/// as `user` when given (a two-user dev cluster's enclave user: the PIN file is its own).
pub fn unseal_with(
    config: &std::path::Path,
    db: &std::path::Path,
    env: &[(String, String)],
    user: Option<&str>,
    key: KeyId,
    seat: ParticipantId,
) -> (u64, Vec<u8>) {
    let tool = crate::bin_dir().join("frostgate-test-unseal");
    let mut command = match user {
        Some(user) => {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", user, "--"]).arg(&tool);
            c
        }
        None => std::process::Command::new(&tool),
    };
    let out = command
        .args([&config.display().to_string(), &db.display().to_string()])
        .args([key.to_string(), seat.get().to_string()])
        .envs(env.iter().map(|(k, v)| (k, v)))
        .output()
        .expect("run frostgate-test-unseal");
    assert!(out.status.success(), "unseal: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let (epoch, share) = text.trim().split_once(' ').expect("EPOCH SHARE");
    (epoch.parse().expect("epoch"), hex::decode(share).expect("hex"))
}

/// A runtime for tests that drive nodes (two workers, as on CI).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime")
}

/// `n` fresh nodes (participant i+1 = node i), the group pinned in each, all started.
pub fn start_nodes(n: u16) -> Vec<crate::node::Node> {
    let mut nodes: Vec<crate::node::Node> = (0..n).map(|_| crate::node::Node::new()).collect();
    crate::node::Node::pin_group(&nodes);
    for node in nodes.iter_mut() {
        node.start();
    }
    nodes
}

/// A relay over every node (participant i+1 = node i); call inside a runtime.
pub async fn relay_over(nodes: &[crate::node::Node]) -> Relay {
    let mut callers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        callers.push((crate::signing::pid(i as u16 + 1), node.caller().await));
    }
    Relay::new(callers)
}

/// A `threshold`-of-n DKG among every node of `relay`, checked to succeed everywhere; the key.
pub async fn dkg_key(relay: &Relay, threshold: u16) -> KeyInfo {
    let run = relay.run(threshold, &Tamper::default()).await;
    assert!(run.blames.is_empty() && run.errors.is_empty() && run.keys.len() == relay.nodes.len(), "{run:?}");
    run.keys.into_values().next().expect("key")
}
