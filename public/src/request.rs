//! The session ids of a signing service request: derived, never chosen, so that every instance
//! of the service (and a takeover after one dies) signs a request under the same sessions, and
//! an enclave can check a session belongs to the request it names.

use bitcoin::hashes::{sha256, Hash, HashEngine};
use frostgate_common::ids::{KeyId, SessionId};
use frostgate_common::protocol::RequestTag;

const DOMAIN: &[u8] = b"frostgate/request-session/v1";

/// The session of `tag`'s request that signs under `key`: the digest (`input` `None`) or one
/// PSBT input. SHA-256 over the domain, the client, the length-prefixed request id, the key, the
/// attempt and the input (`u32::MAX` for a digest), first 16 bytes.
pub fn session_id(tag: &RequestTag, key: &KeyId, input: Option<u32>) -> SessionId {
    let mut e = sha256::Hash::engine();
    e.input(DOMAIN);
    e.input(&tag.client);
    let request = tag.request.as_inner().as_bytes();
    e.input(&[request.len() as u8]);
    e.input(request);
    e.input(key.as_bytes());
    e.input(&tag.attempt.to_be_bytes());
    e.input(&input.unwrap_or(u32::MAX).to_be_bytes());
    let digest = sha256::Hash::from_engine(e).to_byte_array();
    let mut id = [0u8; 16];
    id.copy_from_slice(&digest[..16]);
    SessionId::from_bytes(id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use frostgate_common::bounded::RequestName;

    fn tag(client: u8, request: &str, attempt: u32) -> RequestTag {
        RequestTag {
            client: [client; 32],
            request: RequestName::new(request.to_string()).expect("short"),
            accepted_unix: 1,
            attempt,
        }
    }

    #[test]
    fn every_input_changes_the_session() {
        let key = KeyId::from_bytes([7; 32]);
        let base = session_id(&tag(1, "pay-1", 0), &key, None);
        assert_eq!(base, session_id(&tag(1, "pay-1", 0), &key, None), "deterministic");
        let others = [
            session_id(&tag(2, "pay-1", 0), &key, None),
            session_id(&tag(1, "pay-2", 0), &key, None),
            session_id(&tag(1, "pay-1", 1), &key, None),
            session_id(&tag(1, "pay-1", 0), &KeyId::from_bytes([8; 32]), None),
            session_id(&tag(1, "pay-1", 0), &key, Some(0)),
            session_id(&tag(1, "pay-1", 0), &key, Some(1)),
        ];
        for (i, o) in others.iter().enumerate() {
            assert_ne!(*o, base, "input {i} changed nothing");
        }
        // The acceptance time is not part of it (a takeover computes the same ids).
        let mut later = tag(1, "pay-1", 0);
        later.accepted_unix = 99;
        assert_eq!(session_id(&later, &key, None), base);
    }
}
