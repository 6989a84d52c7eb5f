//! The multiplexed channel: concurrent requests in both directions on one connection, direction
//! checks, stray replies, and connection loss.

use frostgate_common::channel::{refuse_all, Channel, Handler};
use frostgate_common::error::ErrorCode;
use frostgate_common::frame::{self, raw_frame, Frame};
use frostgate_common::protocol::*;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

const T: Option<Duration> = Some(Duration::from_secs(10));

/// Answers pings after a delay that depends on the value, so replies come back out of order.
fn slow_echo() -> Handler {
    Arc::new(|m| {
        Box::pin(async move {
            match m {
                Message::Ping(p) => {
                    tokio::time::sleep(Duration::from_millis(p.echo % 7)).await;
                    Message::Pong(Pong { echo: p.echo })
                }
                Message::Health(Health) => Message::HealthReply(HealthReply {
                    state: ServiceState::Ready,
                    uptime_seconds: 1,
                    store_commits: 0,
                    store_records: 0,
                    hsm_operations: 0,
                    hsm_micros: 0,
                    dev_features: frostgate_common::bounded::Label::new(String::new()).expect("label"),
                    host_reconnects: 0,
                    enclave_restarts: 0,
                    policy_hash: [0; 32],
                    custody_profile: None,
                    hsm_calls: Default::default(),
                    open_sessions: 0,
                    open_attempts: 0,
                }),
                other => Message::error(ErrorCode::UnexpectedMessage, other.info().name),
            }
        })
    })
}

fn pair() -> (Channel, Channel) {
    let (a, b) = UnixStream::pair().expect("pair");
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let (host, _) = Channel::start(Side::Host, Box::new(ar), Box::new(aw), slow_echo());
    let (enclave, _) = Channel::start(Side::Enclave, Box::new(br), Box::new(bw), slow_echo());
    (host, enclave)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_requests_in_flight_in_both_directions() {
    let (host, enclave) = pair();
    let mut tasks = Vec::new();
    for i in 0..200u64 {
        let (h, e) = (host.clone(), enclave.clone());
        tasks.push(tokio::spawn(async move {
            let a = h.call(Message::Ping(Ping { echo: i }), T).await.expect("host call");
            let b = e.call(Message::Ping(Ping { echo: 1000 + i }), T).await.expect("enclave call");
            (i, a, b)
        }));
    }
    for t in tasks {
        let (i, a, b) = t.await.expect("join");
        assert_eq!(a, Message::Pong(Pong { echo: i }));
        assert_eq!(b, Message::Pong(Pong { echo: 1000 + i }));
    }
    assert_eq!(host.in_flight(), 0);
    assert_eq!(enclave.in_flight(), 0);
}

#[tokio::test]
async fn a_side_cannot_send_the_other_sides_requests() {
    let (_host, enclave) = pair();
    // Health is host -> enclave only: the enclave's channel refuses to send it.
    let e = enclave.call(Message::Health(Health), T).await.expect_err("refused");
    assert_eq!(e.code(), ErrorCode::Internal);
}

#[tokio::test]
async fn a_request_from_the_wrong_side_is_answered_unexpected_message() {
    let (a, b) = UnixStream::pair().expect("pair");
    let (br, bw) = b.into_split();
    let (_host, _) = Channel::start(Side::Host, Box::new(br), Box::new(bw), slow_echo());
    // Pretend to be an enclave sending a host-only request (Health) to the host.
    let (mut r, mut w) = a.into_split();
    w.write_all(&frame::encode(&Frame { request_id: 42, message: Message::Health(Health) }).expect("encode"))
        .await
        .expect("write");
    let reply = read_frame(&mut r).await;
    assert_eq!(reply.request_id, 42);
    assert!(matches!(reply.message, Message::Error(ref e) if e.code() == ErrorCode::UnexpectedMessage), "{reply:?}");
}

#[tokio::test]
async fn stray_replies_are_dropped_and_the_connection_keeps_working() {
    let (a, b) = UnixStream::pair().expect("pair");
    let (br, bw) = b.into_split();
    let (_enclave, _) = Channel::start(Side::Enclave, Box::new(br), Box::new(bw), slow_echo());
    let (mut r, mut w) = a.into_split();
    let stray = Frame { request_id: 77, message: Message::Pong(Pong { echo: 1 }) };
    w.write_all(&frame::encode(&stray).expect("encode")).await.expect("write");
    let ping = Frame { request_id: 78, message: Message::Ping(Ping { echo: 2 }) };
    w.write_all(&frame::encode(&ping).expect("encode")).await.expect("write");
    let reply = read_frame(&mut r).await;
    assert_eq!(reply, Frame { request_id: 78, message: Message::Pong(Pong { echo: 2 }) });
}

#[tokio::test]
async fn a_bad_frame_is_answered_and_the_next_good_one_served() {
    let (a, b) = UnixStream::pair().expect("pair");
    let (br, bw) = b.into_split();
    let (_enclave, _) = Channel::start(Side::Enclave, Box::new(br), Box::new(bw), slow_echo());
    let (mut r, mut w) = a.into_split();
    w.write_all(&raw_frame(PROTOCOL_VERSION + 1, 5, &[5, 1])).await.expect("write");
    let reply = read_frame(&mut r).await;
    assert_eq!(reply.request_id, 5);
    assert!(matches!(reply.message, Message::Error(ref e) if e.code() == ErrorCode::UnsupportedProtocolVersion));
    w.write_all(&frame::encode(&Frame { request_id: 6, message: Message::Ping(Ping { echo: 3 }) }).expect("encode"))
        .await
        .expect("write");
    assert_eq!(read_frame(&mut r).await.message, Message::Pong(Pong { echo: 3 }));
}

#[tokio::test]
async fn outstanding_calls_fail_channel_closed_when_the_peer_goes_away() {
    let (a, b) = UnixStream::pair().expect("pair");
    let (ar, aw) = a.into_split();
    let (host, _) = Channel::start(Side::Host, Box::new(ar), Box::new(aw), refuse_all());
    let call = tokio::spawn(async move { host.call(Message::Health(Health), T).await });
    // Read the request, then close without answering.
    let (mut br, _bw) = b.into_split();
    let _ = read_frame(&mut br).await;
    drop(br);
    drop(_bw);
    let e = call.await.expect("join").expect_err("closed");
    assert_eq!(e.code(), ErrorCode::ChannelClosed);
}

async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> Frame {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix).await.expect("prefix");
    let len = frame::check_length(prefix).expect("len");
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.expect("body");
    frame::decode_body(&body).expect("decode")
}

