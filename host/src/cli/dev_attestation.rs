//! `dev cluster init --attestation software`: a test PKI (a P-384 root and a document-signing
//! certificate under it) and development PCRs, given to every enclave's software attestation
//! provider and pinned for every node in the cluster file. Development only: it proves nothing.

use frostgate_common::error::{Error, ErrorCode};
use frostgate_host::coordinator::cluster::AttestationPins;
use std::collections::BTreeMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The development "image": PCRs 0, 1, 2 and 8, SHA-384 of their names.
pub fn dev_pcrs() -> BTreeMap<u8, String> {
    [0u8, 1, 2, 8]
        .into_iter()
        .map(|i| {
            let d =
                ring::digest::digest(&ring::digest::SHA384, format!("frostgate development image PCR{i}").as_bytes());
            (i, hex::encode(d.as_ref()))
        })
        .collect()
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::Internal, format!("development attestation PKI: {e}"))
}

/// The test PKI in `dir`: `root.pem`, `root.der`, `signer.der`, `signer.pk8`.
pub struct Pki {
    root_pem: PathBuf,
    files: Vec<(String, Vec<u8>)>,
}

impl Pki {
    /// Makes it.
    pub fn create(dir: &Path) -> Result<Pki, Error> {
        std::fs::create_dir_all(dir).map_err(internal)?;
        let alg = &rcgen::PKCS_ECDSA_P384_SHA384;
        let root_key = rcgen::KeyPair::generate_for(alg).map_err(internal)?;
        let mut root = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(internal)?;
        root.distinguished_name.push(rcgen::DnType::CommonName, "frostgate development attestation root");
        root.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        root.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::DigitalSignature];
        let root_cert = root.self_signed(&root_key).map_err(internal)?;
        let signer_key = rcgen::KeyPair::generate_for(alg).map_err(internal)?;
        let mut signer = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(internal)?;
        signer.distinguished_name.push(rcgen::DnType::CommonName, "frostgate development attestation signer");
        signer.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
        let issuer = rcgen::Issuer::new(root, &root_key);
        let signer_cert = signer.signed_by(&signer_key, &issuer).map_err(internal)?;
        let root_pem = dir.join("root.pem");
        std::fs::write(&root_pem, root_cert.pem()).map_err(internal)?;
        Ok(Pki {
            root_pem,
            files: vec![
                ("root.der".into(), root_cert.der().to_vec()),
                ("signer.der".into(), signer_cert.der().to_vec()),
                ("signer.pk8".into(), signer_key.serialize_der()),
            ],
        })
    }

    /// Writes the provider's files into `dir` (an enclave's own directory) and returns its
    /// `[attestation]` table with `pcrs`.
    pub fn enclave_table(&self, dir: &Path, pcrs: &BTreeMap<u8, String>) -> Result<String, Error> {
        std::fs::create_dir_all(dir).map_err(internal)?;
        for (name, bytes) in &self.files {
            // The signing key is the enclave's alone (its directory is too).
            let mut f = std::fs::OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(dir.join(name))
                .map_err(internal)?;
            std::io::Write::write_all(&mut f, bytes).map_err(internal)?;
        }
        let pcrs: Vec<String> = pcrs.iter().map(|(i, v)| format!("{i} = \"{v}\"")).collect();
        Ok(format!(
            "\n[attestation]\nprovider = \"software\"\ncertificate = \"{}\"\nkey = \"{}\"\nbundle = [\"{}\"]\npcrs = {{ {} }}\n",
            dir.join("signer.der").display(),
            dir.join("signer.pk8").display(),
            dir.join("root.der").display(),
            pcrs.join(", ")
        ))
    }

    /// An enclave's `[group]` pins of a peer whose enclave reports `pcrs` (an inline table for
    /// its participant entry).
    pub fn group_pins(&self, pcrs: &BTreeMap<u8, String>) -> String {
        let pcrs: Vec<String> = pcrs.iter().map(|(i, v)| format!("{i} = \"{v}\"")).collect();
        format!("attestation = {{ root = \"{}\", pcrs = {{ {} }} }}", self.root_pem.display(), pcrs.join(", "))
    }

    /// The cluster file's pins for a node whose enclave reports `pcrs` under `identity_key`.
    pub fn pins(&self, pcrs: &BTreeMap<u8, String>, identity_key: &str) -> AttestationPins {
        AttestationPins {
            identity_key: identity_key.to_string(),
            root: Some(self.root_pem.clone()),
            pcrs: pcrs.iter().map(|(i, v)| (i.to_string(), v.clone())).collect(),
            allow_debug: false,
        }
    }
}
