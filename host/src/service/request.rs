//! A sign request as an application submits it, its states and its outcome: the one schema the
//! HTTP API, the request log and the CLI share.
//!
//! Invariants: a submission is validated completely before anything is stored; its
//! [`Submission::body_sha256`] is over the normalized body without the request id, so the same
//! request sent twice (any letter case of its hex) is recognized and a different body under the
//! same id is a conflict.

use crate::coordinator::SignRequest;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::ids::KeyId;
use frostgate_common::protocol::{RequestTag, TaprootMode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::str::FromStr;

/// Longest request id.
pub use frostgate_common::limits::MAX_REQUEST_ID_LEN;
/// Most labels on one request, and their lengths.
pub const MAX_LABELS: usize = 16;
const MAX_LABEL_LEN: usize = 128;

fn invalid(m: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::RequestInvalid, m.to_string())
}

/// Checks a client-chosen request id: 1-64 characters of `[A-Za-z0-9._-]`.
pub fn check_request_id(id: &str) -> Result<(), Error> {
    match frostgate_common::limits::request_id_valid(id) {
        true => Ok(()),
        false => Err(invalid(format!("request_id {id:?}: 1-{MAX_REQUEST_ID_LEN} characters of [A-Za-z0-9._-]"))),
    }
}

/// The request as every enclave binds it: the client's certificate fingerprint (`cert:<hex>`;
/// zero for the development client), its request id, its acceptance (Unix seconds) and the
/// service's attempt (the claim's lease epoch).
pub fn request_tag(client: &str, request_id: &str, accepted_ms: i64, attempt: i64) -> Result<RequestTag, Error> {
    let client = match client.strip_prefix("cert:") {
        Some(h) => hex::decode(h)
            .ok()
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| Error::new(ErrorCode::Internal, format!("client identity {client:?}")))?,
        None => [0; 32],
    };
    let request = frostgate_common::bounded::RequestName::new(request_id.to_string()).map_err(invalid)?;
    let accepted_unix = u64::try_from(accepted_ms / 1000).unwrap_or(0);
    Ok(RequestTag { client, request, accepted_unix, attempt: attempt as u32 })
}

/// What a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A 32-byte digest.
    Digest,
    /// Every input of a PSBT spent by the key.
    Psbt,
}

impl Kind {
    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Digest => "digest",
            Kind::Psbt => "psbt",
        }
    }

    /// The kind named `name`.
    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Digest, Kind::Psbt].into_iter().find(|k| k.name() == name)
    }
}

/// A request's state. `signed`, `refused`, `failed` and `cancelled` are final.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Accepted, not yet taken by a worker.
    Pending,
    /// A worker signs it.
    Running,
    /// Signed: the signature, or the signed PSBT.
    Signed,
    /// A node's policy refused it (each node's reason given).
    Refused,
    /// It could not be signed (the error code and recovery class given).
    Failed,
    /// Cancelled before any signing request reached a node.
    Cancelled,
}

impl State {
    /// Every state.
    pub const ALL: [State; 6] =
        [State::Pending, State::Running, State::Signed, State::Refused, State::Failed, State::Cancelled];

    /// The open states (not final).
    pub const OPEN: [State; 2] = [State::Pending, State::Running];

    /// Every open state with its count in `counts` (0 where it has none).
    pub fn every_open(counts: &[(State, u64)]) -> [(State, u64); 2] {
        State::OPEN.map(|s| (s, counts.iter().find(|(c, _)| *c == s).map_or(0, |(_, n)| *n)))
    }

    /// The stable name.
    pub fn name(self) -> &'static str {
        match self {
            State::Pending => "pending",
            State::Running => "running",
            State::Signed => "signed",
            State::Refused => "refused",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
        }
    }

    /// The state named `name`.
    pub fn from_name(name: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Whether nothing changes any more.
    pub fn is_final(self) -> bool {
        !matches!(self, State::Pending | State::Running)
    }
}

/// The body of `POST /v1/sign-requests`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Submission {
    /// The client's id for it (its idempotency key, per client).
    pub request_id: String,
    /// The key id (hex).
    pub key: String,
    /// A 32-byte digest (hex), or
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// with the digest: the Taproot script tree's merkle root (hex), or
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merkle_root: Option<String>,
    /// with the digest: plain BIP340 under the key itself (no tweak);
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub untweaked: bool,
    /// with the digest: a child of the key (unhardened steps, `0/5`);
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// or a PSBT (base64): every input the key spends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psbt: Option<String>,
    /// The client's labels (kept, shown, never interpreted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// A submission, validated.
