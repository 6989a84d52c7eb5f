//! The service client keeps its connection between calls, opens a new one when the server closed
//! it, and a clone calls on a connection of its own (against a plain HTTP/1.1 server that counts
//! its connections).

use frostgate_host::service::client::ServiceClient;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Serves `{"n": K}` (K: the request's number on the server) to every request; after each
/// answer closes the connection when `close` is set. Answers the address and the connection count.
async fn server(close: bool) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let (connections, requests) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counted = connections.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            counted.fetch_add(1, Ordering::SeqCst);
            let requests = requests.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: its head ends with an empty line (these requests carry no body).
                    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                        match tcp.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
                    buf.drain(..end);
                    let body = format!("{{\"n\": {}}}", requests.fetch_add(1, Ordering::SeqCst));
                    let connection = if close { "close" } else { "keep-alive" };
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: {connection}\r\n\r\n{body}",
                        body.len()
                    );
                    if tcp.write_all(answer.as_bytes()).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    (address, connections)
}

#[tokio::test]
async fn one_connection_for_many_calls_a_new_one_when_it_closed() {
    let (address, connections) = server(false).await;
    let client = ServiceClient::new(&format!("http://{address}"), None).expect("client");
    for n in 0..5 {
        let (status, v) = client.call("GET", "/healthz", None).await.expect("call");
        assert_eq!((status, v["n"].as_u64()), (200, Some(n)));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 1, "five calls on one kept connection");
    // A clone has its own connection.
    let other = client.clone();
    other.call("GET", "/healthz", None).await.expect("call");
    client.call("GET", "/healthz", None).await.expect("call");
    assert_eq!(connections.load(Ordering::SeqCst), 2);

    // A server that closes after each answer: every call still answers, each on a new connection.
    let (address, connections) = server(true).await;
    let client = ServiceClient::new(&format!("http://{address}"), None).expect("client");
    for n in 0..3 {
        let (status, v) = client.call("GET", "/healthz", None).await.expect("call after a close");
        assert_eq!((status, v["n"].as_u64()), (200, Some(n)));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 3);
}
