//! What a request opens and closes in the enclave's bounded registries.
//!
//! The boundary table's `opens` and `closes` columns say which registries each request row
//! touches (mandatory for every request row, `[]` when none); [`Registers`] says which entries,
//! and is implemented exactly by the payloads of rows whose columns are not empty (a row naming a
//! registry for a payload without it does not compile). The host's per-caller admission reserves
//! and releases from these alone, so a new row cannot open anything uncounted without saying so
//! in the table. `host/tests/admission_table.rs` checks each implementation against its row.

use super::types::*;
use super::Message;
use crate::ids::{AttemptId, CommitmentId, DkgId, SessionId};

/// One of the enclave's bounded registries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Registry {
    /// Sessions (bound to a key and a message or PSBT input).
    Session,
    /// Attempts (a signer set within a session).
    Attempt,
    /// DKGs and refreshes (one registry in the enclave).
    Dkg,
    /// Repairs this enclave helps with.
    Repair,
    /// Preprocessed commitments (nonce pairs live in enclave memory).
    Commitment,
}

impl Registry {
    /// The name in `BOUNDARY.md`.
    pub fn name(self) -> &'static str {
        match self {
            Registry::Session => "session",
            Registry::Attempt => "attempt",
            Registry::Dkg => "dkg",
            Registry::Repair => "repair",
            Registry::Commitment => "commitment",
        }
    }
}

/// One registry entry a request opens or closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Entry {
    /// A session.
    Session(SessionId),
    /// An attempt, within its session (known when it is opened).
    Attempt(AttemptId, Option<SessionId>),
    /// A DKG or refresh.
    Dkg(DkgId),
    /// A repair.
    Repair(DkgId),
    /// This many preprocessed commitments asked for (their ids come with the reply).
    Commitments(u16),
    /// One preprocessed commitment, used.
    Commitment(CommitmentId),
}

impl Entry {
    /// Its registry.
    pub fn registry(self) -> Registry {
        match self {
            Entry::Session(_) => Registry::Session,
            Entry::Attempt(..) => Registry::Attempt,
            Entry::Dkg(_) => Registry::Dkg,
            Entry::Repair(_) => Registry::Repair,
            Entry::Commitments(_) | Entry::Commitment(_) => Registry::Commitment,
        }
    }
}

/// When a closing takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// As soon as the request is forwarded (a commitment is used, or unknown, once asked for; a
    /// repair ends when its sigma is asked for).
    Sent,
    /// When the enclave answers without an error.
    Answered,
    /// When the answer ends the ceremony ([`Message::ends_ceremony`]).
    Ended,
}

/// The entries a request opens and closes (see the module).
pub trait Registers {
    /// What it opens, reserved before it is forwarded.
    fn opens(&self) -> Vec<Entry> {
        Vec::new()
    }
    /// What it closes, and when.
    fn closes(&self) -> Vec<(Entry, When)> {
        Vec::new()
    }
}

impl Message {
    /// Whether this reply ends a DKG, refresh or repair step's ceremony (a blame, the key).
    pub fn ends_ceremony(&self) -> bool {
        matches!(self, Message::DkgBlame(_) | Message::KeyInfo(_) | Message::KeyRefreshed(_))
    }
}

impl Registers for OpenSession {
    fn opens(&self) -> Vec<Entry> {
        vec![Entry::Session(self.session)]
    }
}

impl Registers for OpenDerivedSession {
    fn opens(&self) -> Vec<Entry> {
        vec![Entry::Session(self.session)]
    }
}

impl Registers for OpenPsbtSession {
    fn opens(&self) -> Vec<Entry> {
        vec![Entry::Session(self.session)]
    }
}

impl Registers for RequestSession {
    fn opens(&self) -> Vec<Entry> {
        vec![Entry::Session(self.open.session())]
    }
}

impl Registers for OpenAttempt {
    fn opens(&self) -> Vec<Entry> {
        vec![Entry::Attempt(self.attempt, Some(self.session))]
    }
}