#[derive(Debug, Clone)]
pub struct Body {
    /// The key.
    pub key: KeyId,
    /// What to sign.
    pub target: Target,
}

/// What to sign.
#[derive(Debug, Clone)]
pub enum Target {
    /// A digest, its Taproot mode and derivation path.
    Digest {
        /// The digest.
        message: [u8; 32],
        /// The mode.
        mode: TaprootMode,
        /// The child's path (empty: the key).
        path: Vec<u32>,
    },
    /// A PSBT.
    Psbt(Box<bitcoin::Psbt>),
}

fn hex32(what: &str, s: &str) -> Result<[u8; 32], Error> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out).map_err(|_| invalid(format!("{what}: 32 bytes of hex")))?;
    Ok(out)
}

/// Parses an unhardened derivation path (`0/5`).
pub fn parse_path(p: &str) -> Result<Vec<u32>, Error> {
    p.split('/')
        .map(|s| s.parse::<u32>().ok().filter(|i| *i < 1 << 31))
        .collect::<Option<Vec<u32>>>()
        .ok_or_else(|| invalid(format!("path {p:?}: unhardened steps like 0/5")))
}

impl Submission {
    /// Validates it completely (nothing is stored before).
    pub fn validate(&self) -> Result<Body, Error> {
        check_request_id(&self.request_id)?;
        let key = KeyId::from_str(&self.key).map_err(|e| invalid(format!("key: {e}")))?;
        if self.labels.len() > MAX_LABELS
            || self.labels.iter().any(|(k, v)| k.is_empty() || k.len() > MAX_LABEL_LEN || v.len() > MAX_LABEL_LEN)
        {
            return Err(invalid(format!("labels: at most {MAX_LABELS}, keys and values of 1-{MAX_LABEL_LEN} bytes")));
        }
        let digest_fields = self.merkle_root.is_some() || self.untweaked || self.path.is_some();
        let target = match (&self.digest, &self.psbt) {
            (Some(d), None) => {
                let message = hex32("digest", d)?;
                let mode = match (&self.merkle_root, self.untweaked) {
                    (Some(_), true) => return Err(invalid("merkle_root and untweaked exclude each other")),
                    (Some(root), false) => TaprootMode::ScriptTree { merkle_root: hex32("merkle_root", root)? },
                    (None, true) => TaprootMode::Untweaked,
                    (None, false) => TaprootMode::Bip86,
                };
                let path = self.path.as_deref().map(parse_path).transpose()?.unwrap_or_default();
                Target::Digest { message, mode, path }
            }
            (None, Some(p)) if !digest_fields => {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(p.trim())
                    .map_err(|e| invalid(format!("psbt: not base64 ({e})")))?;
                Target::Psbt(Box::new(crate::coordinator::psbt::parse(&bytes)?))
            }
            (None, Some(_)) => return Err(invalid("merkle_root, untweaked and path go with a digest, not a PSBT")),
            _ => return Err(invalid("exactly one of digest and psbt")),
        };
        Ok(Body { key, target })
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        if self.psbt.is_some() {
            Kind::Psbt
        } else {
            Kind::Digest
        }
    }

    /// SHA-256 of the normalized body without the request id (hex in lower case, the PSBT
    /// without surrounding space).
    pub fn body_sha256(&self) -> [u8; 32] {
        let normal = Submission {
            request_id: String::new(),
            key: self.key.to_ascii_lowercase(),
            digest: self.digest.as_ref().map(|d| d.to_ascii_lowercase()),
            merkle_root: self.merkle_root.as_ref().map(|d| d.to_ascii_lowercase()),
            untweaked: self.untweaked,
            path: self.path.clone(),
            psbt: self.psbt.as_ref().map(|p| p.trim().to_string()),
            labels: self.labels.clone(),
        };
        let bytes = serde_json::to_vec(&normal).unwrap_or_default();
        let d = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let mut out = [0u8; 32];
        out.copy_from_slice(d.as_ref());
        out
    }
}

impl Body {
    /// The coordinator's request for a digest (`None` for a PSBT, signed input by input), a
    /// session of the service request `tag`.
    pub fn digest_request(&self, tag: &RequestTag) -> Option<SignRequest> {
        match &self.target {
            Target::Digest { message, mode, path } => Some(SignRequest {
                key: self.key,
                message: *message,
                mode: *mode,
                psbt: None,
                path: path.clone(),
                request: Some(tag.clone()),
            }),
            Target::Psbt(_) => None,
        }
    }
}

