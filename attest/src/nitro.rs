//! AWS Nitro Enclaves attestation documents (aws-nitro-enclaves-nsm-api,
//! `docs/attestation_process.md`): a COSE_Sign1 (ES384, tag 18 optional) over a CBOR map with
//! `module_id`, `timestamp` (ms), `digest` ("SHA384"), `pcrs` (index -> 48 bytes),
//! `certificate` (DER), `cabundle` (DER, root first) and optional `public_key`, `user_data`,
//! `nonce`.
//!
//! [`verify`] checks, in order: the encoding; that the bundle starts with the pinned root; that
//! the certificate chains to it at the validation time (rustls-webpki); the COSE signature under
//! the certificate's key (ring, ES384 fixed r||s); debug mode; the pinned PCRs; the nonce; the
//! attested public key; the age. The first failure is the refusal.

use crate::{Check, Refusal};
use ciborium::Value;
use coset::{iana, CborSerializable, CoseSign1, TaggedCborSerializable};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// The AWS Nitro Enclaves root certificate (G1, CN aws.nitro-enclaves), as AWS publishes it;
/// its SHA-256 fingerprint is [`AWS_ROOT_SHA256`].
pub const AWS_ROOT_PEM: &str = include_str!("aws-nitro-enclaves-root-g1.pem");

/// SHA-256 of the AWS root's DER, as AWS publishes it.
pub const AWS_ROOT_SHA256: &str = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

/// A PCR's length (SHA-384).
pub const PCR_LEN: usize = 48;

/// A decoded document (verified only when [`verify`] returned it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Document {
    /// The enclave's module id.
    pub module_id: String,
    /// When the NSM made it, milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The PCR digest ("SHA384").
    pub digest: String,
    /// The PCRs, by index.
    #[serde(serialize_with = "hex_map")]
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// The attested public key (the enclave's per-boot key).
    #[serde(serialize_with = "hex_opt")]
    pub public_key: Option<Vec<u8>>,
    /// Data the enclave asked to include.
    #[serde(serialize_with = "hex_opt")]
    pub user_data: Option<Vec<u8>>,
    /// The verifier's nonce.
    #[serde(serialize_with = "hex_opt")]
    pub nonce: Option<Vec<u8>>,
    /// The signing certificate (DER).
    #[serde(skip)]
    pub certificate: Vec<u8>,
    /// The bundle, root first (DER).
    #[serde(skip)]
    pub cabundle: Vec<Vec<u8>>,
}

fn hex_map<S: serde::Serializer>(m: &BTreeMap<u8, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(m.iter().map(|(k, v)| (k.to_string(), hex::encode(v))))
}

fn hex_opt<S: serde::Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_some(&hex::encode(v)),
        None => s.serialize_none(),
    }
}

impl Document {
    /// Whether a debug-mode enclave made it (PCRs 0, 1 and 2 all zero).
    pub fn debug_mode(&self) -> bool {
        [0u8, 1, 2].iter().all(|i| self.pcrs.get(i).is_some_and(|p| p.iter().all(|b| *b == 0)))
    }

    /// The subjects of the chain, the certificate first and the root last.
    pub fn subjects(&self) -> Vec<String> {
        std::iter::once(&self.certificate)
            .chain(self.cabundle.iter().rev())
            .map(|der| match x509_parser::parse_x509_certificate(der) {
                Ok((_, c)) => c.subject().to_string(),
                Err(_) => "(undecodable certificate)".into(),
            })
            .collect()
    }
}

/// What a verifier expects.
#[derive(Debug, Clone)]
pub struct Expected {
    /// The pinned root certificate (DER).
    pub root: Vec<u8>,
    /// The validation time for the chain, seconds since the Unix epoch.
    pub at: u64,
    /// PCRs that must be equal (absent ones are not checked).
    pub pcrs: BTreeMap<u8, Vec<u8>>,
    /// The nonce the document must carry.
    pub nonce: Option<Vec<u8>>,
    /// The public key the document must attest.
    pub public_key: Option<Vec<u8>>,
    /// Whether a debug-mode document passes.
    pub allow_debug: bool,
    /// A second line: (the verifier's clock, seconds; the maximum age, seconds).
    pub max_age: Option<(u64, u64)>,
}

