//! Markers and their durability: what must be on disk before a share or a signature leaves.
//!
//! Invariant: the engine releases a signature share only after [`MarkerStore::persist`] returned
//! `Ok` for the nonce's consumed marker, and a signature only after its completed marker did.
//! The host store ([`crate::store::ChainedStore`]) implements this trait over the channel;
//! [`MemoryStore`] keeps markers for the life of the process (in-process tests and tools only).

use frostgate_common::error::Error;
use frostgate_common::ids::{AttemptId, KeyId, ParticipantId, SessionId};
use frostgate_common::protocol::TaprootMode;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

/// One durable record of public state. Its postcard encoding is a host store record's body.
/// Append only: variants are matched by index in stored data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// This seat's nonce for this attempt was consumed (at most one share, ever).
    NonceConsumed {
        /// The attempt.
        attempt: AttemptId,
        /// The seat.
        seat: ParticipantId,
    },
    /// The attempt produced its signature over this message and Taproot mode.
    AttemptCompleted {
        /// The attempt.
        attempt: AttemptId,
        /// The signed message.
        message: [u8; 32],
        /// The Taproot mode (and with it the merkle root).
        mode: TaprootMode,
    },
    /// A key: its public key package and the sealed key packages of the seats held here.
    KeyAdded {
        /// The key id.
        key: KeyId,
        /// `PublicKeyPackage` encoding.
        public_key_package: Vec<u8>,
        /// (seat, key epoch, sealed blob).
        seats: Vec<(ParticipantId, u64, Vec<u8>)>,
    },
    /// A session binding.
    SessionBound {
        /// The session.
        session: SessionId,
        /// The key.
        key: KeyId,
        /// The message.
        message: [u8; 32],
        /// The mode.
        mode: TaprootMode,
        /// Unix seconds when it was opened (for expiry across restarts).
        opened_unix: u64,
    },
    /// An attempt binding.
    AttemptBound {
        /// The attempt.
        attempt: AttemptId,
        /// Its session.
        session: SessionId,
        /// Its signers, ascending.
        signers: Vec<ParticipantId>,
    },
    /// A session expired: it, its attempts and their markers are gone.
    SessionExpired {
        /// The session.
        session: SessionId,
    },
    /// A snapshot of the whole state starts here; records before it may be deleted once the
    /// matching end is durable.
    SnapshotBegin {
        /// Snapshot id.
        id: u64,
    },
    /// The snapshot with this id is complete.
    SnapshotEnd {
        /// Snapshot id.
        id: u64,
    },
    /// A session bound under the policy, with what its first share charges to the window.
    SessionCharged {
        /// The session.
        session: SessionId,
        /// The key.
        key: KeyId,
        /// The message (the sighash on the PSBT path).
        message: [u8; 32],
        /// The mode.
        mode: TaprootMode,
        /// Unix seconds when it was opened.
        opened_unix: u64,
        /// The charge id (a txid, or the raw digest).
        charge_id: [u8; 32],
        /// Satoshis charged.
        sats: u64,
        /// The policy that approved the session.
        policy_hash: [u8; 32],
    },
    /// A charge against the policy window (once per charge id).
    Charged {
        /// The charge id.
        id: [u8; 32],
        /// Satoshis.
        sats: u64,
        /// When (enclave clock, Unix seconds).
        at_unix: u64,
    },
    /// One decision, for the audit trail.
    Audit(frostgate_common::protocol::AuditEntry),
    /// The session (bound just before) signs for the child of its key at this unhardened path.
    SessionPath {
        /// The session.
        session: SessionId,
        /// The path.
        path: Vec<u32>,
    },
    /// The auditor acknowledged an export: the audit records kept up to this sequence number
    /// (at this point of the chain) left the trail.
    AuditAcknowledged {
        /// The acknowledged sequence number.
        through: u64,
    },
    /// The HSM key-encryption key was rotated (with the resealed keys, in one commit).
    KekRotated {
        /// When (enclave clock, Unix seconds).
        at_unix: u64,
    },
    /// A refreshed key, prepared (phase 1 of a refresh's activation) but not in force: the key
    /// keeps signing at its current epoch until `RefreshCommit` installs this one.
    KeyPrepared {
        /// The refresh that prepared it (its DKG id).
        dkg: frostgate_common::ids::DkgId,
        /// The key id.
        key: KeyId,
        /// `PublicKeyPackage` encoding of the next epoch.
        public_key_package: Vec<u8>,
        /// (seat, key epoch, sealed blob).
        seats: Vec<(ParticipantId, u64, Vec<u8>)>,
    },
    /// The key's record just before is the one this refresh put in force (with that record).
    KeyCommitted {
        /// The key id.
        key: KeyId,
        /// The refresh.
        dkg: frostgate_common::ids::DkgId,
    },
    /// The prepared record of this refresh was dropped: a participant voted it never prepared it.
    PreparedAbandoned {
        /// The key id.
        key: KeyId,
        /// The refresh.
        dkg: frostgate_common::ids::DkgId,
    },
    /// A signing service request is bound to what it signs (until its TTL after acceptance).
    RequestBound {
        /// The client's certificate fingerprint (zero: the development client).
        client: [u8; 32],
        /// The client's request id.
        request: String,
        /// When the service accepted it (Unix seconds).
        accepted_unix: u64,
        /// The key.
        key: KeyId,
        /// What it signs.
        target: RequestTarget,
    },
}

