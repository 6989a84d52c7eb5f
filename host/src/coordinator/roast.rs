//! The ROAST coordinator: robust asynchronous threshold signing over untrusted signer nodes.
//!
//! It keeps a ready set and an excluded set; whenever `t` signers are ready (and fewer than
//! `n - t + 1` attempts run) it starts an attempt with `t` of them. Shares are checked
//! optimistically: the aggregate must verify under the output key the coordinator computed; only
//! when it does not are the shares verified one by one by the coordinator itself against the
//! key's public key package (a node never vouches for its own share) to name the culprits; a
//! signer that times out, errs or returns an invalid share is excluded with evidence,
//! the others of a failed attempt become ready again. It finishes with a BIP340 signature as long
//! as `t` honest signers respond, and re-verifies it with libsecp256k1 before returning it.

use super::signer::SignerClient;
use super::taproot::{x_only, TweakCache, Tweaked};
use bitcoin::secp256k1::{schnorr, Message as SecpMessage, Secp256k1, XOnlyPublicKey};
use frost_secp256k1_tr::keys::PublicKeyPackage;
use frost_secp256k1_tr::round1::SigningCommitments;
use frost_secp256k1_tr::round2::SignatureShare;
use frost_secp256k1_tr::{Identifier, SigningPackage};
use frostgate_common::bounded::{DerivationSteps, PsbtBytes, Signers, SigningPackageBytes};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{AttemptId, KeyId, ParticipantId, SessionId};
use frostgate_common::protocol::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What to sign.
#[derive(Debug, Clone)]
pub struct SignRequest {
    /// The key.
    pub key: KeyId,
    /// The 32-byte message (on the PSBT path: the sighash this coordinator computed, which every
    /// enclave must compute identically).
    pub message: [u8; 32],
    /// The Taproot mode.
    pub mode: TaprootMode,
    /// The PSBT path: the PSBT and the input, bound by each enclave itself (`OpenPsbtSession`).
    pub psbt: Option<PsbtInput>,
    /// For a child of the key: its unhardened path from the group key (empty: the key itself).
    /// Each enclave derives the child itself; on the PSBT path it comes from `tap_key_origins`.
    pub path: Vec<u32>,
}

/// One input of a PSBT to sign.
#[derive(Debug, Clone)]
pub struct PsbtInput {
    /// BIP174 serialization.
    pub psbt: Arc<Vec<u8>>,
    /// The input.
    pub input: u32,
}

/// The step at which a signer was excluded (JSON: snake case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Connecting to the node.
    Connect,
    /// Fetching the key's public package.
    GetKey,
    /// Opening the session and the attempt, and round 1.
    Round1,
    /// Round 2.
    Round2,
    /// Aggregation.
    Aggregate,
}

/// Whether a failure is a node's operator policy refusing (not a fault of the node).
fn policy_refusal(e: &Error) -> bool {
    e.code() == ErrorCode::PolicyViolation
}

/// Why a signer was excluded (JSON: snake case).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// It could not be reached.
    Unreachable,
    /// It did not answer in time.
    Timeout,
    /// It answered with an error (see `code`).
    Error,
    /// Its signature share does not verify.
    InvalidShare,
    /// The signature it aggregated does not verify under the coordinator's output key.
    InvalidAggregate,
    /// It returned a public key package other than the one at least `threshold` nodes agree on.
    KeyPackageMismatch,
    /// Its enclave's spending policy refused the transaction (not a fault: see `message`).
    PolicyRefused,
}

impl Step {
    /// The name as in JSON output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Connect => "connect",
            Step::GetKey => "get_key",
            Step::Round1 => "round1",
            Step::Round2 => "round2",
            Step::Aggregate => "aggregate",
        }
    }
}

impl Reason {
    /// The name as in JSON output and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unreachable => "unreachable",
            Reason::Timeout => "timeout",
            Reason::Error => "error",
            Reason::InvalidShare => "invalid_share",
            Reason::InvalidAggregate => "invalid_aggregate",
            Reason::KeyPackageMismatch => "key_package_mismatch",
            Reason::PolicyRefused => "policy_refused",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a signer was excluded. Typed here; codes, ids and bytes become text only in its JSON
/// (the code's stable string, hex).
#[derive(Debug, Clone, Serialize)]
pub struct Evidence {
    /// The signer.
    pub signer: u16,
    /// What happened.
    pub reason: Reason,
    /// At which step.
    pub step: Step,
    /// The error code, when the signer answered with one.
    #[serde(serialize_with = "json::code")]
    pub code: Option<ErrorCode>,
    /// The attempt.
    #[serde(serialize_with = "json::display")]
    pub attempt: Option<AttemptId>,
    /// For an invalid share: the share.
    #[serde(serialize_with = "json::hex")]
    pub share: Option<Vec<u8>>,
    /// For an invalid share: SHA-256 of the signing package it was checked against.
    #[serde(serialize_with = "json::hex")]
    pub package_sha256: Option<[u8; 32]>,
    /// What the node said (a policy refusal: its rule and numbers), or why its package differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// How evidence's typed fields are written in JSON.
mod json {
    use serde::Serializer;