/// The DER of the first certificate in `pem`.
pub fn pem_certificate(pem: &str) -> Result<Vec<u8>, String> {
    let (_, p) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| format!("PEM: {e}"))?;
    if p.label != "CERTIFICATE" {
        return Err(format!("PEM block {:?}, expected CERTIFICATE", p.label));
    }
    Ok(p.contents)
}

/// The DER of the root certificate in the PEM file at `path`.
pub fn read_root(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let pem = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    pem_certificate(&pem).map_err(|e| format!("{}: {e}", path.display()))
}

/// The AWS root's DER.
pub fn aws_root() -> Vec<u8> {
    // The PEM is a constant of this crate, checked by a test.
    pem_certificate(AWS_ROOT_PEM).unwrap_or_default()
}

/// Decodes a document without verifying it (for display; [`verify`] for trust).
pub fn decode(bytes: &[u8]) -> Result<(CoseSign1, Document), Refusal> {
    let enc = |e: &dyn std::fmt::Display| Refusal::new(Check::Encoding, e);
    let sign1 = CoseSign1::from_tagged_slice(bytes)
        .or_else(|_| CoseSign1::from_slice(bytes))
        .map_err(|e| enc(&format!("not a COSE_Sign1: {e:?}")))?;
    let alg = sign1.protected.header.alg.clone();
    if alg != Some(coset::RegisteredLabelWithPrivate::Assigned(iana::Algorithm::ES384)) {
        return Err(enc(&format!("algorithm {alg:?}, expected ES384")));
    }
    let payload = sign1.payload.as_deref().ok_or_else(|| enc(&"no payload"))?;
    let value: Value = ciborium::from_reader(payload).map_err(|e| enc(&format!("payload: {e}")))?;
    let map = value.as_map().ok_or_else(|| enc(&"payload is not a map"))?;
    let field = |name: &str| map.iter().find(|(k, _)| k.as_text() == Some(name)).map(|(_, v)| v);
    let text = |name: &str| {
        field(name).and_then(Value::as_text).map(str::to_string).ok_or_else(|| enc(&format!("{name}: no text")))
    };
    let bytes_of =
        |name: &str| field(name).and_then(Value::as_bytes).cloned().ok_or_else(|| enc(&format!("{name}: no bytes")));
    let optional = |name: &str| match field(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bytes(b)) => Ok(Some(b.clone())),
        Some(_) => Err(enc(&format!("{name}: neither bytes nor null"))),
    };
    let timestamp_ms = field("timestamp")
        .and_then(Value::as_integer)
        .and_then(|i| u64::try_from(i).ok())
        .ok_or_else(|| enc(&"timestamp: no unsigned integer"))?;
    let mut pcrs = BTreeMap::new();
    for (k, v) in field("pcrs").and_then(Value::as_map).ok_or_else(|| enc(&"pcrs: no map"))? {
        let index = k.as_integer().and_then(|i| u8::try_from(i).ok()).ok_or_else(|| enc(&"pcrs: bad index"))?;
        let value = v.as_bytes().ok_or_else(|| enc(&format!("pcr {index}: no bytes")))?;
        if ![32, PCR_LEN, 64].contains(&value.len()) {
            return Err(enc(&format!("pcr {index}: {} bytes", value.len())));
        }
        pcrs.insert(index, value.clone());
    }
    let cabundle = field("cabundle")
        .and_then(Value::as_array)
        .ok_or_else(|| enc(&"cabundle: no array"))?
        .iter()
        .map(|c| c.as_bytes().cloned().ok_or_else(|| enc(&"cabundle: an entry is not bytes")))
        .collect::<Result<Vec<_>, _>>()?;
    let document = Document {
        module_id: text("module_id")?,
        timestamp_ms,
        digest: text("digest")?,
        pcrs,
        public_key: optional("public_key")?,
        user_data: optional("user_data")?,
        nonce: optional("nonce")?,
        certificate: bytes_of("certificate")?,
        cabundle,
    };
    if document.digest != "SHA384" {
        return Err(enc(&format!("digest {:?}, expected SHA384", document.digest)));
    }
    Ok((sign1, document))
}

/// How far ahead of the verifier's clock a document may be dated (clock skew).
const FUTURE_SLACK_SECS: u64 = 60;

