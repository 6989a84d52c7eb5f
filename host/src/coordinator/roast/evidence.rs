//! Why a signer was excluded from a signing: typed evidence (steps, reasons, codes, ids, bytes),
//! written as text only in JSON (stable code strings, hex).

use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::{AttemptId, ParticipantId};
use serde::Serialize;

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
pub(super) fn policy_refusal(e: &Error) -> bool {
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

/// Evidence against `signer` for failing `step` of `attempt` with `e`.
pub(super) fn evidence(signer: ParticipantId, step: Step, attempt: AttemptId, e: &Error) -> Evidence {
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

#[cfg(test)]
mod tests {
    use super::*;
    use frostgate_common::error::ErrorCode;

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