    pub fn code<S: Serializer>(c: &Option<frostgate_common::error::ErrorCode>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => s.serialize_some(c.code()),
            None => s.serialize_none(),
        }
    }

    pub fn display<S: Serializer, T: std::fmt::Display>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&v.to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn hex<S: Serializer, T: AsRef<[u8]>>(v: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(&::hex::encode(v)),
            None => s.serialize_none(),
        }
    }
}

/// A finished signing.
#[derive(Debug, Clone, Serialize)]
pub struct Signed {
    /// The BIP340 signature, hex.
    pub signature: String,
    /// The same signature (for callers that put it somewhere, e.g. a PSBT).
    #[serde(skip)]
    pub bip340: Bip340Signature,
    /// The x-only key it verifies under, hex.
    pub output_key: String,
    /// The signers whose shares make up the signature.
    pub signers: Vec<u16>,
    /// Attempts started.
    pub attempts: u32,
    /// Every excluded signer, with evidence.
    pub excluded: Vec<Evidence>,
}

/// Coordinator settings.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Deadline for each call to a signer.
    pub signer_timeout: Duration,
    /// Sign with preprocessed commitments (one `SignPreprocessed` per signer per attempt, the
    /// next commitments in its reply, finished sessions closed with later requests); otherwise
    /// the interactive rounds (session, attempt, round 1, round 2 per signer, then closing).
    pub preprocessed: bool,
    /// With `preprocessed`: the signings in flight to one node go in batches (`SignBatch`).
    pub batch: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { signer_timeout: Duration::from_secs(10), preprocessed: true, batch: true }
    }
}

impl Settings {
    /// The defaults with this per-call deadline.
    pub fn with_timeout(signer_timeout: Duration) -> Settings {
        Settings { signer_timeout, ..Settings::default() }
    }
}

/// Commitments a `Preprocess` call asks for when none is held for a node.
const PREPROCESS_BATCH: u16 = 16;

/// Below this many held commitments a signing asks for two back instead of one.
const HELD_LOW: usize = 8;

enum Event {
    Free(ParticipantId),
    Excluded(Evidence),
    Failed,
    Done(Bip340Signature, [u8; 32], Vec<ParticipantId>),
}

fn evidence(signer: ParticipantId, step: Step, attempt: AttemptId, e: &Error) -> Evidence {
    if policy_refusal(e) {
        return Evidence {
            signer: signer.get(),
            reason: Reason::PolicyRefused,
            step,
            code: Some(e.code()),
            attempt: Some(attempt),
            share: None,
            package_sha256: None,
            message: Some(e.message().to_string()),
        };
    }
    let reason = match e.code() {
        ErrorCode::RequestTimeout => Reason::Timeout,
        ErrorCode::NodeUnavailable
        | ErrorCode::EnclaveUnavailable
        | ErrorCode::ChannelClosed
        | ErrorCode::ChannelIo => Reason::Unreachable,
        _ => Reason::Error,
    };
    Evidence {
        signer: signer.get(),
        reason,
        step,
        code: Some(e.code()),
        attempt: Some(attempt),
        share: None,
        package_sha256: None,
        message: None,
    }
}

/// A key's public material, fetched once and reused across signings (public data only).
///
/// Invariant: the package is the only one that at least `threshold` nodes returned byte for
/// byte, whose verifying key is the key id and whose threshold is the cluster's (from the
/// operator's cluster file, never from a node), so fewer than `threshold` lying nodes cannot
/// substitute it; nodes that returned another package are excluded from every signing with it.
#[derive(Debug)]
pub struct KeyMaterial {
    public: PublicKeyPackage,
    threshold: u16,
    disagreeing: Vec<Evidence>,
    tweaked: TweakCache,
}

impl KeyMaterial {
    /// Fetches the key's public key package from every signer and keeps the one that at least
    /// `threshold` of them agree on (see the type's invariant).
    pub async fn fetch(
        signers: &[Arc<SignerClient>],
        key: &KeyId,
        threshold: u16,
        settings: Settings,
    ) -> Result<Arc<KeyMaterial>, Error> {
        let (public, disagreeing) = public_key(signers, key, threshold, settings).await?;
        Ok(Arc::new(KeyMaterial { public, threshold, disagreeing, tweaked: TweakCache::default() }))
    }

    /// The agreed package's threshold.
    pub fn threshold(&self) -> u16 {
        self.threshold
    }

    /// The agreed package's encoding.
    pub fn public_key_package_bytes(&self) -> Result<Vec<u8>, Error> {
        self.public.serialize().map_err(|e| Error::new(ErrorCode::InvalidEncoding, format!("public key package: {e}")))
    }

    /// The participants of the agreed package, ascending.
    pub fn participants(&self) -> Vec<u16> {
        (1..=frostgate_common::limits::MAX_PARTICIPANTS)
            .filter(|&n| Identifier::try_from(n).is_ok_and(|i| self.public.verifying_shares().contains_key(&i)))
            .collect()
    }

