//! Hard limits shared by both processes. Checked on decode (before allocation) and on encode.

/// Largest frame body (everything after the 4-byte length prefix), in bytes.
/// A length prefix above this is rejected before any buffer is allocated.
pub const MAX_FRAME_LEN: usize = 1 << 20;

/// Fixed frame header after the length prefix: u16 protocol version, u64 request id.
pub const FRAME_HEADER_LEN: usize = 2 + 8;

/// The enclave's default nonce TTL, seconds: a live nonce pair (round 1 or preprocessed) older
/// than this is wiped. Coordinators and admission count on it (one source for every copy).
pub const NONCE_TTL_SECS: u64 = 300;

/// The enclave's default session TTL, seconds: a session older than this is removed with its
/// attempts, nonces and markers.
pub const SESSION_TTL_SECS: u64 = 3600;

/// The enclave's default DKG TTL, seconds: a DKG, refresh or repair not finished within this long
/// is dropped with its secrets.
pub const DKG_TTL_SECS: u64 = 600;

/// How long an enclave keeps a signing service request bound to what it signs, seconds, from the
/// service's acceptance of it: a request older than this is refused (`request_expired`). Longer
/// than the service retries a request (600 s) plus a lease.
pub const REQUEST_TTL_SECS: u64 = 900;

/// Longest request id a signing service client may choose, in bytes (`[A-Za-z0-9._-]`).
pub const MAX_REQUEST_ID_LEN: usize = 64;

/// Whether `id` is a well-formed request id: 1..=[`MAX_REQUEST_ID_LEN`] characters of
/// `[A-Za-z0-9._-]` (the service and every enclave check the same rule).
pub fn request_id_valid(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_REQUEST_ID_LEN
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Most participants in one group (FROST identifiers are 1..=MAX_PARTICIPANTS).
pub const MAX_PARTICIPANTS: u16 = 100;

/// Longest human-readable text carried by a message (error messages, names), in bytes.
pub const MAX_TEXT_LEN: usize = 512;

/// Longest short label (build names, client names), in bytes.
pub const MAX_LABEL_LEN: usize = 64;

/// BIP328's chain code for the xpub of an aggregate (here: FROST group) key.
pub const BIP328_CHAIN_CODE: [u8; 32] = [
    0x86, 0x80, 0x87, 0xca, 0x02, 0xa6, 0xf9, 0x74, 0xc4, 0x59, 0x89, 0x24, 0xc3, 0x6b, 0x57, 0x76, 0x2d, 0x32, 0xcb,
    0x45, 0x71, 0x71, 0x67, 0xe3, 0x00, 0x62, 0x2c, 0x71, 0x67, 0xe3, 0x89, 0x65,
];

/// The deepest unhardened derivation path an enclave signs for (a wallet uses 2: `<0|1>/i`).
pub const MAX_DERIVATION_DEPTH: usize = 6;

/// Most requests one side may have outstanding on one connection.
pub const MAX_IN_FLIGHT: usize = 1024;

/// Most preprocessed commitments one request may ask for (and one reply carries).
pub const MAX_PREPROCESS: usize = 64;

/// Most sessions one request may close.
pub const MAX_CLOSE_BATCH: usize = 64;

/// Most signings one `SignBatch` carries.
pub const MAX_SIGN_BATCH: usize = 32;