/// What a signing service request signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RequestTarget {
    /// A digest under the key, or under its child at `path`, with a Taproot mode.
    Digest {
        /// The unhardened path (empty: the key itself).
        path: Vec<u32>,
        /// The Taproot mode.
        mode: TaprootMode,
        /// The digest.
        message: [u8; 32],
    },
    /// The inputs of this transaction spent by the key.
    Psbt {
        /// The unsigned transaction's id.
        txid: [u8; 32],
    },
}

/// Why a persist did not succeed, split by what is known about the write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PersistError {
    /// Known not to have become visible: the engine rolls the marker back; nonces stay live.
    NotWritten(Error),
    /// Unknown whether it became durable (lost acknowledgement, crash): the engine keeps the
    /// marker and wipes the nonces.
    Unknown(Error),
}

/// The future a persist returns.
pub type PersistFuture<'a> = Pin<Box<dyn Future<Output = Result<(), PersistError>> + Send + 'a>>;

/// Makes markers durable. `Ok` means durable and acknowledged.
pub trait MarkerStore: Send + Sync + std::fmt::Debug {
    /// Persists the records atomically (all or none).
    fn persist(&self, records: Vec<Record>) -> PersistFuture<'_>;

    /// Enqueues records now (in call order with every other record) and returns their outcome
    /// to await later, or to drop. For bindings and closings; never for markers that must be
    /// durable before something leaves.
    fn persist_detached(&self, records: Vec<Record>) -> PersistFuture<'static>;

    /// Whether the store can take records now; signing is refused otherwise.
    fn ready(&self) -> Result<(), Error> {
        Ok(())
    }
}

/// Markers held in process memory: durable for the life of the process only. Used until the
/// host store is configured, and by tests.
#[derive(Debug, Default)]
pub struct MemoryStore {
    records: Mutex<Vec<Record>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every record persisted so far.
    pub fn records(&self) -> Vec<Record> {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl MarkerStore for MemoryStore {
    fn persist(&self, records: Vec<Record>) -> PersistFuture<'_> {
        Box::pin(async move {
            self.records.lock().unwrap_or_else(|p| p.into_inner()).extend(records);
            Ok(())
        })
    }

    fn persist_detached(&self, records: Vec<Record>) -> PersistFuture<'static> {
        self.records.lock().unwrap_or_else(|p| p.into_inner()).extend(records);
        Box::pin(std::future::ready(Ok(())))
    }
}