    /// Nodes that returned another package than the agreed one, with evidence.
    pub fn disagreeing(&self) -> &[Evidence] {
        &self.disagreeing
    }

    /// The x-only output key for `mode`, computed from the agreed package.
    pub fn output_key(&self, mode: &TaprootMode) -> Result<[u8; 32], Error> {
        self.tweaked(mode).map(|t| t.output_key)
    }

    /// The group key (SEC1 compressed, the full point: BIP32 works on points, not x-only keys).
    pub fn group_key(&self) -> Result<Vec<u8>, Error> {
        self.public
            .verifying_key()
            .serialize()
            .map_err(|e| Error::new(ErrorCode::InvalidEncoding, format!("verifying key: {e}")))
    }

    /// The package tweaked for `mode` (computed once per mode).
    fn tweaked(&self, mode: &TaprootMode) -> Result<Arc<Tweaked>, Error> {
        self.tweaked.get(&self.public, &[], mode)
    }

    /// The child at `path` (the root when empty) tweaked for `mode`.
    fn tweaked_at(&self, path: &[u32], mode: &TaprootMode) -> Result<Arc<Tweaked>, Error> {
        self.tweaked.get(&self.public, path, mode)
    }
}

/// Runs ROAST until a signature or until fewer than `threshold` (the cluster's) signers remain.
pub async fn sign(
    signers: Vec<Arc<SignerClient>>,
    request: SignRequest,
    threshold: u16,
    settings: Settings,
) -> Result<Signed, (Error, Vec<Evidence>)> {
    validate(&request).map_err(|e| (e, Vec::new()))?;
    let key = KeyMaterial::fetch(&signers, &request.key, threshold, settings).await.map_err(|e| (e, Vec::new()))?;
    sign_with(signers, request, settings, key).await
}

/// Checks a request as every node's request will be built from it (derivation path, PSBT size),
/// before any node is contacted: a request that cannot be sent fails here with its own error,
/// excludes nobody and costs no node anything (no attempt, no preprocessed commitment).
pub fn validate(request: &SignRequest) -> Result<(), Error> {
    if let Some(step) = request.path.iter().find(|s| **s >= 0x8000_0000) {
        return Err(Error::new(ErrorCode::DerivationInvalid, format!("hardened step {step} (only unhardened paths)")));
    }
    binding(SessionId::from_bytes([0; 16]), request).map(drop)
}