/// id-kp-clientAuth: the only extended key usage a document's certificate may carry, if any.
const EKU_CLIENT_AUTH: &[u8] = &[0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x03, 0x02];

/// Verifies `bytes` (raw COSE) against `expected`; the document if every check passes.
pub fn verify(bytes: &[u8], expected: &Expected) -> Result<Document, Refusal> {
    let (sign1, doc) = decode(bytes)?;
    // The anchor is the pinned root, never the document's; its bundle must start with it.
    match doc.cabundle.first() {
        Some(first) if *first == expected.root => {}
        Some(_) => return Err(Refusal::new(Check::Root, "the bundle's first certificate is not the pinned root")),
        None => return Err(Refusal::new(Check::Root, "empty cabundle")),
    }
    let root = CertificateDer::from(expected.root.as_slice());
    let anchor = webpki::anchor_from_trusted_cert(&root)
        .map_err(|e| Refusal::new(Check::Root, format!("pinned root: {e:?}")))?
        .to_owned();
    let leaf = CertificateDer::from(doc.certificate.as_slice());
    let end_entity = webpki::EndEntityCert::try_from(&leaf)
        .map_err(|e| Refusal::new(Check::Chain, format!("certificate: {e:?}")))?;
    let intermediates: Vec<CertificateDer<'_>> =
        doc.cabundle.iter().skip(1).map(|c| CertificateDer::from(c.as_slice())).collect();
    let time = UnixTime::since_unix_epoch(Duration::from_secs(expected.at));
    end_entity
        .verify_for_usage(
            &[webpki::ring::ECDSA_P384_SHA384, webpki::ring::ECDSA_P256_SHA256],
            &[anchor],
            &intermediates,
            time,
            webpki::KeyUsage::required_if_present(EKU_CLIENT_AUTH),
            None,
            None,
        )
        .map_err(|e| Refusal::new(Check::Chain, format!("at {}: {e:?}", expected.at)))?;
    let (_, cert) = x509_parser::parse_x509_certificate(&doc.certificate)
        .map_err(|e| Refusal::new(Check::Chain, format!("certificate: {e}")))?;
    let point = cert.public_key().subject_public_key.data.to_vec();
    sign1.verify_signature(b"", |signature, data| {
        let key = ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P384_SHA384_FIXED, &point);
        key.verify(data, signature).map_err(|_| Refusal::new(Check::Signature, "ES384 signature does not verify"))
    })?;
    if doc.debug_mode() && !expected.allow_debug {
        return Err(Refusal::new(Check::DebugMode, "a debug-mode enclave (PCRs 0, 1, 2 all zero)"));
    }
    for (index, want) in &expected.pcrs {
        match doc.pcrs.get(index) {
            Some(got) if got == want => {}
            Some(got) => {
                return Err(Refusal::new(
                    Check::Pcr,
                    format!("PCR{index} is {}, pinned {}", hex::encode(got), hex::encode(want)),
                ))
            }
            None => return Err(Refusal::new(Check::Pcr, format!("PCR{index} absent"))),
        }
    }
    if let Some(nonce) = &expected.nonce {
        if doc.nonce.as_ref() != Some(nonce) {
            return Err(Refusal::new(Check::Nonce, "not the expected nonce"));
        }
    }
    if let Some(key) = &expected.public_key {
        if doc.public_key.as_ref() != Some(key) {
            return Err(Refusal::new(Check::PublicKey, "not the expected public key"));
        }
    }
    if let Some((now, max)) = expected.max_age {
        let made = doc.timestamp_ms / 1000;
        if made > now.saturating_add(FUTURE_SLACK_SECS) {
            return Err(Refusal::new(Check::Age, format!("made at {made}, after the verifier's {now}")));
        }
        if now.saturating_sub(made) > max {
            return Err(Refusal::new(Check::Age, format!("made at {made}, {}s before {now}", now - made)));
        }
    }
    Ok(doc)
}

/// Reads a document given as raw COSE bytes or as base64 text of them.
pub fn read_document(bytes: &[u8]) -> Vec<u8> {
    use base64::Engine;
    let text: Vec<u8> = bytes.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    match base64::engine::general_purpose::STANDARD.decode(&text) {
        Ok(raw) if !text.is_empty() => raw,
        _ => bytes.to_vec(),
    }
}
