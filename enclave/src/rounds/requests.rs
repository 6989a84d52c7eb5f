//! Signing service requests bound to what they sign, so that no instance of the service (two
//! racing, or one taking over from another that died) can sign anything else under a request.
//!
//! Invariants (beside the module's, in `rounds/mod.rs`):
//! - A request (client, request id) is bound the first time a session of it is created here,
//!   under the state lock that inserts the session, to its key and its target (the digest with
//!   its derivation path and Taproot mode, or the PSBT's txid), from its acceptance time. Until
//!   [`REQUEST_TTL_SECS`] after that first acceptance time every session of the request must name
//!   the same key and target (`request_conflict`), and its session id must be the request's own
//!   (`frostgate_public::request::session_id`).
//! - The binding's record goes with each of the request's session bindings, so it is durable
//!   before any share of the request leaves (no share leaves before its session's binding is).
//! - The registry is bounded (`registry_full`); a request accepted longer than the TTL ago, or in
//!   the future, is refused (`request_expired`), and its binding leaves with the sweep.
//! - Its `Requested` audit entry goes with the first of its sessions whose binding is written; a
//!   session that leaves before (closed or expired before its first marker) hands it on to the
//!   request's next session, so no share of a request leaves without one.

use super::spending::Decision;
use super::*;
use crate::markers::RequestTarget;
use frostgate_common::limits::{request_id_valid, REQUEST_TTL_SECS};
use frostgate_common::protocol::{AuditDecision, RequestOpen, RequestSession, RequestSessionOpened, RequestTag};

/// How far in the future a request's acceptance time may be (the service's clock ahead of ours).
const CLOCK_SKEW_SECS: u64 = 300;

/// A request's binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct RequestBound {
    key: KeyId,
    target: RequestTarget,
    accepted_unix: u64,
    /// Whether its `Requested` audit entry was made (with its first session).
    audited: bool,
}

/// The registry key: (client fingerprint, request id).
pub(super) type RequestKey = ([u8; 32], String);

impl Engine {
    /// Opens a signing service request's session (as `open_session`, `open_session_at` or
    /// `open_psbt_session` would), binding the request.
    pub async fn open_request_session(&self, r: &RequestSession) -> Result<RequestSessionOpened, Error> {
        self.bind_request_session(r, Write::Now).await
    }

    /// [`Self::open_request_session`], its binding written as `write` says.
    pub(crate) async fn bind_request_session(
        &self,
        r: &RequestSession,
        write: Write,
    ) -> Result<RequestSessionOpened, Error> {
        let tag = Some(&r.tag);
        match &r.open {
            RequestOpen::Digest(o) => {
                let output_key = self.bind_session(o.session, o.key, &[], o.message, o.mode, write, tag).await?;
                Ok(RequestSessionOpened { session: o.session, output_key, message: o.message })
            }
            RequestOpen::Derived(o) => {
                let path = o.path.as_inner();
                let output_key = self.bind_session(o.session, o.key, path, o.message, o.mode, write, tag).await?;
                Ok(RequestSessionOpened { session: o.session, output_key, message: o.message })
            }
            RequestOpen::Psbt(o) => {
                let opened = self.bind_psbt_session(o.session, o.key, o.input, o.psbt.as_inner(), write, tag).await?;
                Ok(RequestSessionOpened { session: o.session, output_key: opened.output_key, message: opened.sighash })
            }
        }
    }