/// [`sign`] with key material fetched beforehand (no per-signing key fetch and decode).
pub async fn sign_with(
    signers: Vec<Arc<SignerClient>>,
    request: SignRequest,
    settings: Settings,
    key: Arc<KeyMaterial>,
) -> Result<Signed, (Error, Vec<Evidence>)> {
    let fail = |e: Error| (e, Vec::new());
    validate(&request).map_err(fail)?;
    let t = key.threshold as usize;
    let n = signers.len();
    if n < t {
        return Err(fail(Error::new(ErrorCode::SignerSetInvalid, format!("{n} signers for a {t}-of-n key"))));
    }
    let session = SessionId::from_bytes(crate::random_bytes());
    let by_id: BTreeMap<ParticipantId, Arc<SignerClient>> = signers.iter().map(|s| (s.id(), s.clone())).collect();
    let mut excluded: BTreeMap<ParticipantId, Evidence> = BTreeMap::new();
    // A node that could not even be reached is never ready; it is reported, not hidden.
    for s in signers.iter().filter(|s| !s.reachable()) {
        let e = Error::new(ErrorCode::NodeUnavailable, "unreachable");
        let mut ev = evidence(s.id(), Step::Connect, AttemptId::from_bytes([0; 16]), &e);
        ev.attempt = None;
        excluded.insert(s.id(), ev);
    }
    // A node that disagreed about the key's public package is not trusted to sign with it.
    for ev in &key.disagreeing {
        if let Ok(p) = ParticipantId::new(ev.signer) {
            excluded.entry(p).or_insert_with(|| ev.clone());
        }
    }
    let mut ready: BTreeSet<ParticipantId> = by_id.keys().copied().filter(|p| !excluded.contains_key(p)).collect();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (mut active, mut attempts) = (0usize, 0u32);
    // The nodes sent a request of this session (the ones to close it on).
    let mut asked: BTreeSet<ParticipantId> = BTreeSet::new();
    let max_active = n - t + 1;
    let public = key.tweaked_at(&request.path, &request.mode).map_err(fail)?;
    loop {
        while ready.len() >= t && active < max_active {
            let chosen: Vec<ParticipantId> = ready.iter().copied().take(t).collect();
            for p in &chosen {
                ready.remove(p);
                asked.insert(*p);
            }
            let clients: Vec<Arc<SignerClient>> = chosen.iter().map(|p| by_id[p].clone()).collect();
            let (tx, request, public) = (tx.clone(), request.clone(), public.clone());
            active += 1;
            attempts += 1;
            if settings.preprocessed {
                tokio::spawn(async move { preprocessed(clients, session, request, public, settings, tx).await });
            } else {
                tokio::spawn(async move { attempt(clients, session, request, public, settings, tx).await });
            }
        }
        if active == 0 && !ready.is_empty() && excluded.values().any(|e| e.reason == Reason::PolicyRefused) {
            // Policies refused: ask the nodes not yet asked too, so the report names every
            // node's decision (opening a session consumes nothing; an approving node's session
            // is closed again).
            for p in std::mem::take(&mut ready) {
                let c = by_id[&p].clone();
                match open_session(&c, session, &request, settings.signer_timeout).await {
                    Err(e) => {
                        excluded.insert(p, evidence(p, Step::Round1, AttemptId::from_bytes([0; 16]), &e));
                    }
                    Ok(()) => {
                        let _ = c.call(SessionRef { session }, settings.signer_timeout).await;
                    }
                }
            }
        }
        if active == 0 {
            // No signature: the nodes asked may still drop the session (with their next request).
            if settings.preprocessed {
                for p in &asked {
                    by_id[p].close_later([session]);
                }
            }
            let refusals: Vec<String> = excluded
                .values()
                .filter(|e| e.reason == Reason::PolicyRefused)
                .map(|e| format!("node {}: {}", e.signer, e.message.as_deref().unwrap_or("")))
                .collect();
            // Operators' policies refused: that is the answer, not a signing fault.
            let e = if refusals.is_empty() {
                Error::new(
                    ErrorCode::SigningFailed,
                    format!("fewer than {t} responsive, honest signers remain ({} excluded)", excluded.len()),
                )
            } else {
                Error::new(ErrorCode::PolicyViolation, format!("refused by policy: {}", refusals.join("; ")))
            };
            return Err((e, excluded.into_values().collect()));
        }
        match rx.recv().await {
            Some(Event::Free(p)) => {
                if !excluded.contains_key(&p) {
                    ready.insert(p);
                }
            }
            Some(Event::Excluded(ev)) => {
                if let Ok(p) = ParticipantId::new(ev.signer) {
                    ready.remove(&p);
                    excluded.entry(p).or_insert(ev);
                }
            }
            Some(Event::Failed) => active -= 1,
            Some(Event::Done(signature, output_key, used)) if settings.preprocessed => {
                // The signature exists: every node may drop the session, told with its next
                // request (or by `flush_closing`), never by a call of its own per signature.
                for p in &asked {
                    by_id[p].close_later([session]);
                }
                return Ok(Signed {
                    signature: hex::encode(signature.to_bytes()),
                    bip340: signature,
                    output_key: hex::encode(output_key),
                    signers: used.iter().map(|p| p.get()).collect(),
                    attempts,
                    excluded: excluded.into_values().collect(),
                });
            }
            Some(Event::Done(signature, output_key, used)) => {
                // The signature exists: every signer may drop the session (bounded registries).
                let closing: Vec<_> = by_id
                    .values()
                    .filter(|c| c.reachable())
                    .map(|c| {
                        let c = c.clone();
                        tokio::spawn(async move {
                            let _ = c.call(SessionRef { session }, Duration::from_secs(2)).await;
                        })
                    })
                    .collect();
                for t in closing {
                    let _ = t.await;
                }
                return Ok(Signed {
                    signature: hex::encode(signature.to_bytes()),
                    bip340: signature,
                    output_key: hex::encode(output_key),
                    signers: used.iter().map(|p| p.get()).collect(),
                    attempts,
                    excluded: excluded.into_values().collect(),
                });
            }
            None => return Err(fail(Error::new(ErrorCode::Internal, "coordinator channel closed"))),
        }
    }
}