/// An error as a request's outcome shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorView {
    /// The stable code.
    pub code: String,
    /// Its recovery class.
    pub recovery: String,
    /// For people.
    pub message: String,
}

impl From<&Error> for ErrorView {
    fn from(e: &Error) -> ErrorView {
        ErrorView {
            code: e.code().code().into(),
            recovery: e.recovery_class().as_str().into(),
            message: e.message().into(),
        }
    }
}

/// One node's refusal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRefusal {
    /// The node.
    pub node: u16,
    /// Its reason (the rule and numbers).
    pub reason: String,
}

/// What a finished request produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// A digest's BIP340 signature (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// The x-only key it verifies under (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_key: Option<String>,
    /// The signed PSBT (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psbt: Option<String>,
    /// The finalized transaction (hex), when every input is signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx: Option<String>,
    /// Its txid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txid: Option<String>,
    /// The PSBT inputs signed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<usize>,
    /// The signers of the (last) signature.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub signers: Vec<u16>,
    /// Signing attempts made.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempts: u32,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorView>,
    /// Each node's policy refusal.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refusals: Vec<NodeRefusal>,
    /// A failure where every signer was unreachable or silent (the worker's retry rule; never
    /// stored or shown).
    #[serde(skip)]
    pub unreachable_only: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// A request as the API answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestView {
    /// The client's id for it.
    pub request_id: String,
    /// Its state.
    pub state: State,
    /// The key (hex).
    pub key: String,
    /// Digest or PSBT.
    pub kind: Kind,
    /// The client's labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Accepted at (milliseconds since the Unix epoch).
    pub created_at_ms: i64,
    /// Last changed at.
    pub updated_at_ms: i64,
    /// What it produced, once final.
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(id: &str) -> Submission {
        Submission {
            request_id: id.into(),
            key: "ab".repeat(32),
            digest: Some("01".repeat(32)),
            merkle_root: None,
            untweaked: false,
            path: None,
            psbt: None,
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn request_ids_are_1_to_64_safe_characters() {
        for ok in ["a", "A.b_c-9", &"x".repeat(64)] {
            check_request_id(ok).expect(ok);
        }
        for bad in ["", &"x".repeat(65), "a b", "a/b", "é", "a:cancel"] {
            assert_eq!(check_request_id(bad).expect_err(bad).code(), ErrorCode::RequestInvalid);
        }
    }

    #[test]
    fn the_body_hash_ignores_the_id_and_hex_case_and_sees_everything_else() {
        let a = digest("one");
        assert_eq!(a.body_sha256(), Submission { request_id: "two".into(), ..a.clone() }.body_sha256());
        let upper = Submission { digest: Some("01".repeat(32).to_uppercase()), key: "AB".repeat(32), ..a.clone() };
        assert_eq!(a.body_sha256(), upper.body_sha256());
        for other in [
            Submission { digest: Some("02".repeat(32)), ..a.clone() },
            Submission { untweaked: true, ..a.clone() },
            Submission { path: Some("0/1".into()), ..a.clone() },
            Submission { labels: BTreeMap::from([("k".into(), "v".into())]), ..a.clone() },
        ] {
            assert_ne!(a.body_sha256(), other.body_sha256(), "{other:?}");
        }
    }

    #[test]
    fn a_submission_is_one_of_digest_and_psbt_with_its_own_options() {
        digest("a").validate().expect("digest");
        let both = Submission { psbt: Some("cHNidP8=".into()), ..digest("a") };
        assert_eq!(both.validate().expect_err("both").code(), ErrorCode::RequestInvalid);
        let neither = Submission { digest: None, ..digest("a") };
        assert_eq!(neither.validate().expect_err("neither").code(), ErrorCode::RequestInvalid);
        let tweaks = Submission { merkle_root: Some("00".repeat(32)), untweaked: true, ..digest("a") };
        assert_eq!(tweaks.validate().expect_err("two modes").code(), ErrorCode::RequestInvalid);
        let psbt_path =
            Submission { digest: None, psbt: Some("cHNidP8=".into()), path: Some("0".into()), ..digest("a") };
        assert_eq!(psbt_path.validate().expect_err("path on a PSBT").code(), ErrorCode::RequestInvalid);
        let short = Submission { digest: Some("01".into()), ..digest("a") };
        assert_eq!(short.validate().expect_err("short").code(), ErrorCode::RequestInvalid);
        let path = Submission { path: Some("0/2147483648".into()), ..digest("a") };
        assert_eq!(path.validate().expect_err("hardened").code(), ErrorCode::RequestInvalid);
    }
}
