//! The MAC chain of the host store.
//!
//! `mac_n = HMAC-SHA256(K_s, domain | version_n (u64 BE) | mac_{n-1} | body_n)`,
//! with `mac_0` = 32 zero bytes and `K_s` derived inside the HSM from the MAC root key at boot.
//! `domain` is `"frostgate/store/v1/commit-end"` for the last record of each commit and
//! `"frostgate/store/v1"` for the others, so a verified store says whether it ends on a commit
//! boundary (a store cut inside a commit cannot pass for a whole one).
//! Invariant: [`Loader`] accepts only a contiguous chain whose every MAC verifies, starting at
//! version 1 or at a complete snapshot; anything else is `store_tampered`.

use crate::markers::Record;
use frostgate_common::bounded::RecordBody;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::StoreRecord;
use zeroize::Zeroizing;

const DOMAIN: &[u8] = b"frostgate/store/v1";
/// The domain of a commit's last record.
const COMMIT_END_DOMAIN: &[u8] = b"frostgate/store/v1/commit-end";
const ANCHOR_DOMAIN: &[u8] = b"frostgate/anchor/v1";
/// The domain of an anchor slot that has a partner slot (see `store::anchor`).
const PAIRED_ANCHOR_DOMAIN: &[u8] = b"frostgate/anchor/v1/paired";

/// The chain head: the last record's version and MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Version (0 = empty store).
    pub version: u64,
    /// MAC (zeros for the empty store).
    pub mac: [u8; 32],
}

impl Head {
    /// The empty store.
    pub const EMPTY: Head = Head { version: 0, mac: [0; 32] };
}

/// The store's MAC key. Lives only in enclave memory, wiped on drop.
pub struct StoreKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

impl StoreKey {
    /// Wraps derived key bytes.
    pub fn new(bytes: Zeroizing<[u8; 32]>) -> Self {
        StoreKey(bytes)
    }

    fn key(&self) -> ring::hmac::Key {
        ring::hmac::Key::new(ring::hmac::HMAC_SHA256, self.0.as_slice())
    }

    fn input(domain: &[u8], version: u64, prev: &[u8; 32], body: &[u8]) -> Vec<u8> {
        let mut m = Vec::with_capacity(domain.len() + 8 + 32 + body.len());
        m.extend_from_slice(domain);
        m.extend_from_slice(&version.to_be_bytes());
        m.extend_from_slice(prev);
        m.extend_from_slice(body);
        m
    }