/// Asks every signer for the key's package; returns the one package that at least `threshold`
/// of them returned identically (verifying key = `key`, threshold = `threshold`), and evidence
/// against every node that answered with anything else. Two packages each backed by `threshold`
/// nodes (impossible with fewer than `threshold` liars) fail closed.
async fn public_key(
    signers: &[Arc<SignerClient>],
    key: &KeyId,
    threshold: u16,
    settings: Settings,
) -> Result<(PublicKeyPackage, Vec<Evidence>), Error> {
    let asks: Vec<_> = signers
        .iter()
        .map(|s| {
            let s = s.clone();
            let key = *key;
            tokio::spawn(async move { (s.id(), s.call(KeyRef { key }, settings.signer_timeout).await) })
        })
        .collect();
    let mut by_package: BTreeMap<Vec<u8>, Vec<ParticipantId>> = BTreeMap::new();
    let mut disagreeing = Vec::new();
    let mut last = Error::new(ErrorCode::NodeUnavailable, "no signer reachable");
    let mismatch = |signer: ParticipantId, why: String| Evidence {
        signer: signer.get(),
        reason: Reason::KeyPackageMismatch,
        step: Step::GetKey,
        code: None,
        attempt: None,
        share: None,
        package_sha256: None,
        message: Some(why),
    };
    for ask in asks {
        let Ok((id, reply)) = ask.await else { continue };
        let info = match reply {
            Ok(info) => info,
            Err(e) => {
                last = e;
                continue;
            }
        };
        let bytes = info.public_key_package.as_inner().to_vec();
        match PublicKeyPackage::deserialize(&bytes) {
            Ok(p) if x_only(p.verifying_key()).ok() != Some(*key.as_bytes()) => {
                disagreeing.push(mismatch(id, "its package's verifying key is not the key id".into()))
            }
            Ok(p) if p.min_signers() != Some(threshold) => disagreeing.push(mismatch(
                id,
                format!("its package's threshold {:?} is not the cluster's {threshold}", p.min_signers()),
            )),
            Ok(_) => by_package.entry(bytes).or_default().push(id),
            Err(e) => disagreeing.push(mismatch(id, format!("its package does not decode: {e}"))),
        }
    }
    let backed: Vec<&Vec<u8>> =
        by_package.iter().filter(|(_, ids)| ids.len() >= threshold as usize).map(|(b, _)| b).collect();
    let bytes = match backed.as_slice() {
        [one] => (*one).clone(),
        [] if by_package.is_empty() && disagreeing.is_empty() => return Err(last),
        [] => {
            return Err(Error::new(
                ErrorCode::SigningFailed,
                format!(
                    "no public key package is returned by {threshold} nodes (agreeing groups: {:?}; disagreeing: {:?})",
                    by_package.values().collect::<Vec<_>>(),
                    disagreeing.iter().map(|e| e.signer).collect::<Vec<_>>()
                ),
            ))
        }
        _ => {
            return Err(Error::new(
                ErrorCode::SigningFailed,
                format!("conflicting public key packages are each returned by {threshold} nodes: refusing to choose"),
            ))
        }
    };
    let public = PublicKeyPackage::deserialize(&bytes)
        .map_err(|e| Error::new(ErrorCode::InvalidEncoding, format!("public key package: {e}")))?;
    for (other, ids) in &by_package {
        if *other != bytes {
            for id in ids {
                disagreeing.push(mismatch(*id, "its package differs from the one the other nodes agree on".into()));
            }
        }
    }
    Ok((public, disagreeing))
}

/// Opens the session on one node: the digest, or the PSBT input (whose sighash the enclave
/// computes itself and must equal ours). This is where a node's policy decides.
async fn open_session(c: &SignerClient, session: SessionId, req: &SignRequest, timeout: Duration) -> Result<(), Error> {
    match binding(session, req)? {
        SessionBinding::Digest(open) => {
            c.call(open, timeout).await?;
        }
        SessionBinding::Derived(open) => {
            c.call(open, timeout).await?;
        }
        SessionBinding::Psbt(open) => {
            if c.call(open, timeout).await?.sighash != req.message {
                return Err(Error::new(
                    ErrorCode::SigningPackageMismatch,
                    "the enclave computed another sighash for this input",
                ));
            }
        }
    }
    Ok(())
}

/// Runs `f` on every client concurrently; returns the successes and reports the failures.
async fn each<T: Send + 'static, F, Fut>(
    clients: &[Arc<SignerClient>],
    step: Step,
    attempt: AttemptId,
    tx: &mpsc::UnboundedSender<Event>,
    f: F,
) -> Option<BTreeMap<ParticipantId, T>>
where
    F: Fn(Arc<SignerClient>) -> Fut,
    Fut: std::future::Future<Output = Result<T, Error>> + Send + 'static,
{
    let tasks: Vec<_> = clients.iter().map(|c| (c.id(), tokio::spawn(f(c.clone())))).collect();
    let mut ok = BTreeMap::new();
    let mut failed = Vec::new();
    for (id, t) in tasks {
        match t.await {
            Ok(Ok(v)) => {
                ok.insert(id, v);
            }
            Ok(Err(e)) => failed.push(evidence(id, step, attempt, &e)),
            Err(_) => failed.push(evidence(id, step, attempt, &Error::new(ErrorCode::Internal, "task failed"))),
        }
    }
    if failed.is_empty() {
        return Some(ok);
    }
    let bad: BTreeSet<u16> = failed.iter().map(|e| e.signer).collect();
    for ev in failed {
        let _ = tx.send(Event::Excluded(ev));
    }
    release(clients, attempt, &bad, tx).await;
    None
}

/// Ends a failed attempt: the good signers are free again, and their nonces are wiped.
async fn release(
    clients: &[Arc<SignerClient>],
    attempt: AttemptId,
    bad: &BTreeSet<u16>,
    tx: &mpsc::UnboundedSender<Event>,
) {
    for c in clients {
        if !bad.contains(&c.id().get()) {
            let _ = c.call(AttemptRef { attempt }, Duration::from_secs(5)).await;
            let _ = tx.send(Event::Free(c.id()));
        }
    }
    let _ = tx.send(Event::Failed);
}