impl Registers for AttemptRef {
    fn closes(&self) -> Vec<(Entry, When)> {
        vec![(Entry::Attempt(self.attempt, None), When::Answered)]
    }
}

impl Registers for SessionRef {
    fn closes(&self) -> Vec<(Entry, When)> {
        vec![(Entry::Session(self.session), When::Answered)]
    }
}

impl Registers for CloseSessions {
    fn closes(&self) -> Vec<(Entry, When)> {
        self.sessions.as_inner().iter().map(|s| (Entry::Session(*s), When::Answered)).collect()
    }
}

impl Registers for DkgRef {
    fn closes(&self) -> Vec<(Entry, When)> {
        vec![(Entry::Dkg(self.dkg), When::Answered)]
    }
}

/// A DKG or refresh step: the ceremony ends with a blame or the key.
macro_rules! ceremony_step {
    ($($payload:ty: $field:ident => $entry:ident, opens: $opens:literal;)*) => {$(
        impl Registers for $payload {
            fn opens(&self) -> Vec<Entry> {
                if $opens { vec![Entry::$entry(self.$field)] } else { Vec::new() }
            }
            fn closes(&self) -> Vec<(Entry, When)> {
                vec![(Entry::$entry(self.$field), When::Ended)]
            }
        }
    )*};
}

ceremony_step! {
    DkgStart: dkg => Dkg, opens: true;
    RefreshStart: dkg => Dkg, opens: true;
    DkgRound2: dkg => Dkg, opens: false;
    DkgFinish: dkg => Dkg, opens: false;
    DkgActivate: dkg => Dkg, opens: false;
    RefreshActivate: dkg => Dkg, opens: false;
    RepairStart: repair => Repair, opens: true;
    RepairFinish: repair => Repair, opens: false;
}

impl Registers for CeremonyChallenge {
    /// Its challenge is kept with the ceremony it precedes, and counted as it.
    fn opens(&self) -> Vec<Entry> {
        match self.kind {
            CeremonyKind::Dkg => vec![Entry::Dkg(self.ceremony)],
            CeremonyKind::Repair => vec![Entry::Repair(self.ceremony)],
        }
    }
}

impl Registers for RepairSigma {
    /// A helper's repair ends with its sigma: the enclave drops it when the request arrives,
    /// whatever it answers.
    fn closes(&self) -> Vec<(Entry, When)> {
        vec![(Entry::Repair(self.repair), When::Sent)]
    }
}

impl Registers for Preprocess {
    fn opens(&self) -> Vec<Entry> {
        vec![Entry::Commitments(self.count)]
    }
}

impl Registers for SignPreprocessed {
    /// Binds its session and attempt and asks for `replenish` commitments.
    fn opens(&self) -> Vec<Entry> {
        let session = self.binding.session();
        vec![Entry::Session(session), Entry::Attempt(self.attempt, Some(session)), Entry::Commitments(self.replenish)]
    }
    /// Uses its commitment; closes the sessions it lists, never the one it binds itself (that
    /// close would be carried out before the binding, leaving the session open and uncounted).
    fn closes(&self) -> Vec<(Entry, When)> {
        let bound = self.binding.session();
        let mut closes = vec![(Entry::Commitment(self.commitment), When::Sent)];
        closes.extend(
            self.close.as_inner().iter().filter(|s| **s != bound).map(|s| (Entry::Session(*s), When::Answered)),
        );
        closes
    }
}

impl Registers for SignBatch {
    /// Every item's, as alone; no item closes a session another item binds.
    fn opens(&self) -> Vec<Entry> {
        self.items.as_inner().iter().flat_map(Registers::opens).collect()
    }
    fn closes(&self) -> Vec<(Entry, When)> {
        let bound: Vec<SessionId> = self.items.as_inner().iter().map(|o| o.binding.session()).collect();
        self.items
            .as_inner()
            .iter()
            .flat_map(Registers::closes)
            .filter(|(e, _)| !matches!(e, Entry::Session(s) if bound.contains(s)))
            .collect()
    }
}