    /// Checks `tag` names a live request whose session under `key` (`input`: the PSBT input) is
    /// `session`, and that the request is unbound or bound to `target`. Binds nothing (that is
    /// [`Self::bind_request`], as the session is created). Returns the binding's record.
    pub(super) fn check_request(
        &self,
        tag: &RequestTag,
        session: SessionId,
        key: KeyId,
        input: Option<u32>,
        target: RequestTarget,
    ) -> Result<Record, Error> {
        let request = tag.request.as_inner();
        if !request_id_valid(request) {
            return Err(err(ErrorCode::MalformedMessage, "request id: 1-64 characters of [A-Za-z0-9._-]"));
        }
        let now = unix_now();
        if tag.accepted_unix.saturating_add(REQUEST_TTL_SECS) <= now {
            return Err(err(
                ErrorCode::RequestExpired,
                format!("request {request} was accepted more than {REQUEST_TTL_SECS} s ago"),
            ));
        }
        if tag.accepted_unix > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(err(ErrorCode::RequestExpired, format!("request {request} was accepted in the future")));
        }
        if frostgate_public::request::session_id(tag, &key, input) != session {
            return Err(err(
                ErrorCode::RequestConflict,
                format!("session {session} is not one of request {request}'s"),
            ));
        }
        let record = Record::RequestBound {
            client: tag.client,
            request: request.clone(),
            accepted_unix: tag.accepted_unix,
            key,
            target,
        };
        Self::bound_as(&self.lock(), &record)?;
        Ok(record)
    }

    /// Whether the request `record` binds is bound (`true`) or unbound (`false`); a binding to
    /// anything else is `request_conflict`.
    fn bound_as(s: &State, record: &Record) -> Result<bool, Error> {
        let Record::RequestBound { client, request, key, target, .. } = record else { return Ok(false) };
        // The acceptance time the binding keeps is the first one (its TTL runs from there): the
        // same request resubmitted after a lost request log is the same request.
        match s.requests.get(&(*client, request.clone())) {
            None => Ok(false),
            Some(b) if (b.key, &b.target) == (*key, target) => Ok(true),
            Some(_) => {
                Err(err(ErrorCode::RequestConflict, format!("request {request} is bound to another key or target")))
            }
        }
    }

    /// Under the state lock, as a session of the request is created: binds the request
    /// (checked again: another session may have bound it since [`Self::check_request`]).
    /// Bounded by `max_requests` (`registry_full`).
    pub(super) fn bind_request(&self, s: &mut State, record: &Record) -> Result<(), Error> {
        if Self::bound_as(s, record)? {
            return Ok(());
        }
        let Record::RequestBound { client, request, accepted_unix, key, target } = record else { return Ok(()) };
        if s.requests.len() >= self.limits.max_requests {
            Self::expire_requests(s, unix_now());
            if s.requests.len() >= self.limits.max_requests {
                return Err(err(ErrorCode::RegistryFull, format!("{} requests bound", s.requests.len())));
            }
        }
        let bound = RequestBound { key: *key, target: target.clone(), accepted_unix: *accepted_unix, audited: false };
        s.requests.insert((*client, request.clone()), bound);
        Ok(())
    }

    /// After a failed write of the `Requested` entry of the request `record` binds: the next
    /// session of it writes one.
    pub(super) fn request_unaudited(s: &mut State, record: &Record) {
        let Record::RequestBound { client, request, .. } = record else { return };
        if let Some(b) = s.requests.get_mut(&(*client, request.clone())) {
            b.audited = false;
        }
    }

    /// The `Requested` audit entry of the request `record` binds, the first time one of its
    /// sessions is created (with that session's decision `d`).
    pub(super) fn request_audit(
        &self,
        s: &mut State,
        record: &Record,
        d: &Decision<'_>,
        write: Write,
    ) -> Option<Record> {
        let Record::RequestBound { client, request, .. } = record else { return None };
        let bound = s.requests.get_mut(&(*client, request.clone()))?;
        if bound.audited {
            return None;
        }
        bound.audited = true;
        let rule = format!("{}/{request}", hex::encode(client));
        match write {
            Write::Now => self.audit(s, AuditDecision::Requested, &rule, d, None),
            Write::WithFirstMarker => self.audit_deferred_rule(s, AuditDecision::Requested, &rule, d),
        }
    }

    /// Bindings of requests accepted longer than the TTL ago leave (those requests are refused).
    pub(super) fn expire_requests(s: &mut State, now: u64) {
        s.requests.retain(|_, r| r.accepted_unix.saturating_add(REQUEST_TTL_SECS) > now);
    }

    /// At load: a stored binding (kept unless expired; one already known stays).
    pub(super) fn replay_request(s: &mut State, record: &Record, now: u64) {
        let Record::RequestBound { client, request, accepted_unix, key, target } = record else { return };
        if accepted_unix.saturating_add(REQUEST_TTL_SECS) > now {
            s.requests.entry((*client, request.clone())).or_insert(RequestBound {
                key: *key,
                target: target.clone(),
                accepted_unix: *accepted_unix,
                audited: true,
            });
        }
    }

    /// Every binding, as records (snapshots).
    pub(super) fn request_records(s: &State) -> impl Iterator<Item = Record> + '_ {
        s.requests.iter().map(|((client, request), r)| Record::RequestBound {
            client: *client,
            request: request.clone(),
            accepted_unix: r.accepted_unix,
            key: r.key,
            target: r.target.clone(),
        })
    }
}