async fn attempt(
    clients: Vec<Arc<SignerClient>>,
    session: SessionId,
    request: SignRequest,
    public: Arc<Tweaked>,
    settings: Settings,
    tx: mpsc::UnboundedSender<Event>,
) {
    // `public` is already tweaked for `request.mode`; its output key is ours, not a node's.
    let attempt = AttemptId::from_bytes(crate::random_bytes());
    let ids: Vec<ParticipantId> = clients.iter().map(|c| c.id()).collect();
    let timeout = settings.signer_timeout;
    let req = request.clone();
    let signers = ids.clone();
    let opened = each(&clients, Step::Round1, attempt, &tx, move |c| {
        let (req, signers) = (req.clone(), signers.clone());
        async move {
            open_session(&c, session, &req, timeout).await?;
            let signers = Signers::new(signers).map_err(|e| Error::new(ErrorCode::Internal, e))?;
            c.call(OpenAttempt { session, attempt, signers }, timeout).await?;
            let r = c.call(SeatRef { attempt, seat: c.id() }, timeout).await?;
            SigningCommitments::deserialize(r.commitments.as_inner())
                .map_err(|e| Error::new(ErrorCode::InvalidEncoding, format!("commitments: {e}")))
        }
    })
    .await;
    let Some(commitments) = opened else { return };
    let map: BTreeMap<Identifier, SigningCommitments> =
        commitments.iter().filter_map(|(p, c)| Identifier::try_from(p.get()).ok().map(|i| (i, *c))).collect();
    let package = SigningPackage::new(map, &request.message);
    let Ok(package_bytes) = package.serialize() else {
        release(&clients, attempt, &BTreeSet::new(), &tx).await;
        return;
    };
    let mode = request.mode;
    let bytes = package_bytes.clone();
    let shares = each(&clients, Step::Round2, attempt, &tx, move |c| {
        let bytes = bytes.clone();
        async move {
            let signing_package = SigningPackageBytes::new(bytes).map_err(|e| Error::new(ErrorCode::Internal, e))?;
            let r = c.call(Round2 { attempt, seat: c.id(), mode, signing_package }, timeout).await?;
            Ok(r.signature_share.into_inner())
        }
    })
    .await;
    let Some(shares) = shares else { return };
    conclude(Attempt { clients, attempt, request, public, tx }, package, package_bytes, shares).await
}

/// How each node binds the session: the digest, or the PSBT input (whose sighash the enclave
/// computes itself; the package's message is ours, so a different sighash is refused there).
fn binding(session: SessionId, req: &SignRequest) -> Result<SessionBinding, Error> {
    let (key, message, mode) = (req.key, req.message, req.mode);
    Ok(match &req.psbt {
        None if req.path.is_empty() => SessionBinding::Digest(OpenSession { session, key, message, mode }),
        None => {
            let path =
                DerivationSteps::new(req.path.clone()).map_err(|e| Error::new(ErrorCode::DerivationInvalid, e))?;
            SessionBinding::Derived(OpenDerivedSession { session, key, path, message, mode })
        }
        Some(p) => {
            let psbt = PsbtBytes::new(p.psbt.to_vec()).map_err(|e| Error::new(ErrorCode::PsbtInvalid, e))?;
            SessionBinding::Psbt(OpenPsbtSession { session, key, input: p.input, psbt })
        }
    })
}

