//! The error model: one error type, stable codes, recovery classes.
//!
//! Invariants: a code's string and its recovery class never change once released; variants are
//! only appended (the wire carries the variant index, and the boundary manifest pins the order).
//! Messages are for people and never contain secret material.

use crate::bounded::Text;
use serde::{Deserialize, Serialize};
use std::fmt;

/// What a caller does when it receives an error. Documented in `ARCHITECTURE.md`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RecoveryClass {
    /// Transient. Send the same request again (with backoff). The enclave's markers make a
    /// repeated request safe: if it already took effect, the retry gets a `new_attempt` error.
    Retry,
    /// This signing attempt can never complete. Do not resend it; open a new attempt (fresh
    /// nonces, possibly another signer set) in the same session.
    NewAttempt,
    /// The request itself is wrong. Resending it unchanged fails the same way; fix the caller.
    FixRequest,
    /// This node cannot serve until an operator acts (HSM, configuration, tampered store).
    /// Do not retry automatically; route the work to other signers and raise an alert.
    Operator,
}

impl RecoveryClass {
    /// Stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            RecoveryClass::Retry => "retry",
            RecoveryClass::NewAttempt => "new_attempt",
            RecoveryClass::FixRequest => "fix_request",
            RecoveryClass::Operator => "operator",
        }
    }
}

impl fmt::Display for RecoveryClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $code:literal, $class:ident;)*) => {
        /// Every error frostgate reports. Append only.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// All codes, in wire order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant),*];

            /// Stable snake_case code.
            pub const fn code(self) -> &'static str {
                match self { $(ErrorCode::$variant => $code,)* }
            }

            /// What the caller does about it.
            pub const fn recovery_class(self) -> RecoveryClass {
                match self { $(ErrorCode::$variant => RecoveryClass::$class,)* }
            }

            /// Looks a code up by its string.
            pub fn from_code(code: &str) -> Option<ErrorCode> {
                Self::ALL.iter().copied().find(|c| c.code() == code)
            }
        }
    };
}

