//! The AWS Nitro Enclaves security module (`/dev/nsm`), through AWS's own driver crate.

use super::Provider;
use aws_nitro_enclaves_nsm_api::api::{Request, Response};
use aws_nitro_enclaves_nsm_api::driver;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::AttestationProvider;
use serde_bytes::ByteBuf;

/// An open NSM device.
#[derive(Debug)]
pub struct Nsm {
    fd: i32,
}

impl Nsm {
    /// Opens `/dev/nsm`; refused outside a Nitro Enclave (the device exists nowhere else).
    pub fn open() -> Result<Nsm, Error> {
        if !std::path::Path::new("/dev/nsm").exists() {
            return Err(Error::new(
                ErrorCode::ConfigInvalid,
                "attestation provider \"nitro\": /dev/nsm is absent (not inside an AWS Nitro Enclave)",
            ));
        }
        let fd = driver::nsm_init();
        if fd < 0 {
            return Err(Error::new(ErrorCode::ConfigInvalid, "attestation provider \"nitro\": /dev/nsm did not open"));
        }
        Ok(Nsm { fd })
    }
}

impl Provider for Nsm {
    fn kind(&self) -> AttestationProvider {
        AttestationProvider::Nitro
    }

    fn document(&self, public_key: &[u8], nonce: &[u8]) -> Result<Vec<u8>, Error> {
        let request = Request::Attestation {
            user_data: None,
            nonce: Some(ByteBuf::from(nonce.to_vec())),
            public_key: Some(ByteBuf::from(public_key.to_vec())),
        };
        match driver::nsm_process_request(self.fd, request) {
            Response::Attestation { document } => Ok(document),
            Response::Error(e) => Err(Error::new(ErrorCode::Internal, format!("NSM attestation: {e:?}"))),
            other => Err(Error::new(ErrorCode::Internal, format!("NSM attestation: unexpected {other:?}"))),
        }
    }
}

impl Drop for Nsm {
    fn drop(&mut self) {
        driver::nsm_exit(self.fd);
    }
}