/// One attempt with preprocessed commitments: each signer's commitment is one held for it (or,
/// when none is, from a `Preprocess` call), then one `SignPreprocessed` per signer, whose reply
/// brings the next commitments, then the aggregation as in [`attempt`].
///
/// A signer whose held commitment its enclave no longer has (`commitment_unknown`: it restarted,
/// or the commitment expired) is not excluded: what is held for it is dropped and it is ready
/// again, to preprocess afresh. Refused after a fresh `Preprocess`, it is excluded like any error.
async fn preprocessed(
    clients: Vec<Arc<SignerClient>>,
    session: SessionId,
    request: SignRequest,
    public: Arc<Tweaked>,
    settings: Settings,
    tx: mpsc::UnboundedSender<Event>,
) {
    let attempt = AttemptId::from_bytes(crate::random_bytes());
    let (timeout, batch) = (settings.signer_timeout, settings.batch);
    let key = request.key;
    let taken = each(&clients, Step::Round1, attempt, &tx, move |c| async move {
        if let Some(held) = c.take_commitment(&key) {
            return Ok((held, true));
        }
        let r = c.call(Preprocess { key, seat: c.id(), count: PREPROCESS_BATCH }, timeout).await?;
        let mut fresh = r.commitments.into_inner().into_iter();
        let first = fresh.next().ok_or_else(|| Error::new(ErrorCode::Internal, "no commitment preprocessed"))?;
        c.hold_commitments(key, fresh);
        Ok((first, false))
    })
    .await;
    let Some(taken) = taken else { return };
    let mut map = BTreeMap::new();
    for (p, (held, _)) in &taken {
        match (Identifier::try_from(p.get()), SigningCommitments::deserialize(held.commitments.as_inner())) {
            (Ok(id), Ok(c)) => drop(map.insert(id, c)),
            _ => {
                let e = Error::new(ErrorCode::InvalidEncoding, "its preprocessed commitments do not decode");
                let _ = tx.send(Event::Excluded(evidence(*p, Step::Round1, attempt, &e)));
                clients.iter().filter(|c| c.id() == *p).for_each(|c| c.drop_commitments(&key));
                return release(&clients, attempt, &BTreeSet::from([p.get()]), &tx).await;
            }
        }
    }
    let package = SigningPackage::new(map, &request.message);
    let (Ok(package_bytes), Ok(binding), Ok(signers)) = (
        package.serialize(),
        binding(session, &request),
        Signers::new(clients.iter().map(|c| c.id()).collect::<Vec<_>>()),
    ) else {
        return release(&clients, attempt, &BTreeSet::new(), &tx).await;
    };
    let tasks: Vec<_> = clients
        .iter()
        .map(|c| {
            let (c, binding, signers, bytes) = (c.clone(), binding.clone(), signers.clone(), package_bytes.clone());
            let commitment = taken.get(&c.id()).map(|(h, _)| h.id);
            tokio::spawn(async move {
                let commitment = commitment.ok_or_else(|| Error::new(ErrorCode::Internal, "no commitment"))?;
                let signing_package =
                    SigningPackageBytes::new(bytes).map_err(|e| Error::new(ErrorCode::Internal, e))?;
                let replenish = if c.held_commitments(&key) < HELD_LOW { 2 } else { 1 };
                let close = c.take_closing();
                let m = SignPreprocessed {
                    binding,
                    attempt,
                    signers,
                    seat: c.id(),
                    commitment,
                    signing_package,
                    replenish,
                    close: close.clone(),
                };
                let signed = if batch { c.sign_preprocessed(m, timeout).await } else { c.call(m, timeout).await };
                match signed {
                    Ok(r) => {
                        c.hold_commitments(key, r.next.into_inner());
                        Ok(r.signature_share.into_inner())
                    }
                    Err(e) => {
                        // Not known to have arrived: the closings go with a later request.
                        c.close_later(close.into_inner());
                        if e.code() == ErrorCode::CommitmentUnknown {
                            c.drop_commitments(&key);
                        }
                        Err(e)
                    }
                }
            })
        })
        .collect();
    let mut shares = BTreeMap::new();
    let (mut bad, mut failed) = (BTreeSet::new(), false);
    for (c, task) in clients.iter().zip(tasks) {
        let p = c.id();
        let stale_held = taken.get(&p).is_some_and(|(_, held)| *held);
        match task.await {
            Ok(Ok(share)) => drop(shares.insert(p, share)),
            // Its enclave lost what we held (restart, expiry): ready again, not excluded.
            Ok(Err(e)) if e.code() == ErrorCode::CommitmentUnknown && stale_held => failed = true,
            Ok(Err(e)) => {
                bad.insert(p.get());
                let _ = tx.send(Event::Excluded(evidence(p, Step::Round2, attempt, &e)));
            }
            Err(_) => {
                bad.insert(p.get());
                let e = Error::new(ErrorCode::Internal, "task failed");
                let _ = tx.send(Event::Excluded(evidence(p, Step::Round2, attempt, &e)));
            }
        }
    }
    if failed || !bad.is_empty() {
        return release(&clients, attempt, &bad, &tx).await;
    }
    conclude(Attempt { clients, attempt, request, public, tx }, package, package_bytes, shares).await
}

/// Sends every node's queued session closings (batched), e.g. before a coordinator exits.
pub async fn flush_closing(signers: &[Arc<SignerClient>]) {
    let flushes: Vec<_> = signers
        .iter()
        .map(|c| {
            let c = c.clone();
            tokio::spawn(async move { c.flush_closing(Duration::from_secs(2)).await })
        })
        .collect();
    for f in flushes {
        let _ = f.await;
    }
}

/// An attempt under way: its signers and what it signs.
struct Attempt {
    clients: Vec<Arc<SignerClient>>,
    attempt: AttemptId,
    request: SignRequest,
    public: Arc<Tweaked>,
    tx: mpsc::UnboundedSender<Event>,
}

/// Aggregates the attempt's shares here, off the signing path (no node call, no durable commit),
/// and reports the signature, or the culprits with evidence.
///
/// Optimistic: no share is checked one by one while the aggregate verifies (libsecp256k1) under
/// the output key this coordinator computed itself from the agreed public package. Only when it
/// does not are the shares checked, against that package, to name the culprits. A node's
/// `Aggregate` is never needed, so no node can substitute a signature. The nodes' closings of the
/// session go as before, piggybacked on later requests.
async fn conclude(
    a: Attempt,
    package: SigningPackage,
    package_bytes: Vec<u8>,
    shares: BTreeMap<ParticipantId, Vec<u8>>,
) {
    let Attempt { clients, attempt, request, public, tx } = a;
    let ids: Vec<ParticipantId> = clients.iter().map(|c| c.id()).collect();
    if let Some(signature) = aggregate(&package, &shares, &public) {
        if libsecp_verifies(&signature, &request.message, &public.output_key) {
            let _ = tx.send(Event::Done(signature, public.output_key, ids));
            return;
        }
    }
    let invalid = invalid_shares(&shares, &public, &package, attempt, sha256(&package_bytes));
    let bad: BTreeSet<u16> = invalid.iter().map(|e| e.signer).collect();
    for ev in invalid {
        let _ = tx.send(Event::Excluded(ev));
    }
    release(&clients, attempt, &bad, &tx).await;
}