/// Never answers pings (holds them until the connection ends).
fn black_hole() -> Handler {
    Arc::new(|_m| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Message::error(ErrorCode::Internal, "unreachable")
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_without_a_reply_times_out_and_a_full_window_refuses_more() {
    let (a, b) = UnixStream::pair().expect("pair");
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let (host, _) = Channel::start(Side::Host, Box::new(ar), Box::new(aw), refuse_all());
    let (_enclave, _) = Channel::start(Side::Enclave, Box::new(br), Box::new(bw), black_hole());
    let e = host.call(Message::Ping(Ping { echo: 1 }), Some(Duration::from_millis(50))).await.expect_err("timeout");
    assert_eq!((e.code(), e.recovery_class()), (ErrorCode::RequestTimeout, frostgate_common::RecoveryClass::Retry));
    assert_eq!(host.in_flight(), 0, "a timed-out call leaves no pending entry");
    // Fill the window of outstanding requests on a fresh connection (the timed-out ping above
    // still occupies one of the peer's serving slots); one more is refused locally.
    let (a, b) = UnixStream::pair().expect("pair");
    let (ar, aw) = a.into_split();
    let (br, bw) = b.into_split();
    let (host, _) = Channel::start(Side::Host, Box::new(ar), Box::new(aw), refuse_all());
    let (_enclave2, _) = Channel::start(Side::Enclave, Box::new(br), Box::new(bw), black_hole());
    let max = frostgate_common::limits::MAX_IN_FLIGHT;
    let mut waiting = Vec::new();
    for i in 0..max {
        let h = host.clone();
        waiting.push(tokio::spawn(async move { h.call(Message::Ping(Ping { echo: i as u64 }), None).await }));
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while host.in_flight() < max {
        assert!(std::time::Instant::now() < deadline, "only {} calls in flight", host.in_flight());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let e = host.call(Message::Ping(Ping { echo: 0 }), None).await.expect_err("window full");
    assert_eq!(e.code(), ErrorCode::TooManyInFlight);
    for w in waiting {
        w.abort();
    }
}
