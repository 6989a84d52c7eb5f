//! The signing state machine: open session, open attempt, round 1, round 2, share verification,
//! aggregation (the invariants are the module's, in `rounds/mod.rs`).

use super::*;
use crate::markers::RequestTarget;
use frostgate_common::protocol::RequestTag;

impl Engine {
    /// Binds a session, durably. An identical repeat is accepted; any difference is a conflict.
    pub async fn open_session(
        &self,
        id: SessionId,
        key: KeyId,
        message: [u8; 32],
        mode: TaprootMode,
    ) -> Result<[u8; 32], Error> {
        self.open_session_at(id, key, &[], message, mode).await
    }

    /// [`Self::open_session`] for the child of the key at `path` (the group key when empty),
    /// derived here.
    pub async fn open_session_at(
        &self,
        id: SessionId,
        key: KeyId,
        path: &[u32],
        message: [u8; 32],
        mode: TaprootMode,
    ) -> Result<[u8; 32], Error> {
        self.bind_session(id, key, path, message, mode, Write::Now, None).await
    }

    /// [`Self::open_session_at`], its binding written as `write` says; for a signing service
    /// request, the request bound with it (see `requests.rs`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn bind_session(
        &self,
        id: SessionId,
        key: KeyId,
        path: &[u32],
        message: [u8; 32],
        mode: TaprootMode,
        write: Write,
        request: Option<&RequestTag>,
    ) -> Result<[u8; 32], Error> {
        let request = match request {
            Some(tag) => {
                let target = RequestTarget::Digest { path: path.to_vec(), mode, message };
                Some(self.check_request(tag, id, key, None, target)?)
            }
            None => None,
        };
        let record = self.key(&key)?;
        let derived = if path.is_empty() { None } else { Some(Arc::new(crate::derive::derive(&record.public, path)?)) };
        let output_key = match &derived {
            Some(d) => crate::taproot::output_key(&d.public, &mode)?,
            None => crate::taproot::x_only(self.tweaked(&record, &mode).verifying_key())?,
        };
        let same_path = |e: &Session| e.derived.as_ref().map(|d| d.path.as_slice()).unwrap_or(&[]) == path;
        // An identical repeat was decided already; anything else goes through the policy's gate
        // (and a session that disappears meanwhile is bound anew with that gate's charge).
        if let Some(e) = self.lock().sessions.get(&id) {
            if (e.key, e.message, e.mode) == (key, message, mode) && same_path(e) {
                return Ok(e.output_key);
            }
            return Err(err(
                ErrorCode::SessionConflict,
                format!("session {id} is bound to another key, message or mode"),
            ));
        }
        let charge = self.raw_digest_charge(id, key, message).await?;
        let now = Instant::now();
        let (durable, records) = {
            let mut s = self.lock();
            if let Some(existing) = s.sessions.get(&id) {
                if (existing.key, existing.message, existing.mode) == (key, message, mode) && same_path(existing) {
                    return Ok(existing.output_key);
                }
                return Err(err(
                    ErrorCode::SessionConflict,
                    format!("session {id} is bound to another key, message or mode"),
                ));
            }
            self.room_for_session(&mut s, now)?;
            if let Some(r) = &request {
                self.bind_request(&mut s, r)?;
            }
            let durable = binding(if write == Write::Now { Binding::Queued } else { Binding::Failed });
            let mut session = Session {
                key,
                epoch: record.epoch(),
                message,
                mode,
                output_key,
                created: now,
                opened_unix: unix_now(),
                durable: durable.clone(),
                charge,
                derived,
                deferred: Vec::new(),
                request,
            };
            let mut records = session.records(id);
            let d = spending::Decision {
                session: id,
                key,
                txid: None,
                input: None,
                raw_digest: true,
                spend: None,
                path: (!path.is_empty()).then_some(path),
            };
            let approved = frostgate_common::protocol::AuditDecision::Approved;
            let requested = session.request.as_ref().and_then(|r| self.request_audit(&mut s, r, &d, write));
            if write == Write::WithFirstMarker {
                session.deferred.extend(requested);
                session.deferred.extend(self.audit_deferred(&mut s, approved, &d));
            } else {
                records.extend(requested);
                records.extend(self.audit(&mut s, approved, "", &d, None));
            }
            s.sessions.insert(id, session);
            (durable, records)
        };
        // Not awaited; if this commit fails, the binding goes again with the first marker of
        // the session (`Bound::with_bindings`), so no share leaves before it is durable.
        if write == Write::Now {
            self.persist_binding(records, durable);
        }
        Ok(output_key)
    }

    /// Binds an attempt to a session and an exact, ascending signer set, durably.
    pub async fn open_attempt(
        &self,
        session: SessionId,
        attempt: AttemptId,
        signers: &[ParticipantId],
    ) -> Result<(), Error> {
        self.bind_attempt(session, attempt, signers, Write::Now)
    }

    /// [`Self::open_attempt`], its binding written as `write` says.
    pub(crate) fn bind_attempt(
        &self,
        session: SessionId,
        attempt: AttemptId,
        signers: &[ParticipantId],
        write: Write,
    ) -> Result<(), Error> {
        {
            let mut s = self.lock();
            let sess =
                s.sessions.get(&session).ok_or_else(|| err(ErrorCode::UnknownSession, format!("session {session}")))?;
            let key = s.keys.get(&sess.key).ok_or_else(|| err(ErrorCode::UnknownKey, format!("key {}", sess.key)))?;
            if !signers.windows(2).all(|w| w[0] < w[1]) {
                return Err(err(ErrorCode::SignerSetInvalid, "signers must be strictly ascending"));
            }
            if signers.len() < key.threshold as usize {
                return Err(err(
                    ErrorCode::SignerSetInvalid,
                    format!("{} signers, threshold {}", signers.len(), key.threshold),
                ));
            }
            if let Some(p) = signers.iter().find(|p| !key.participants.contains_key(p)) {
                return Err(err(ErrorCode::SignerSetInvalid, format!("participant {p} is not in the group")));
            }
            let set: BTreeSet<ParticipantId> = signers.iter().copied().collect();
            if let Some(existing) = s.attempts.get(&attempt) {
                if existing.session == session && existing.signers == set {
                    return Ok(());
                }
                return Err(err(
                    ErrorCode::AttemptConflict,
                    format!("attempt {attempt} is bound to another session or signer set"),
                ));
            }
            if s.attempts.len() >= self.limits.max_attempts {
                self.sweep_locked(&mut s, Instant::now());
                if s.attempts.len() >= self.limits.max_attempts {
                    return Err(err(ErrorCode::RegistryFull, format!("{} open attempts", s.attempts.len())));
                }
            }
            if write == Write::WithFirstMarker {
                s.attempts.insert(attempt, Attempt { session, signers: set, durable: binding(Binding::Failed) });
                return Ok(());
            }
            let durable = binding(Binding::Queued);
            s.attempts.insert(attempt, Attempt { session, signers: set, durable: durable.clone() });
            drop(s);
            // Not awaited, as for sessions.
            self.persist_binding(vec![Record::AttemptBound { attempt, session, signers: signers.to_vec() }], durable);
        }
        Ok(())
    }

    /// Queues a binding record now (in order with later records, e.g. its session's closing)
    /// and records the commit's outcome in `state` in the background.
    fn persist_binding(&self, records: Vec<Record>, state: BindingState) {
        let queued = self.store.persist_detached(records);
        let outcome = state.clone();
        let commit = async move {
            match queued.await {
                Ok(()) => outcome.send_replace(Binding::Durable),
                Err(e) => {
                    tracing::warn!(error = ?e, "binding not committed; it goes with the next marker");
                    outcome.send_replace(Binding::Failed)
                }
            };
        };
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => drop(rt.spawn(commit)),
            Err(_) => {
                tracing::warn!("no runtime: the binding goes with the next marker");
                state.send_replace(Binding::Failed);
            }
        }
    }

    /// Copies what a seat's work needs out of the state, checking the seat is held and signs.
    pub(super) fn bound(s: &State, attempt: &AttemptId, seat: Option<ParticipantId>) -> Result<Bound, Error> {
        let a = s.attempts.get(attempt).ok_or_else(|| err(ErrorCode::UnknownAttempt, format!("attempt {attempt}")))?;
        let sess = s
            .sessions
            .get(&a.session)
            .ok_or_else(|| err(ErrorCode::UnknownSession, format!("session {}", a.session)))?;
        let key = s.keys.get(&sess.key).ok_or_else(|| err(ErrorCode::UnknownKey, format!("key {}", sess.key)))?.clone();
        if sess.epoch != key.epoch() {
            return Err(err(
                ErrorCode::KeyEpochChanged,
                format!(
                    "session {} was opened under key epoch {}, the key is at {}",
                    a.session,
                    sess.epoch,
                    key.epoch()
                ),
            ));
        }
        if let Some(seat) = seat {
            if !a.signers.contains(&seat) || !key.seats.contains_key(&seat) {
                return Err(err(
                    ErrorCode::SeatNotHeld,
                    format!("seat {seat} is not held here or not in attempt {attempt}"),
                ));
            }
        }
        let mut undurable = Vec::new();
        if *sess.durable.borrow() != Binding::Durable {
            for r in sess.records(a.session).into_iter().chain(sess.deferred.iter().cloned()) {
                undurable.push((r, sess.durable.clone()));
            }
        }
        if *a.durable.borrow() != Binding::Durable {
            undurable.push((a.record(*attempt), a.durable.clone()));
        }
        Ok(Bound {
            key,
            message: sess.message,
            mode: sess.mode,
            output_key: sess.output_key,
            signers: a.signers.clone(),
            undurable,
            session: a.session,
            charge: sess.charge,
            derived: sess.derived.clone(),
        })
    }

    /// Round 1: the seat's commitments, the same ones until the nonce is consumed.
    pub fn round1(&self, attempt: AttemptId, seat: ParticipantId) -> Result<CommitmentBytes, Error> {
        let key = {
            let s = self.lock();
            let b = Self::bound(&s, &attempt, Some(seat))?;
            if s.consumed.contains_key(&(attempt, seat)) {
                return Err(err(ErrorCode::NonceAlreadyConsumed, format!("seat {seat} in attempt {attempt}")));
            }
            if let Some(live) = s.nonces.get(&(attempt, seat)) {
                return commitment_bytes(live.commitments.clone());
            }
            b.key
        };
        // Fresh nonces from the OS CSPRNG, hedged with the share (FROST's `commit`). The key
        // package is unsealed without holding the state lock and wiped when it drops.
        let package = key.unseal(&self.custody, seat)?;
        let (nonces, commitments) = round1::commit(package.signing_share(), &mut rand_core::OsRng);
        drop(package);
        let commitments = commitments.serialize().map_err(|e| frost_err(ErrorCode::Internal, "commitments", e))?;
        let now = Instant::now();
        let mut s = self.lock();
        // Re-check under the lock: the attempt may have been aborted or used meanwhile.
        Self::bound(&s, &attempt, Some(seat))?;
        if s.consumed.contains_key(&(attempt, seat)) {
            return Err(err(ErrorCode::NonceAlreadyConsumed, format!("seat {seat} in attempt {attempt}")));
        }
        if let Some(live) = s.nonces.get(&(attempt, seat)) {
            // A concurrent round 1 won; ours is dropped (wiped) unused.
            return commitment_bytes(live.commitments.clone());
        }
        if s.nonces.len() + s.pool.len() >= self.limits.max_live_nonces {
            self.sweep_locked(&mut s, now);
            if s.nonces.len() + s.pool.len() >= self.limits.max_live_nonces {
                return Err(err(ErrorCode::RegistryFull, format!("{} live nonces", s.nonces.len())));
            }
        }
        s.nonces.insert(
            (attempt, seat),
            LiveNonce { nonces, commitments: commitments.clone(), created: now, preprocessed: None },
        );
        commitment_bytes(commitments)
    }

    /// Checks a package against the bound session and attempt. Consumes nothing.
    fn check_package(b: &Bound, package: &SigningPackage, mode: &TaprootMode) -> Result<(), Error> {
        if *mode != b.mode {
            return Err(err(
                ErrorCode::SigningPackageMismatch,
                "the request's Taproot mode differs from the session's",
            ));
        }
        if package.message().as_slice() != b.message {
            return Err(err(ErrorCode::SigningPackageMismatch, "the package's message differs from the session's"));
        }
        let expected: BTreeSet<Identifier> = b.signers.iter().map(|p| identifier(*p)).collect::<Result<_, _>>()?;
        let got: BTreeSet<Identifier> = package.signing_commitments().keys().copied().collect();
        if got != expected {
            return Err(err(
                ErrorCode::SigningPackageMismatch,
                format!("the package has {} signers; the attempt has exactly {}", got.len(), expected.len()),
            ));
        }
        Ok(())
    }

    /// Round 2: verify, consume durably, then sign and release.
    pub async fn round2(
        &self,
        attempt: AttemptId,
        seat: ParticipantId,
        mode: TaprootMode,
        package_bytes: &[u8],
    ) -> Result<SignatureShareBytes, Error> {
        self.round2_then(attempt, seat, mode, package_bytes, |_| ()).await.map(|(share, ())| share)
    }

    /// [`Engine::round2`], then `then` on the seat's key package while it is unsealed (one
    /// unseal, the HSM's gate on every signature, serves both: a preprocessed signing makes its
    /// replacement commitments here). `then` runs only once the share is computed.
    pub(crate) async fn round2_then<R>(
        &self,
        attempt: AttemptId,
        seat: ParticipantId,
        mode: TaprootMode,
        package_bytes: &[u8],
        then: impl FnOnce(&frost_secp256k1_tr::keys::KeyPackage) -> R,
    ) -> Result<(SignatureShareBytes, R), Error> {
        let package = decode_package(package_bytes)?;
        let marker = (attempt, seat);
        let bound = {
            let mut s = self.lock();
            let b = Self::bound(&s, &attempt, Some(seat))?;
            if s.consumed.contains_key(&marker) {
                return Err(err(ErrorCode::NonceAlreadyConsumed, format!("seat {seat} in attempt {attempt}")));
            }
            let live = s
                .nonces
                .get(&marker)
                .ok_or_else(|| err(ErrorCode::NonceUnavailable, format!("seat {seat} in attempt {attempt}")))?;
            Self::check_package(&b, &package, &mode)?;
            let own = package
                .signing_commitments()
                .get(&identifier(seat)?)
                .map(SigningCommitments::serialize)
                .transpose()
                .map_err(|e| frost_err(ErrorCode::InvalidEncoding, "own commitment", e))?;
            if own.as_deref() != Some(live.commitments.as_slice()) {
                return Err(err(
                    ErrorCode::SigningPackageMismatch,
                    "this seat's commitment is not the one issued in round 1",
                ));
            }
            // The policy window, checked and charged under the same lock (once per charge id),
            // after the audit trail has room for the signed record.
            match self.room_for_signed(&s).and_then(|()| self.take_charge(&mut s, &b.charge)) {
                Err(e) => Err((e, b)),
                Ok(charged) => {
                    // Check-and-set under the one lock: from here on no other request can use
                    // this nonce.
                    s.consumed.insert(marker, Marker::Pending);
                    let signed = self.audit(
                        &mut s,
                        frostgate_common::protocol::AuditDecision::Signed,
                        "",
                        &share_decision(&b),
                        Some((attempt, seat)),
                    );
                    Ok((b, charged, signed))
                }
            }
        };
        let (bound, charged, signed) = match bound {
            Ok(v) => v,
            Err((e, b)) => {
                return Err(self.refuse(share_decision(&b), e).await);
            }
        };
        let mut own = vec![Record::NonceConsumed { attempt, seat }];
        own.extend(charged.clone());
        own.extend(signed.clone());
        let records = bound.with_bindings(own).await;
        let persisted = self.store.persist(records.clone()).await;
        let live = {
            let mut s = self.lock();
            match persisted {
                Ok(()) => {
                    bound.bindings_durable();
                    self.keep_written(&mut s, &records);
                    Self::charge_durable(&mut s, &charged);
                    Self::settle(&mut s, marker);
                    s.nonces.remove(&marker)
                }
                Err(PersistError::NotWritten(e)) => {
                    s.consumed.remove(&marker);
                    Self::forget_audit(&mut s, &signed);
                    return Err(err(
                        ErrorCode::StoreCommitFailed,
                        format!("consumed marker not written ({e}); nonce kept"),
                    ));
                }
                Err(PersistError::Unknown(e)) => {
                    Self::settle(&mut s, marker);
                    drop(s.nonces.remove(&marker));
                    return Err(err(
                        ErrorCode::StoreOutcomeUnknown,
                        format!("consumed marker outcome unknown ({e}); nonce wiped"),
                    ));
                }
            }
        };
        let live =
            live.ok_or_else(|| err(ErrorCode::NonceUnavailable, "the nonce was wiped before it could be used"))?;
        let base = bound.key.unseal(&self.custody, seat)?;
        let share = match &bound.derived {
            Some(d) => sign(&package, live, &d.key_package(&base)?, &mode)?,
            None => sign(&package, live, &base, &mode)?,
        };
        let share = SignatureShareBytes::new(share.serialize()).map_err(|e| err(ErrorCode::Internal, e))?;
        let after = then(&base);
        Ok((share, after))
    }

    /// Checks one share as it arrives.
    pub fn verify_share(
        &self,
        attempt: AttemptId,
        package_bytes: &[u8],
        share: &SignerShare,
    ) -> Result<ShareVerdict, Error> {
        let package = decode_package(package_bytes)?;
        let b = Self::bound(&self.lock(), &attempt, None)?;
        let mode = b.mode;
        Self::check_package(&b, &package, &mode)?;
        if !b.signers.contains(&share.signer) {
            return Ok(ShareVerdict::Indeterminate);
        }
        let Ok(sig_share) = SignatureShare::deserialize(share.signature_share.as_inner()) else {
            return Ok(ShareVerdict::Invalid);
        };
        let tweaked = self.tweaked_bound(&b);
        let id = identifier(share.signer)?;
        let Some(verifying_share) = tweaked.verifying_shares().get(&id) else {
            return Ok(ShareVerdict::Indeterminate);
        };
        Ok(
            match frost_core::verify_signature_share(id, verifying_share, &sig_share, &package, tweaked.verifying_key())
            {
                Ok(()) => ShareVerdict::Valid,
                Err(_) => ShareVerdict::Invalid,
            },
        )
    }

    /// Aggregates the attempt's shares; records completion durably before releasing.
    pub async fn aggregate(
        &self,
        attempt: AttemptId,
        mode: TaprootMode,
        package_bytes: &[u8],
        shares: &[SignerShare],
    ) -> Result<AggregateOutcome, Error> {
        let package = decode_package(package_bytes)?;
        let bound = {
            let mut s = self.lock();
            let b = Self::bound(&s, &attempt, None)?;
            if s.completed.contains_key(&attempt) {
                return Err(err(
                    ErrorCode::AttemptCompleted,
                    format!("attempt {attempt} already signed; open a new attempt"),
                ));
            }
            Self::check_package(&b, &package, &mode)?;
            let given: BTreeSet<ParticipantId> = shares.iter().map(|s| s.signer).collect();
            if given.len() != shares.len() || given != b.signers {
                return Err(err(
                    ErrorCode::SigningPackageMismatch,
                    "exactly one share per signer of the attempt is required",
                ));
            }
            s.completed.insert(attempt, Marker::Pending);
            b
        };
        let result = self.aggregate_unlocked(&bound, &package, shares);
        let signature = match result {
            Ok(AggregateOutcome::Signed { signature, .. }) => signature,
            other => {
                self.lock().completed.remove(&attempt);
                return other;
            }
        };
        let record = Record::AttemptCompleted { attempt, message: bound.message, mode: bound.mode };
        let records = bound.with_bindings(vec![record]).await;
        let persisted = self.store.persist(records.clone()).await;
        let mut s = self.lock();
        let keep = |s: &mut State| {
            // An attempt aborted or closed meanwhile takes its markers with it.
            if s.attempts.contains_key(&attempt) {
                s.completed.insert(attempt, Marker::Kept);
            } else {
                s.completed.remove(&attempt);
            }
        };
        match persisted {
            Ok(()) => {
                bound.bindings_durable();
                self.keep_written(&mut s, &records);
                keep(&mut s);
                Ok(AggregateOutcome::Signed { signature, output_key: bound.output_key })
            }
            Err(PersistError::NotWritten(e)) => {
                s.completed.remove(&attempt);
                Err(err(ErrorCode::StoreCommitFailed, format!("completed marker not written ({e})")))
            }
            Err(PersistError::Unknown(e)) => {
                keep(&mut s);
                Err(err(ErrorCode::StoreOutcomeUnknown, format!("completed marker outcome unknown ({e})")))
            }
        }
    }

    fn aggregate_unlocked(
        &self,
        b: &Bound,
        package: &SigningPackage,
        shares: &[SignerShare],
    ) -> Result<AggregateOutcome, Error> {
        let mut map = BTreeMap::new();
        let mut undecodable = Vec::new();
        for share in shares {
            match SignatureShare::deserialize(share.signature_share.as_inner()) {
                Ok(s) => {
                    map.insert(identifier(share.signer)?, s);
                }
                Err(_) => undecodable.push(share.signer),
            }
        }
        if !undecodable.is_empty() {
            return culprits(undecodable);
        }
        // The enclave's own key package, tweaked for the session: never one from the request.
        let tweaked = self.tweaked_bound(b);
        // Fast path without per-share checks; the result is verified (by FROST and again below),
        // so a bad share cannot slip through. Only if it fails are all shares checked, to name
        // every culprit (O(t) per share).
        let result = match frost_core::aggregate_custom(package, &map, &tweaked, CheaterDetection::Disabled) {
            Ok(signature) => Ok(signature),
            Err(_) => frost_core::aggregate_custom(package, &map, &tweaked, CheaterDetection::AllCheaters),
        };
        match result {
            Ok(signature) => {
                tweaked
                    .verifying_key()
                    .verify(&b.message, &signature)
                    .map_err(|e| frost_err(ErrorCode::SigningFailed, "self-verification", e))?;
                let bytes = signature.serialize().map_err(|e| frost_err(ErrorCode::Internal, "signature", e))?;
                let (r, s) = (bytes.get(..32), bytes.get(32..));
                match (r.and_then(|r| r.try_into().ok()), s.and_then(|s| s.try_into().ok()), bytes.len()) {
                    (Some(r), Some(s), 64) => {
                        Ok(AggregateOutcome::Signed { signature: Bip340Signature { r, s }, output_key: b.output_key })
                    }
                    _ => Err(err(ErrorCode::Internal, format!("signature encoding is {} bytes, not 64", bytes.len()))),
                }
            }
            Err(frost_core::Error::InvalidSignatureShare { culprits: ids }) => {
                let by_id: BTreeMap<Identifier, ParticipantId> =
                    b.key.participants.iter().map(|(p, i)| (*i, *p)).collect();
                culprits(ids.iter().filter_map(|i| by_id.get(i).copied()).collect())
            }
            Err(e) => Err(frost_err(ErrorCode::SigningFailed, "aggregate", e)),
        }
    }
}