/// The BIP340 signature the shares aggregate to under the tweaked package (FROST's aggregation,
/// as the enclave's `Aggregate` does it); `None` if a share does not decode or they do not
/// aggregate.
fn aggregate(
    package: &SigningPackage,
    shares: &BTreeMap<ParticipantId, Vec<u8>>,
    public: &Tweaked,
) -> Option<Bip340Signature> {
    let mut map = BTreeMap::new();
    for (p, share) in shares {
        map.insert(Identifier::try_from(p.get()).ok()?, SignatureShare::deserialize(share).ok()?);
    }
    let sig =
        frost_core::aggregate_custom(package, &map, &public.public, frost_core::CheaterDetection::Disabled).ok()?;
    let bytes = sig.serialize().ok()?;
    // frost-secp256k1-tr serializes a signature as BIP340's 64 bytes: r (x only), then s.
    let (r, s) = (bytes.get(..32)?, bytes.get(32..64)?);
    Some(Bip340Signature { r: r.try_into().ok()?, s: s.try_into().ok()? })
}

/// Every share that does not verify against the key's own (tweaked) public package, as evidence.
fn invalid_shares(
    shares: &BTreeMap<ParticipantId, Vec<u8>>,
    public: &Tweaked,
    package: &SigningPackage,
    attempt: AttemptId,
    package_hash: [u8; 32],
) -> Vec<Evidence> {
    let tweaked = &public.public;
    let mut invalid = Vec::new();
    for (p, share) in shares {
        let valid = Identifier::try_from(p.get()).ok().and_then(|id| {
            let s = SignatureShare::deserialize(share).ok()?;
            let vs = tweaked.verifying_shares().get(&id)?;
            frost_core::verify_signature_share(id, vs, &s, package, tweaked.verifying_key()).ok()
        });
        if valid.is_none() {
            invalid.push(Evidence {
                signer: p.get(),
                reason: Reason::InvalidShare,
                step: Step::Round2,
                code: None,
                attempt: Some(attempt),
                share: Some(share.clone()),
                package_sha256: Some(package_hash),
                message: None,
            });
        }
    }
    invalid
}

fn sha256(data: &[u8]) -> [u8; 32] {
    use bitcoin::hashes::{sha256, Hash};
    sha256::Hash::hash(data).to_byte_array()
}

/// BIP340 verification by libsecp256k1.
pub fn libsecp_verifies(signature: &Bip340Signature, message: &[u8; 32], xonly: &[u8; 32]) -> bool {
    let secp = Secp256k1::verification_only();
    let (Ok(sig), Ok(key)) = (schnorr::Signature::from_slice(&signature.to_bytes()), XOnlyPublicKey::from_slice(xonly))
    else {
        return false;
    };
    secp.verify_schnorr(&sig, &SecpMessage::from_digest(*message), &key).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_evidence_is_written_as_stable_codes_and_hex() {
        let ev = Evidence {
            signer: 2,
            reason: Reason::InvalidShare,
            step: Step::Round2,
            code: Some(ErrorCode::CommitmentUnknown),
            attempt: Some(AttemptId::from_bytes([0xab; 16])),
            share: Some(vec![1, 2, 255]),
            package_sha256: Some([7; 32]),
            message: None,
        };
        let json = serde_json::to_value(&ev).expect("json");
        assert_eq!(json["code"], "commitment_unknown");
        assert_eq!(json["attempt"], "ab".repeat(16));
        assert_eq!(json["share"], "0102ff");
        assert_eq!(json["package_sha256"], "07".repeat(32));
        assert!(json.get("message").is_none());
        let bare = Evidence { code: None, attempt: None, share: None, package_sha256: None, ..ev };
        let json = serde_json::to_value(&bare).expect("json");
        assert!(json["code"].is_null() && json["attempt"].is_null() && json["share"].is_null(), "{json}");
    }

    #[test]
    fn evidence_names_in_json_and_logs_agree() {
        use Reason::*;
        use Step::*;
        for s in [Connect, GetKey, Round1, Round2, Aggregate] {
            assert_eq!(serde_json::to_value(s).expect("json"), serde_json::json!(s.as_str()));
        }
        for r in [Unreachable, Timeout, Error, InvalidShare, InvalidAggregate, KeyPackageMismatch, PolicyRefused] {
            assert_eq!(serde_json::to_value(r).expect("json"), serde_json::json!(r.as_str()));
        }
    }
}
