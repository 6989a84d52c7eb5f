//! Development builds only: a software stand-in for the NSM. It signs Nitro-format documents
//! (COSE_Sign1, ES384) with a test PKI's key given in `[attestation]`, reporting the configured
//! PCRs, so the suite can run attested enclaves (and enclaves whose PCRs differ from their pins)
//! without Nitro hardware. It proves nothing; production builds do not contain it.

use super::{config_err, AttestationConfig, Provider};
use ciborium::Value;
use coset::{iana, CborSerializable, CoseSign1Builder, HeaderBuilder};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::AttestationProvider;
use ring::signature::{EcdsaKeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};
use std::collections::BTreeMap;

/// The stand-in.
pub struct Software {
    key: EcdsaKeyPair,
    certificate: Vec<u8>,
    bundle: Vec<Vec<u8>>,
    pcrs: BTreeMap<u8, Vec<u8>>,
}

impl std::fmt::Debug for Software {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Software").field("pcrs", &self.pcrs.keys().collect::<Vec<_>>()).finish_non_exhaustive()
    }
}

fn read(path: &Option<std::path::PathBuf>, what: &str) -> Result<Vec<u8>, Error> {
    let path = path.as_ref().ok_or_else(|| config_err(format!("provider \"software\" needs `{what}`")))?;
    std::fs::read(path).map_err(|e| config_err(format!("{}: {e}", path.display())))
}

impl Software {
    /// From `[attestation]`'s test PKI and PCRs.
    pub fn from_config(c: &AttestationConfig) -> Result<Software, Error> {
        let pkcs8 = zeroize::Zeroizing::new(read(&c.key, "key")?);
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8, &ring::rand::SystemRandom::new())
            .map_err(|e| config_err(format!("key: not a P-384 PKCS#8 key ({e})")))?;
        let bundle = c
            .bundle
            .iter()
            .map(|p| std::fs::read(p).map_err(|e| config_err(format!("{}: {e}", p.display()))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut pcrs = BTreeMap::new();
        for (i, hex_value) in &c.pcrs {
            let v = hex::decode(hex_value).map_err(|e| config_err(format!("pcrs.{i}: {e}")))?;
            if v.len() != 48 {
                return Err(config_err(format!("pcrs.{i}: {} bytes, a PCR has 48", v.len())));
            }
            pcrs.insert(*i, v);
        }
        Ok(Software { key, certificate: read(&c.certificate, "certificate")?, bundle, pcrs })
    }
}

impl Provider for Software {
    fn kind(&self) -> AttestationProvider {
        AttestationProvider::Software
    }

    fn document(&self, public_key: &[u8], nonce: &[u8]) -> Result<Vec<u8>, Error> {
        let internal =
            |e: &dyn std::fmt::Display| Error::new(ErrorCode::Internal, format!("software attestation: {e}"));
        let now =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_err(|e| internal(&e))?.as_millis()
                as u64;
        let text = |s: &str| Value::Text(s.into());
        let payload = Value::Map(vec![
            (text("module_id"), text("frostgate-software-attestation")),
            (text("digest"), text("SHA384")),
            (text("timestamp"), Value::Integer(now.into())),
            (
                text("pcrs"),
                Value::Map(
                    self.pcrs.iter().map(|(i, v)| (Value::Integer((*i).into()), Value::Bytes(v.clone()))).collect(),
                ),
            ),
            (text("certificate"), Value::Bytes(self.certificate.clone())),
            (text("cabundle"), Value::Array(self.bundle.iter().cloned().map(Value::Bytes).collect())),
            (text("public_key"), Value::Bytes(public_key.to_vec())),
            (text("user_data"), Value::Null),
            (text("nonce"), Value::Bytes(nonce.to_vec())),
        ]);
        let mut bytes = Vec::new();
        ciborium::into_writer(&payload, &mut bytes).map_err(|e| internal(&e))?;
        let rng = ring::rand::SystemRandom::new();
        let mut failed = None;
        let sign1 = CoseSign1Builder::new()
            .protected(HeaderBuilder::new().algorithm(iana::Algorithm::ES384).build())
            .payload(bytes)
            .create_signature(b"", |data| match self.key.sign(&rng, data) {
                Ok(sig) => sig.as_ref().to_vec(),
                Err(e) => {
                    failed = Some(e.to_string());
                    Vec::new()
                }
            })
            .build();
        if let Some(e) = failed {
            return Err(internal(&e));
        }
        sign1.to_vec().map_err(|e| internal(&format!("{e:?}")))
    }
}
