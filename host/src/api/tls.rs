//! Mutual TLS for the network API, with pinned certificates.
//!
//! Invariant: a TLS connection is established only if the peer presents, as its only certificate,
//! one of the certificates pinned in the configuration (byte-for-byte DER), and proves possession
//! of its key in the TLS 1.3 handshake. No CA, no name and no validity period is consulted: the
//! operator's pin list is the whole trust decision, so a certificate is revoked by removing it.
//! TLS 1.3 only, rustls with ring.
//!
//! The TLS private key is a host credential (it lets a process speak to the API, which the enclave
//! re-checks anyway); it is never logged and is read only from a file the operator provides.

use frostgate_common::error::{Error, ErrorCode};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The ALPN protocol of gRPC.
const ALPN_H2: &[u8] = b"h2";

/// One side's TLS files: its own certificate and key, and the peer certificates it accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFiles {
    /// This side's certificate (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// The certificates (PEM) a peer may present: clients for a node, the node for a client.
    pub peers: Vec<PathBuf>,
}

fn config_error(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("TLS {}: {e}", path.display()))
}

fn load_cert(path: &Path) -> Result<CertificateDer<'static>, Error> {
    CertificateDer::from_pem_file(path).map_err(|e| config_error(path, e))
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, Error> {
    // The error text names the file, never its contents.
    PrivateKeyDer::from_pem_file(path).map_err(|e| config_error(path, e))
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The pin set and the signature algorithms that check handshake signatures.
#[derive(Debug)]
struct Pins {
    certs: Vec<CertificateDer<'static>>,
    provider: Arc<CryptoProvider>,
}

impl Pins {
    fn load(files: &TlsFiles) -> Result<Pins, Error> {
        if files.peers.is_empty() {
            return Err(Error::new(ErrorCode::ConfigInvalid, "TLS: no pinned peer certificate"));
        }
        let certs = files.peers.iter().map(|p| load_cert(p)).collect::<Result<Vec<_>, _>>()?;
        Ok(Pins { certs, provider: provider() })
    }

    fn check(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
    ) -> Result<(), rustls::Error> {
        if intermediates.is_empty() && self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            Ok(())
        } else {
            tracing::warn!(code = %ErrorCode::PeerNotAuthorized, "TLS peer presented an unpinned certificate");
            Err(rustls::Error::InvalidCertificate(rustls::CertificateError::ApplicationVerificationFailure))
        }
    }

    fn tls13(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// The handshake-signature half of both verifiers: TLS 1.3 signatures checked with the
/// provider's algorithms against the (already pinned) certificate; TLS 1.2 is never offered.
macro_rules! handshake_signatures {
    () => {
        fn verify_tls12_signature(
            &self,
            _message: &[u8],
            _cert: &CertificateDer<'_>,
            _dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Err(rustls::Error::General("only TLS 1.3 is offered".into()))
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            self.0.tls13(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.schemes()
        }
    };
}

/// Accepts exactly the pinned client certificates.
#[derive(Debug)]
struct PinnedClients(Pins);

impl ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.check(end_entity, intermediates).map(|()| ClientCertVerified::assertion())
    }

    handshake_signatures!();
}

/// Accepts exactly the pinned server certificates, whatever name they carry.
#[derive(Debug)]
struct PinnedServers(Pins);

impl ServerCertVerifier for PinnedServers {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.0.check(end_entity, intermediates).map(|()| ServerCertVerified::assertion())
    }

    handshake_signatures!();
}

fn tls_error(e: rustls::Error) -> Error {
    Error::new(ErrorCode::ConfigInvalid, format!("TLS: {e}"))
}

/// The node's server configuration: its certificate, client certificates required and pinned.
pub fn server_config(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, Error> {
    let verifier = Arc::new(PinnedClients(Pins::load(files)?));
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .with_client_cert_verifier(verifier)
        .with_single_cert(vec![load_cert(&files.cert)?], load_key(&files.key)?)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Ok(Arc::new(config))
}

/// The signing service's HTTPS configuration: as [`server_config`], offering HTTP/2 and
/// HTTP/1.1 (clients such as Python's standard library speak HTTP/1.1).
pub fn server_config_http(files: &TlsFiles) -> Result<Arc<rustls::ServerConfig>, Error> {
    let mut config = Arc::unwrap_or_clone(server_config(files)?);
    config.alpn_protocols = vec![ALPN_H2.to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration for a server with a certificate authority's certificate (the service's
/// PostgreSQL): TLS 1.2 or 1.3, the server's certificate and name verified against `ca` alone.
pub fn client_config_with_ca(ca: &Path) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(load_cert(ca)?).map_err(tls_error)?;
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(tls_error)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// A client configuration: its own certificate, the node's certificate pinned.
pub fn client_config(files: &TlsFiles) -> Result<Arc<rustls::ClientConfig>, Error> {
    let verifier = Arc::new(PinnedServers(Pins::load(files)?));
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(tls_error)?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(vec![load_cert(&files.cert)?], load_key(&files.key)?)
        .map_err(tls_error)?;
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    config.enable_sni = false;
    Ok(Arc::new(config))
}

/// A self-signed certificate and its key, PEM (development clusters and tests).
pub fn generate(name: &str) -> Result<(String, String), Error> {
    let key = rcgen::KeyPair::generate().map_err(|e| Error::new(ErrorCode::Internal, e))?;
    let cert = rcgen::CertificateParams::new(vec![name.to_string()])
        .and_then(|p| p.self_signed(&key))
        .map_err(|e| Error::new(ErrorCode::Internal, e))?;
    Ok((cert.pem(), key.serialize_pem()))
}
