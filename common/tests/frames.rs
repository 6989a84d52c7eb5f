//! Frame round trips (property tests over every message kind) and every malformed-frame class.

use frostgate_common::bounded::*;
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::frame::{self, decode_body, raw_frame, Frame};
use frostgate_common::limits::{MAX_FRAME_LEN, MAX_LABEL_LEN, MAX_TEXT_LEN};
use frostgate_common::protocol::*;
use proptest::prelude::*;

#[path = "support/strategy.rs"]
mod strategy;
use strategy::*;

proptest! {
    #[test]
    fn every_message_round_trips(request_id in any::<u64>(), message in message()) {
        let f = Frame { request_id, message };
        let bytes = frame::encode(&f).expect("encodes");
        let len = frame::check_length(bytes[..4].try_into().expect("prefix")).expect("length ok");
        prop_assert_eq!(len, bytes.len() - 4);
        prop_assert_eq!(decode_body(&bytes[4..]).expect("decodes"), f);
    }

    #[test]
    fn garbage_never_panics_and_always_gets_a_frame_code(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = decode_body(&body) {
            prop_assert!(matches!(e.error.code(),
                ErrorCode::FrameTruncated | ErrorCode::UnsupportedProtocolVersion | ErrorCode::UnknownMessageKind
                | ErrorCode::MalformedMessage | ErrorCode::FrameTrailingBytes));
        }
    }
}

#[test]
fn the_round_trip_strategy_produces_every_kind() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = message();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20_000 {
        seen.insert(strategy.new_tree(&mut runner).expect("value").current().kind());
    }
    let all: std::collections::BTreeSet<usize> = (0..KINDS.len()).collect();
    assert_eq!(seen, all, "the strategy misses a message kind: extend `message()`");
}

fn ping_payload() -> Vec<u8> {
    postcard::to_stdvec(&Message::Ping(Ping { echo: 7 })).expect("encode")
}

#[test]
fn oversize_length_is_rejected_from_the_prefix() {
    let prefix = ((MAX_FRAME_LEN + 1) as u32).to_be_bytes();
    assert_eq!(frame::check_length(prefix).expect_err("too large").code(), ErrorCode::FrameTooLarge);
    assert_eq!(frame::check_length(u32::MAX.to_be_bytes()).expect_err("too large").code(), ErrorCode::FrameTooLarge);
    assert!(frame::check_length((MAX_FRAME_LEN as u32).to_be_bytes()).is_ok());
}

#[test]
fn bounded_fields_keep_every_frame_under_the_limit() {
    // An error message is bounded, so no current message can exceed the frame limit; the
    // encoder's check is exercised through the length check on the decode side instead.
    let big = Message::Error(Error::new(ErrorCode::Internal, "x".repeat(10 * MAX_TEXT_LEN)));
    let bytes = frame::encode(&Frame { request_id: 1, message: big }).expect("bounded text fits");
    assert!(bytes.len() < MAX_FRAME_LEN);
}

#[test]
fn short_and_truncated_frames_are_typed() {
    assert_eq!(decode_body(&[0u8; 3]).expect_err("short").error.code(), ErrorCode::FrameTruncated);
    assert_eq!(frame::check_length(3u32.to_be_bytes()).expect_err("short").code(), ErrorCode::FrameTruncated);
    // Header present, message cut off in the middle of a field.
    let full = raw_frame(PROTOCOL_VERSION, 9, &ping_payload());
    let cut = &full[4..full.len() - 1];
    let e = decode_body(cut).expect_err("cut");
    assert_eq!(e.error.code(), ErrorCode::MalformedMessage);
    assert_eq!(e.request_id, Some(9));
}

#[test]
fn trailing_bytes_are_typed() {
    let mut payload = ping_payload();
    payload.push(0);
    let f = raw_frame(PROTOCOL_VERSION, 3, &payload);
    let e = decode_body(&f[4..]).expect_err("trailing");
    assert_eq!(e.error.code(), ErrorCode::FrameTrailingBytes);
    assert_eq!(e.request_id, Some(3));
}

#[test]
fn other_versions_are_typed() {
    for v in [0, PROTOCOL_VERSION + 1, u16::MAX] {
        let f = raw_frame(v, 4, &ping_payload());
        let e = decode_body(&f[4..]).expect_err("version");
        assert_eq!(e.error.code(), ErrorCode::UnsupportedProtocolVersion);
        assert_eq!(e.request_id, Some(4));
    }
}

#[test]
fn unknown_kinds_are_typed() {
    for kind in [KINDS.len() as u8, 0x7f] {
        let f = raw_frame(PROTOCOL_VERSION, 5, &[kind]);
        assert_eq!(decode_body(&f[4..]).expect_err("kind").error.code(), ErrorCode::UnknownMessageKind);
    }
    // A multi-byte varint kind.
    let f = raw_frame(PROTOCOL_VERSION, 5, &[0x80, 0x01]);
    assert_eq!(decode_body(&f[4..]).expect_err("kind").error.code(), ErrorCode::UnknownMessageKind);
}

#[test]
fn garbage_and_bound_violations_are_malformed() {
    // Known kind (Hello), body garbage.
    let f = raw_frame(PROTOCOL_VERSION, 6, &[1, 0xff, 0xff, 0xff, 0xff, 0xff]);
    assert_eq!(decode_body(&f[4..]).expect_err("garbage").error.code(), ErrorCode::MalformedMessage);
    // Hello whose client label exceeds its bound.
    let mut payload = vec![1u8, 1];
    let long = "a".repeat(MAX_LABEL_LEN + 1);
    payload.extend(postcard::to_stdvec(&long).expect("encode"));
    let f = raw_frame(PROTOCOL_VERSION, 6, &payload);
    assert_eq!(decode_body(&f[4..]).expect_err("bound").error.code(), ErrorCode::MalformedMessage);
    // Missing kind entirely.
    let f = raw_frame(PROTOCOL_VERSION, 6, &[]);
    assert_eq!(decode_body(&f[4..]).expect_err("empty").error.code(), ErrorCode::MalformedMessage);
    // Bound types reject on construction as well.
    assert!(Text::new("x".repeat(MAX_TEXT_LEN + 1)).is_err());
}