    fn mac(&self, domain: &[u8], version: u64, prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
        let tag = ring::hmac::sign(&self.key(), &Self::input(domain, version, prev, body));
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Chains one commit's records after `head` (each MACed over its version, the previous MAC
    /// and its body; the last as the commit's end); returns them and the new head.
    pub fn chain(&self, head: Head, records: &[Record]) -> Result<(Vec<StoreRecord>, Head), Error> {
        let bodies = records
            .iter()
            .map(|r| {
                let body = postcard::to_stdvec(r)
                    .map_err(|e| Error::new(ErrorCode::Internal, format!("record encoding: {e}")))?;
                RecordBody::new(body).map_err(|e| Error::new(ErrorCode::Internal, e))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        Ok(self.chain_bodies(head, bodies))
    }

    /// Chains one commit's encoded bodies after `head`: [`Self::chain`] without the encoding.
    pub fn chain_bodies(&self, head: Head, bodies: Vec<RecordBody>) -> (Vec<StoreRecord>, Head) {
        let mut out = Vec::with_capacity(bodies.len());
        let mut h = head;
        let last = bodies.len();
        for (i, body) in bodies.into_iter().enumerate() {
            let version = h.version + 1;
            let domain = if i + 1 == last { COMMIT_END_DOMAIN } else { DOMAIN };
            let mac = self.mac(domain, version, &h.mac, body.as_inner());
            out.push(StoreRecord { version, prev_mac: h.mac, body, mac });
            h = Head { version, mac };
        }
        (out, h)
    }

    fn anchor_input(head: Head, paired: bool) -> Vec<u8> {
        let domain = if paired { PAIRED_ANCHOR_DOMAIN } else { ANCHOR_DOMAIN };
        let mut m = Vec::with_capacity(domain.len() + 8 + 32);
        m.extend_from_slice(domain);
        m.extend_from_slice(&head.version.to_be_bytes());
        m.extend_from_slice(&head.mac);
        m
    }

    /// The HSM anchor's authenticator for `head`, held alone or (`paired`) with a partner slot.
    pub fn anchor_tag(&self, head: Head, paired: bool) -> [u8; 32] {
        let tag = ring::hmac::sign(&self.key(), &Self::anchor_input(head, paired));
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Whether `tag` authenticates `head` as an anchor held alone or (`paired`) with a partner
    /// (constant-time comparison).
    pub fn verify_anchor_tag(&self, head: Head, paired: bool, tag: &[u8; 32]) -> bool {
        ring::hmac::verify(&self.key(), &Self::anchor_input(head, paired), tag).is_ok()
    }

    /// `None` when `r`'s MAC does not verify; else whether it is a commit's last record
    /// (constant-time comparisons inside ring).
    fn verify(&self, r: &StoreRecord) -> Option<bool> {
        let ok = |domain| {
            ring::hmac::verify(&self.key(), &Self::input(domain, r.version, &r.prev_mac, r.body.as_inner()), &r.mac)
                .is_ok()
        };
        if ok(DOMAIN) {
            Some(false)
        } else if ok(COMMIT_END_DOMAIN) {
            Some(true)
        } else {
            None
        }
    }
}

fn tampered(msg: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::StoreTampered, msg)
}

/// A completely verified stream.
#[derive(Debug)]
pub struct Verified {
    /// The chain head.
    pub head: Head,
    /// The records, in order.
    pub records: Vec<Record>,
    /// The `prev_mac` of the record right after the anchored version, if present.
    pub successor_prev: Option<[u8; 32]>,
    /// Whether the last record ends a commit (an empty store: `true`).
    pub ends_commit: bool,
}

/// Verifies a streamed store, chunk by chunk.
#[derive(Debug, Default)]
pub struct Loader {
    head: Option<Head>,
    records: Vec<Record>,
    open_snapshot: Option<u64>,
    count: u64,
    /// The anchored version, and the `prev_mac` of the record right after it, once seen.
    anchor_version: Option<u64>,
    successor_prev: Option<[u8; 32]>,
    /// Whether the last record pushed ends a commit (`None`: none pushed).
    ends_commit: Option<bool>,
}

impl Loader {
    /// A loader that remembers which record follows the anchored version (see
    /// [`check_against_anchor`]).
    pub fn for_anchor(anchor_version: u64) -> Self {
        Loader { anchor_version: Some(anchor_version), ..Loader::default() }
    }

    /// The anchor version this load started from ([`Loader::for_anchor`]).
    pub fn anchor_version(&self) -> Option<u64> {
        self.anchor_version
    }

    /// The `prev_mac` of the record right after the anchored version, if the chain has one.
    pub fn successor_prev(&self) -> Option<[u8; 32]> {
        self.successor_prev
    }

    /// Verifies and decodes the next records.
    pub fn push(&mut self, key: &StoreKey, chunk: &[StoreRecord]) -> Result<(), Error> {
        for r in chunk {
            let Some(ends_commit) = key.verify(r) else {
                return Err(tampered(format!("record {} fails its MAC", r.version)));
            };
            let record: Record = postcard::from_bytes(r.body.as_inner())
                .map_err(|e| tampered(format!("record {} does not decode: {e}", r.version)))?;
            match self.head {
                None => {
                    let starts_chain = r.version == 1 && r.prev_mac == [0; 32];
                    match (&record, starts_chain) {
                        (_, true) => {}
                        (Record::SnapshotBegin { id }, false) => self.open_snapshot = Some(*id),
                        _ => {
                            return Err(tampered(format!(
                                "the store starts at record {} without a snapshot",
                                r.version
                            )))
                        }
                    }
                }
                Some(h) => {
                    if r.version != h.version + 1 || r.prev_mac != h.mac {
                        return Err(tampered(format!("record {} does not follow record {}", r.version, h.version)));
                    }
                }
            }
            if let (Record::SnapshotEnd { id }, Some(open)) = (&record, self.open_snapshot) {
                if *id == open {
                    self.open_snapshot = None;
                }
            }
            if self.anchor_version.is_some_and(|a| a + 1 == r.version) {
                self.successor_prev = Some(r.prev_mac);
            }
            self.head = Some(Head { version: r.version, mac: r.mac });
            self.ends_commit = Some(ends_commit);
            self.records.push(record);
            self.count += 1;
        }
        Ok(())
    }

    /// Records verified so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Ends the stream: the verified head and records.
    pub fn finish(self) -> Result<(Head, Vec<Record>), Error> {
        self.finish_with_successor().map(|v| (v.head, v.records))
    }

    /// Like [`Loader::finish`], also returning the anchored record's successor's `prev_mac`.
    pub fn finish_with_successor(self) -> Result<Verified, Error> {
        if self.open_snapshot.is_some() {
            return Err(tampered("the store starts inside an incomplete snapshot"));
        }
        Ok(Verified {
            head: self.head.unwrap_or(Head::EMPTY),
            records: self.records,
            successor_prev: self.successor_prev,
            ends_commit: self.ends_commit.unwrap_or(true),
        })
    }
}

/// Compares a verified head with the HSM anchor. `successor_prev` is the `prev_mac` of the
/// record right after the anchored version, if the chain has it. `Ok(true)` means the store is
/// ahead of the anchor by the one interrupted commit (which may hold many records): the anchor
/// update is to be finished.
///
/// Why "ahead and extending the anchored head" can only be one commit: the enclave chains a batch
/// only after the previous one is anchored, so a MAC-valid extension of the anchored head is at
/// most the one batch whose anchor update was interrupted.
pub fn check_against_anchor(head: Head, successor_prev: Option<[u8; 32]>, anchor: Head) -> Result<bool, Error> {
    let rollback = |msg: String| Error::new(ErrorCode::StoreRollbackDetected, msg);
    if head.version == anchor.version {
        return if head.mac == anchor.mac {
            Ok(false)
        } else {
            Err(tampered("the store's head differs from the HSM anchor"))
        };
    }
    if head.version < anchor.version {
        return Err(rollback(format!(
            "the store ends at record {}, the HSM anchor is at {}",
            head.version, anchor.version
        )));
    }
    if successor_prev == Some(anchor.mac) {
        return Ok(true);
    }
    Err(tampered(format!("the store's records after {} do not extend the anchored head", anchor.version)))
}