error_codes! {
    /// A frame's length prefix exceeds `MAX_FRAME_LEN`; rejected before allocation.
    FrameTooLarge = "frame_too_large", FixRequest;
    /// The connection ended in the middle of a frame, or a frame is shorter than its header.
    FrameTruncated = "frame_truncated", FixRequest;
    /// A frame's body decoded with bytes left over.
    FrameTrailingBytes = "frame_trailing_bytes", FixRequest;
    /// The frame's protocol version is not the one this build speaks.
    UnsupportedProtocolVersion = "unsupported_protocol_version", FixRequest;
    /// The frame names a message kind this build does not know.
    UnknownMessageKind = "unknown_message_kind", FixRequest;
    /// The frame's body does not decode as the message kind it names (or breaks a field bound).
    MalformedMessage = "malformed_message", FixRequest;
    /// A well-formed message that is not valid here: a reply where a request was expected,
    /// a request sent in the wrong direction, a reply to no outstanding request.
    UnexpectedMessage = "unexpected_message", FixRequest;
    /// The connecting process runs as a Unix user the enclave is not configured to serve.
    PeerNotAuthorized = "peer_not_authorized", Operator;
    /// The connection closed before the reply arrived. The request may or may not have taken
    /// effect; resending it is safe.
    ChannelClosed = "channel_closed", Retry;
    /// Reading or writing the connection failed.
    ChannelIo = "channel_io", Retry;
    /// The peer already has `MAX_IN_FLIGHT` requests outstanding on this connection.
    TooManyInFlight = "too_many_in_flight", Retry;
    /// No reply within the caller's deadline. Resending is safe.
    RequestTimeout = "request_timeout", Retry;
    /// The enclave process could not be started or reached.
    EnclaveUnavailable = "enclave_unavailable", Retry;
    /// A configuration file or flag is missing, unknown or invalid.
    ConfigInvalid = "config_invalid", Operator;
    /// A bug: an invariant the code relies on did not hold. The request did not take effect.
    Internal = "internal", Operator;
    /// The enclave runs without HSM custody configured, so it holds no keys and refuses to sign.
    CustodyNotConfigured = "custody_not_configured", Operator;
    /// The PKCS#11 module could not be loaded or initialized.
    HsmModuleUnavailable = "hsm_module_unavailable", Operator;
    /// No token (or more than one) carries the configured label.
    HsmTokenNotFound = "hsm_token_not_found", Operator;
    /// The token rejected the PIN.
    HsmPinIncorrect = "hsm_pin_incorrect", Operator;
    /// The token's user PIN is locked.
    HsmPinLocked = "hsm_pin_locked", Operator;
    /// The PIN source (file or environment variable) is missing, unreadable or empty.
    HsmPinUnavailable = "hsm_pin_unavailable", Operator;
    /// A key object this enclave needs is not on the token (run `frostgate token init`).
    HsmObjectMissing = "hsm_object_missing", Operator;
    /// A key object on the token is weaker than its role allows (extractable, not sensitive,
    /// extra usages, wrong type or size, duplicated label).
    HsmObjectPolicyViolation = "hsm_object_policy_violation", Operator;
    /// `token init` found this enclave's objects already on the token and was not told to rotate.
    HsmObjectsExist = "hsm_objects_exist", FixRequest;
    /// A PKCS#11 call failed unexpectedly; the message names the function and return value.
    HsmOperationFailed = "hsm_operation_failed", Retry;
    /// A sealed blob did not authenticate: tampered, truncated, wrong associated data, wrong
    /// token or unknown format. Deliberately one code for every cause.
    UnsealFailed = "unseal_failed", Operator;
    /// No key with this id is held by this enclave.
    UnknownKey = "unknown_key", FixRequest;
    /// No open session with this id (never opened, expired, or lost in a restart): open the
    /// session and a new attempt again.
    UnknownSession = "unknown_session", NewAttempt;
    /// The session id is already bound to a different key, message or Taproot mode.
    SessionConflict = "session_conflict", FixRequest;
    /// No open attempt with this id (never opened, expired, or lost in a restart).
    UnknownAttempt = "unknown_attempt", NewAttempt;
    /// The attempt id is already bound to a different session or signer set.
    AttemptConflict = "attempt_conflict", FixRequest;
    /// The signer set is empty, unsorted, duplicated, smaller than the threshold, or names a
    /// participant the key does not have.
    SignerSetInvalid = "signer_set_invalid", FixRequest;
    /// This enclave holds no share for that participant seat, or the seat is not in the attempt.
    SeatNotHeld = "seat_not_held", FixRequest;
    /// No live nonce for this attempt and seat (expired, aborted, wiped after an unknown
    /// outcome, or lost in a restart).
    NonceUnavailable = "nonce_unavailable", NewAttempt;
    /// This seat's nonce for this attempt was already consumed; no second share is ever released.
    NonceAlreadyConsumed = "nonce_already_consumed", NewAttempt;
    /// The signing package does not match the session and attempt: message, signer set, this
    /// seat's own commitment, or the Taproot mode. Nothing was consumed.
    SigningPackageMismatch = "signing_package_mismatch", FixRequest;
    /// The attempt already produced (or is producing) its signature; open a new attempt to sign
    /// again.
    AttemptCompleted = "attempt_completed", NewAttempt;
    /// A FROST encoding (package, commitments, share, key package) did not decode.
    InvalidEncoding = "invalid_encoding", FixRequest;
    /// A bounded registry (sessions, attempts, live nonces) is full; retry after expiry.
    RegistryFull = "registry_full", Retry;
    /// The marker could not be made durable and is known not to have been written; it was rolled
    /// back and the nonce stays live. Retry the same request.
    StoreCommitFailed = "store_commit_failed", Retry;
    /// The marker's durability is unknown (lost acknowledgement, crash). The marker is kept and
    /// the nonce wiped; this attempt cannot complete.
    StoreOutcomeUnknown = "store_outcome_unknown", NewAttempt;
    /// A development-only request (e.g. the test dealer) sent to an enclave built without it.
    DevFeatureDisabled = "dev_feature_disabled", FixRequest;
    /// FROST refused to sign or aggregate after the inputs were validated; nothing was released.
    SigningFailed = "signing_failed", NewAttempt;
    /// The enclave has not (yet, or since an unknown commit outcome) received and verified the
    /// host's store; the host must stream it (`StoreLoad`). Signing is refused until then.
    StoreNotLoaded = "store_not_loaded", Retry;
    /// A store record failed its MAC, or the chain is broken (gap, reorder, fork, bad format).
    StoreTampered = "store_tampered", Operator;
    /// The store is older than the HSM anchor (records deleted or an old copy restored).
    StoreRollbackDetected = "store_rollback_detected", Operator;
    /// No DKG with this id is running here (never started, aborted, or lost in a restart).
    DkgUnknown = "dkg_unknown", NewAttempt;
    /// The DKG configuration is invalid here: this enclave's identity key is not the one pinned
    /// for its participant id, a bad threshold, duplicate or unsorted participants.
    DkgConfigInvalid = "dkg_config_invalid", FixRequest;
    /// A DKG request arrived out of order (e.g. round 2 before round 1).
    DkgPhase = "dkg_phase", FixRequest;
    /// A round-1 proof of knowledge failed; the culprit is named. The DKG is aborted.
    DkgInvalidProof = "dkg_invalid_proof", NewAttempt;
    /// A round-2 package did not decrypt or authenticate; the sender is named. Aborted.
    DkgDecryptFailed = "dkg_decrypt_failed", NewAttempt;
    /// A round-2 share failed verification against its sender's commitment; the sender is a
    /// candidate culprit (an equivocating relay causes the same). Aborted.
    DkgInvalidShare = "dkg_invalid_share", NewAttempt;
    /// The participants' transcript confirmations differ or do not verify: some participant saw
    /// a different transcript (equivocation). Aborted; no key is activated.
    DkgTranscriptMismatch = "dkg_transcript_mismatch", NewAttempt;
    /// A signer node's network API could not be reached: connection refused or lost, TLS
    /// handshake refused (e.g. an unpinned certificate on either side), or no gRPC answer.
    NodeUnavailable = "node_unavailable", Retry;
    /// The network API was configured to listen on a non-loopback address without mutual TLS;
    /// the node refuses to start.
    TlsRequired = "tls_required", Operator;
    /// The HSM holds no store anchor object. `token init` creates it, so a missing anchor means
    /// it was deleted: rollback detection cannot work without it, and the store is refused.
    StoreAnchorMissing = "store_anchor_missing", Operator;
    /// The HSM's store anchor object is malformed, public, duplicated with another value, or its
    /// authenticator does not verify under the store key (forged or copied from another token).
    StoreAnchorInvalid = "store_anchor_invalid", Operator;
    /// A path given to listen on exists and is not a stale socket; it is never deleted.
    ListenPathOccupied = "listen_path_occupied", Operator;
    /// The caller (one TLS identity, or one local client) holds its quota of open sessions,
    /// attempts or DKGs; finish or close some, or wait for their expiry.
    QuotaExceeded = "quota_exceeded", Retry;
    /// The PSBT does not parse, an input lacks `witness_utxo` or `tap_internal_key`, an input is
    /// spent twice, the input index does not exist, or the amounts do not add up.
    PsbtInvalid = "psbt_invalid", FixRequest;
    /// The PSBT input to sign does not spend this key's output (another `tap_internal_key`, or a
    /// `witness_utxo` paying another output key).
    PsbtWrongKey = "psbt_wrong_key", FixRequest;
    /// The enclave's spending policy refuses this signature; the message names the rule and the
    /// numbers (e.g. `max_sats_per_window: 120000000 requested, 30000000 left`).
    PolicyViolation = "policy_violation", FixRequest;
    /// A derivation path that cannot be signed: a hardened step, deeper than the enclave's limit,
    /// or empty.
    DerivationInvalid = "derivation_invalid", FixRequest;
    /// The key's shares were refreshed since this session was opened: it is refused; open a new
    /// session.
    KeyEpochChanged = "key_epoch_changed", NewAttempt;
    /// A seat backup does not open with the configured recovery key, or its share is not the
    /// seat's (checked against the verifying share), or it is of another key. Nothing restored.
    BackupInvalid = "backup_invalid", FixRequest;
    /// No live preprocessed commitment with this id for this key and seat: never issued by this
    /// enclave, already used, expired, or lost in a restart. Nothing was consumed; drop the
    /// commitments held for this node, preprocess again and sign in a new attempt.
    CommitmentUnknown = "commitment_unknown", NewAttempt;
    /// The host store's database file is not a database, or SQLite reports it corrupt. It is left
    /// exactly as found (no checkpoint, no write-ahead log removed); an operator inspects it and
    /// restores a copy (a rollback is then detected against the HSM anchor).
    StoreDamaged = "store_damaged", Operator;
    /// The audit trail holds as many signed decisions as `[audit] max_signed` allows: no share
    /// leaves until the auditor acknowledges an export (`frostgate audit acknowledge`), so no
    /// decision that released a share is ever dropped unexported.
    AuditTrailFull = "audit_trail_full", Operator;
    /// An audit acknowledgement does not verify under the pinned auditor key over the records
    /// this enclave keeps (none pinned, another export, or the trail changed since): nothing left.
    AuditAckInvalid = "audit_ack_invalid", FixRequest;
    /// A key-encryption-key rotation was asked for sooner after the last completed one than the
    /// enclave's operator allows (`--kek-rotation-interval-secs`). An unfinished rotation is
    /// always finished. Nothing changed.
    KekRotationTooSoon = "kek_rotation_too_soon", Operator;
    /// A seat backup is of an earlier epoch than the one the key's pinned peers state they hold
    /// (a refresh happened since): restoring it would serve a dead sharing. Nothing restored; take
    /// a current backup or repair the seat.
    BackupStale = "backup_stale", FixRequest;
    /// The token lacks a mechanism or capability frostgate needs (the message names every one,
    /// or the token's own command that makes a key it cannot generate through PKCS#11). Nothing
    /// was created.
    HsmMechanismMissing = "hsm_mechanism_missing", Operator;
    /// The token's recorded custody profile, a sealed blob's profile or the configured profile
    /// disagree: the enclave never re-chooses a profile at boot (no silent downgrade; a deliberate
    /// migration is a new token and a restore).
    CustodyProfileMismatch = "custody_profile_mismatch", Operator;
    /// A TEE attestation document did not verify (the message names the check that failed:
    /// its encoding, the COSE signature, the chain to the pinned root at the document's time, a
    /// PCR, debug mode, the nonce, the attested key, its age). Nothing is trusted on its word.
    AttestationInvalid = "attestation_invalid", Operator;
    /// A signing service request is not well formed (its id, key, digest, PSBT, mode or labels:
    /// the message names which). Nothing was stored.
    RequestInvalid = "request_invalid", FixRequest;
    /// A request id already names another request of this client (another body): nothing else
    /// happened. Use a new id, or send the same body to see the stored request.
    RequestConflict = "request_conflict", FixRequest;
    /// A signing request of it may have reached a node, so it can no longer be cancelled (after a
    /// timeout nobody can know whether a share was released).
    RequestNotCancellable = "request_not_cancellable", FixRequest;
    /// The client's certificate is not allowed this key or this kind of request.
    ClientNotAuthorized = "client_not_authorized", FixRequest;
    /// The service's request log (SQLite or PostgreSQL) cannot be reached; nothing accepted is
    /// lost. Retry.
    StoreUnavailable = "store_unavailable", Retry;
    /// No request with this id for this client.
    RequestUnknown = "request_unknown", FixRequest;
    /// A signing service request is older than the enclaves keep requests bound
    /// (`REQUEST_TTL_SECS` after its acceptance), or accepted in the future: nothing is signed
    /// for it. Submit a new request.
    RequestExpired = "request_expired", FixRequest;
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error with its code and a human-readable message. This is also the wire form: it crosses
/// the channel as the `Error` message.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Error {
    code: ErrorCode,
    message: Text,
}

impl Error {
    /// Builds an error. The message is truncated (at a character boundary) to the text bound.
    pub fn new(code: ErrorCode, message: impl fmt::Display) -> Self {
        let mut message = message.to_string();
        if message.len() > Text::MAX_LEN {
            let mut end = Text::MAX_LEN;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
        }
        let message = Text::new(message).unwrap_or_else(|_| {
            // Unreachable: truncated to the bound above.
            Text::new(String::new()).unwrap_or_else(|_| unreachable!("empty text fits"))
        });
        Error { code, message }
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// What the caller does about it.
    pub fn recovery_class(&self) -> RecoveryClass {
        self.code.recovery_class()
    }

    /// The human-readable detail.
    pub fn message(&self) -> &str {
        self.message.as_inner()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.code.recovery_class(), self.message())
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for Error {}

/// Shorthand.
pub type Result<T, E = Error> = std::result::Result<T, E>;
