//! Frames: `u32` big-endian body length, then the body: `u16` big-endian protocol version,
//! `u64` big-endian request id, and the postcard encoding of one [`Message`].
//!
//! Invariant: decoding classifies every malformed frame with its own error code; a length above
//! [`MAX_FRAME_LEN`] is rejected from the 4-byte prefix alone, before any allocation.

use crate::error::{Error, ErrorCode};
use crate::limits::{FRAME_HEADER_LEN, MAX_FRAME_LEN};
use crate::protocol::{Message, KINDS, PROTOCOL_VERSION};

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// Pairs a reply with its request. 0 is reserved for errors about unreadable frames.
    pub request_id: u64,
    /// The message.
    pub message: Message,
}

/// A frame that could not be decoded, with the request id when the header was readable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError {
    /// The frame's request id, if the header could be read.
    pub request_id: Option<u64>,
    /// What was wrong.
    pub error: Error,
}

/// Encodes a frame, length prefix included.
pub fn encode(frame: &Frame) -> Result<Vec<u8>, Error> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&[0u8; 4]);
    out.extend_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    out.extend_from_slice(&frame.request_id.to_be_bytes());
    let out = postcard::to_extend(&frame.message, out)
        .map_err(|e| Error::new(ErrorCode::Internal, format!("encoding {}: {e}", frame.message.info().name)))?;
    let body_len = out.len() - 4;
    if body_len > MAX_FRAME_LEN {
        return Err(Error::new(
            ErrorCode::FrameTooLarge,
            format!("{} frame of {body_len} bytes exceeds {MAX_FRAME_LEN}", frame.message.info().name),
        ));
    }
    let mut out = out;
    let len =
        u32::try_from(body_len).map_err(|_| Error::new(ErrorCode::FrameTooLarge, "frame length overflows u32"))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

/// Checks a length prefix. Called before the body is allocated.
pub fn check_length(prefix: [u8; 4]) -> Result<usize, Error> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len > MAX_FRAME_LEN {
        return Err(Error::new(ErrorCode::FrameTooLarge, format!("frame length {len} exceeds {MAX_FRAME_LEN}")));
    }
    if len < FRAME_HEADER_LEN {
        return Err(Error::new(ErrorCode::FrameTruncated, format!("frame length {len} is shorter than the header")));
    }
    Ok(len)
}

/// Decodes a frame body (everything after the length prefix).
pub fn decode_body(body: &[u8]) -> Result<Frame, FrameError> {
    if body.len() < FRAME_HEADER_LEN {
        return Err(FrameError {
            request_id: None,
            error: Error::new(ErrorCode::FrameTruncated, "frame shorter than its header"),
        });
    }
    let version = u16::from_be_bytes([body[0], body[1]]);
    let mut id = [0u8; 8];
    id.copy_from_slice(&body[2..10]);
    let request_id = u64::from_be_bytes(id);
    let fail = |code, msg: String| FrameError { request_id: Some(request_id), error: Error::new(code, msg) };
    if version != PROTOCOL_VERSION {
        return Err(fail(
            ErrorCode::UnsupportedProtocolVersion,
            format!("protocol version {version}, this build speaks {PROTOCOL_VERSION}"),
        ));
    }
    let payload = &body[FRAME_HEADER_LEN..];
    match read_varint(payload) {
        Some(kind) if kind >= KINDS.len() as u64 => {
            return Err(fail(ErrorCode::UnknownMessageKind, format!("message kind {kind} is unknown")));
        }
        Some(_) => {}
        None => return Err(fail(ErrorCode::MalformedMessage, "message kind is not readable".into())),
    }
    match postcard::take_from_bytes::<Message>(payload) {
        Ok((message, [])) => Ok(Frame { request_id, message }),
        Ok((message, rest)) => Err(fail(
            ErrorCode::FrameTrailingBytes,
            format!("{} message followed by {} trailing bytes", message.info().name, rest.len()),
        )),
        Err(e) => Err(fail(ErrorCode::MalformedMessage, format!("message does not decode: {e}"))),
    }
}

/// Reads postcard's LEB128 varint (the enum variant index). `None` if absent or over 10 bytes.
fn read_varint(bytes: &[u8]) -> Option<u64> {
    let mut value: u64 = 0;
    for (i, b) in bytes.iter().take(10).enumerate() {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Builds a raw frame from parts, for tests and tools that need to send malformed frames.
pub fn raw_frame(version: u16, request_id: u64, payload: &[u8]) -> Vec<u8> {
    let body_len = (FRAME_HEADER_LEN + payload.len()) as u32;
    let mut out = Vec::with_capacity(4 + body_len as usize);
    out.extend_from_slice(&body_len.to_be_bytes());
    out.extend_from_slice(&version.to_be_bytes());
    out.extend_from_slice(&request_id.to_be_bytes());
    out.extend_from_slice(payload);
    out
}