fn culprits(mut list: Vec<ParticipantId>) -> Result<AggregateOutcome, Error> {
    list.sort();
    list.dedup();
    Ok(AggregateOutcome::InvalidShares {
        candidate_culprits: Signers::new(list).map_err(|e| err(ErrorCode::Internal, e))?,
    })
}

pub(super) fn commitment_bytes(bytes: Vec<u8>) -> Result<CommitmentBytes, Error> {
    CommitmentBytes::new(bytes).map_err(|e| err(ErrorCode::Internal, e))
}

/// Signs with a nonce pair taken by value: it is dropped (wiped) when this returns.
fn sign(
    package: &SigningPackage,
    live: LiveNonce,
    key_package: &frost_secp256k1_tr::keys::KeyPackage,
    mode: &TaprootMode,
) -> Result<SignatureShare, Error> {
    let LiveNonce { nonces, .. } = live;
    let result = match mode {
        TaprootMode::Untweaked => round2::sign(package, &nonces, key_package),
        TaprootMode::Bip86 => round2::sign_with_tweak(package, &nonces, key_package, None),
        TaprootMode::ScriptTree { merkle_root } => {
            round2::sign_with_tweak(package, &nonces, key_package, Some(merkle_root))
        }
    };
    drop(nonces);
    result.map_err(|e| frost_err(ErrorCode::SigningFailed, "round 2", e))
}

/// What an audit record of a share (or of its refusal) says.
fn share_decision(b: &Bound) -> spending::Decision<'_> {
    spending::Decision {
        session: b.session,
        key: b.key.key_id,
        txid: None,
        input: None,
        raw_digest: false,
        spend: None,
        path: b.derived.as_ref().map(|d| d.path.as_slice()),
    }
}
