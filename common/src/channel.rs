//! One framed, multiplexed connection between host and enclave.
//!
//! Both sides may send requests on the same connection; replies are paired by request id, so
//! several requests may be in flight at once in each direction. Invariants: a reply is never
//! answered (no error ping-pong); a request whose kind the sender's side may not send is
//! answered with `unexpected_message`; a frame with a readable length is always consumed whole,
//! so one bad frame never desynchronizes the stream; an oversize length closes the connection
//! (its body is never read). When the connection ends, every outstanding call fails with
//! `channel_closed`.

use crate::error::{Error, ErrorCode};
use crate::frame::{self, Frame};
use crate::limits::MAX_IN_FLIGHT;
use crate::protocol::{reply_of, Message, Request, Role, Side};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// Boxed reader half of a transport.
pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// Boxed writer half of a transport.
pub type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;
/// A boxed future returning the reply to a request.
pub type ReplyFuture = Pin<Box<dyn Future<Output = Message> + Send>>;
/// Answers incoming requests. Receives only requests the peer's side may send.
pub type Handler = Arc<dyn Fn(Message) -> ReplyFuture + Send + Sync>;

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Message>>>>;
/// The peer's error about the connection itself (request id 0), e.g. `peer_not_authorized`.
type CloseReason = Arc<Mutex<Option<Error>>>;

/// A handler that refuses every request (for a side that expects none).
pub fn refuse_all() -> Handler {
    Arc::new(|m: Message| {
        let name = m.info().name;
        Box::pin(async move { Message::error(ErrorCode::UnexpectedMessage, format!("{name} is not served here")) })
    })
}

/// Refuses a peer: one error frame (request id 0), then the connection is shut down.
pub async fn refuse(mut writer: BoxWrite, error: Error) {
    if let Ok(bytes) = frame::encode(&Frame { request_id: 0, message: Message::Error(error) }) {
        let _ = writer.write_all(&bytes).await;
        let _ = writer.shutdown().await;
    }
}

/// The sending half of a connection; cheap to clone.
#[derive(Clone, Debug)]
pub struct Channel {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    side: Side,
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    close_reason: CloseReason,
    next_id: AtomicU64,
}

impl Channel {
    /// Starts the reader and writer tasks for one connection. `side` is this end's side.
    /// Returns the channel and a task that completes when the connection has ended.
    pub fn start(
        side: Side,
        reader: BoxRead,
        writer: BoxWrite,
        handler: Handler,
    ) -> (Channel, tokio::task::JoinHandle<()>) {
        Self::start_with(side, reader, writer, |_| handler)
    }

    /// Like [`Channel::start`], but the handler is built from the channel itself before the
    /// first frame is read, so a handler can always reach its own connection.
    pub fn start_with(
        side: Side,
        reader: BoxRead,
        writer: BoxWrite,
        make_handler: impl FnOnce(Channel) -> Handler,
    ) -> (Channel, tokio::task::JoinHandle<()>) {
        let (out, out_rx) = mpsc::channel::<Vec<u8>>(MAX_IN_FLIGHT);
        let pending: Pending = Arc::new(Mutex::new(HashMap::new()));
        let close_reason: CloseReason = Arc::new(Mutex::new(None));
        let inner = Arc::new(Inner {
            side,
            out: out.clone(),
            pending: pending.clone(),
            close_reason: close_reason.clone(),
            next_id: AtomicU64::new(1),
        });
        let channel = Channel { inner };
        let handler = make_handler(channel.clone());
        let (close_tx, close_rx) = oneshot::channel::<()>();
        let writer_task = tokio::spawn(write_loop(writer, out_rx, close_rx));
        let done = tokio::spawn(async move {
            read_loop(side, reader, out, pending.clone(), close_reason, handler).await;
            // Dropping every sender fails the outstanding calls with `channel_closed`.
            lock(&pending).clear();
            // The writer flushes what is queued (e.g. the error about the last frame), then
            // shuts the connection down.
            let _ = close_tx.send(());
            let _ = writer_task.await;
        });
        (channel, done)
    }

    /// Sends a typed request and waits for its typed reply (see [`crate::protocol::Request`]).
    pub async fn request<R: Request>(&self, request: R, timeout: Option<Duration>) -> Result<R::Reply, Error> {
        let reply = self.call(request.into(), timeout).await?;
        reply_of::<R>(reply)
    }

    /// Sends a request and waits for its reply. An `Error` reply becomes `Err`.
    pub async fn call(&self, request: Message, timeout: Option<Duration>) -> Result<Message, Error> {
        let info = request.info();
        if info.role != Role::Request || !info.direction.allows_sender(self.inner.side) {
            return Err(Error::new(ErrorCode::Internal, format!("{} is not a request this side may send", info.name)));
        }
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = lock(&self.inner.pending);
            if pending.len() >= MAX_IN_FLIGHT {
                return Err(Error::new(ErrorCode::TooManyInFlight, format!("{MAX_IN_FLIGHT} requests outstanding")));
            }
            pending.insert(id, tx);
        }
        let _guard = PendingGuard { pending: &self.inner.pending, id };
        let bytes = frame::encode(&Frame { request_id: id, message: request })?;
        self.inner.out.send(bytes).await.map_err(|_| self.closed("connection closed"))?;
        let reply = match timeout {
            Some(t) => tokio::time::timeout(t, rx).await.map_err(|_| {
                Error::new(ErrorCode::RequestTimeout, format!("no reply to {} within {t:?}", info.name))
            })?,
            None => rx.await,
        };
        match reply {
            Ok(Message::Error(e)) => Err(e),
            Ok(m) => Ok(m),
            Err(_) => Err(self.closed(&format!("connection closed before the reply to {}", info.name))),
        }
    }

    /// The error for a call cut off by the connection's end: the peer's stated reason if it
    /// gave one, else `channel_closed`.
    fn closed(&self, what: &str) -> Error {
        lock(&self.inner.close_reason).clone().unwrap_or_else(|| Error::new(ErrorCode::ChannelClosed, what))
    }

    /// Whether two handles send on the same connection.
    pub fn same_connection(&self, other: &Channel) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Whether the connection has ended (its writer is gone; set before the task returned by
    /// [`Channel::start`] completes).
    pub fn is_closed(&self) -> bool {
        self.inner.out.is_closed()
    }

    /// Number of this side's requests awaiting a reply.
    pub fn in_flight(&self) -> usize {
        lock(&self.inner.pending).len()
    }
}

/// Removes a pending entry when its call ends for any reason (reply, timeout, cancellation).
struct PendingGuard<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A poisoned map only means a task panicked while holding it; the map itself stays valid.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn write_loop(mut writer: BoxWrite, mut rx: mpsc::Receiver<Vec<u8>>, mut close: oneshot::Receiver<()>) {
    loop {
        let bytes = tokio::select! {
            biased;
            bytes = rx.recv() => match bytes {
                Some(b) => b,
                None => break,
            },
            _ = &mut close => {
                while let Ok(bytes) = rx.try_recv() {
                    if writer.write_all(&bytes).await.is_err() {
                        break;
                    }
                }
                break;
            }
        };
        if let Err(e) = writer.write_all(&bytes).await {
            tracing::debug!(error = %e, "channel write failed");
            return;
        }
        if writer.flush().await.is_err() {
            return;
        }
    }
    let _ = writer.shutdown().await;
}

async fn send_reply(out: &mpsc::Sender<Vec<u8>>, request_id: u64, message: Message) {
    match frame::encode(&Frame { request_id, message }) {
        Ok(bytes) => {
            let _ = out.send(bytes).await;
        }
        Err(e) => {
            tracing::error!(code = %e.code(), "reply does not encode");
            if let Ok(bytes) = frame::encode(&Frame { request_id, message: Message::Error(e) }) {
                let _ = out.send(bytes).await;
            }
        }
    }
}

async fn read_loop(
    side: Side,
    mut reader: BoxRead,
    out: mpsc::Sender<Vec<u8>>,
    pending: Pending,
    close_reason: CloseReason,
    handler: Handler,
) {
    let peer = match side {
        Side::Host => Side::Enclave,
        Side::Enclave => Side::Host,
    };
    let serving = Arc::new(AtomicUsize::new(0));
    loop {
        let mut prefix = [0u8; 4];
        match read_exact_or_eof(&mut reader, &mut prefix).await {
            ReadOutcome::Eof => return,
            ReadOutcome::Partial | ReadOutcome::Failed => {
                tracing::warn!(code = %ErrorCode::FrameTruncated, "connection ended inside a length prefix");
                return;
            }
            ReadOutcome::Full => {}
        }
        let len = match frame::check_length(prefix) {
            Ok(len) => len,
            Err(e) => {
                tracing::warn!(code = %e.code(), "rejecting frame: {}", e.message());
                if e.code() == ErrorCode::FrameTooLarge {
                    // The body is never read, so the stream cannot be resynchronized: close.
                    send_reply(&out, 0, Message::Error(e)).await;
                    return;
                }
                // A length shorter than the header: consume it and carry on.
                let mut skip = vec![0u8; u32::from_be_bytes(prefix) as usize];
                if !matches!(read_exact_or_eof(&mut reader, &mut skip).await, ReadOutcome::Full) && !skip.is_empty() {
                    return;
                }
                send_reply(&out, 0, Message::Error(e)).await;
                continue;
            }
        };
        let mut body = vec![0u8; len];
        if !matches!(read_exact_or_eof(&mut reader, &mut body).await, ReadOutcome::Full) {
            tracing::warn!(code = %ErrorCode::FrameTruncated, "connection ended inside a frame");
            return;
        }
        let frame = match frame::decode_body(&body) {
            Ok(frame) => frame,
            Err(fe) => {
                tracing::warn!(code = %fe.error.code(), "rejecting frame: {}", fe.error.message());
                send_reply(&out, fe.request_id.unwrap_or(0), Message::Error(fe.error)).await;
                continue;
            }
        };
        let info = frame.message.info();
        match info.role {
            Role::Reply if frame.request_id == 0 => {
                // An error about the connection or an unreadable frame: remembered as the reason
                // any outstanding call fails if the peer then closes.
                if let Message::Error(e) = frame.message {
                    tracing::warn!(code = %e.code(), "peer reported a connection error: {}", e.message());
                    *lock(&close_reason) = Some(e);
                }
            }
            Role::Reply => {
                let waiter = lock(&pending).remove(&frame.request_id);
                match waiter {
                    Some(tx) => {
                        let _ = tx.send(frame.message);
                    }
                    None => tracing::warn!(
                        code = %ErrorCode::UnexpectedMessage,
                        kind = info.name,
                        request_id = frame.request_id,
                        "dropping a reply to no outstanding request"
                    ),
                }
            }
            Role::Request if !info.direction.allows_sender(peer) => {
                let e = Message::error(
                    ErrorCode::UnexpectedMessage,
                    format!("{} may not be sent by the {peer:?}", info.name),
                );
                send_reply(&out, frame.request_id, e).await;
            }
            Role::Request => {
                if serving.load(Ordering::Acquire) >= MAX_IN_FLIGHT {
                    let e = Message::error(
                        ErrorCode::TooManyInFlight,
                        format!("{MAX_IN_FLIGHT} requests already being served"),
                    );
                    send_reply(&out, frame.request_id, e).await;
                    continue;
                }
                serving.fetch_add(1, Ordering::AcqRel);
                let (out, handler, serving) = (out.clone(), handler.clone(), serving.clone());
                tokio::spawn(async move {
                    let reply = handler(frame.message).await;
                    send_reply(&out, frame.request_id, reply).await;
                    serving.fetch_sub(1, Ordering::AcqRel);
                });
            }
        }
    }
}

enum ReadOutcome {
    Full,
    Eof,
    Partial,
    Failed,
}

async fn read_exact_or_eof(reader: &mut BoxRead, buf: &mut [u8]) -> ReadOutcome {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]).await {
            Ok(0) if filled == 0 => return ReadOutcome::Eof,
            Ok(0) => return ReadOutcome::Partial,
            Ok(n) => filled += n,
            Err(e) => {
                tracing::debug!(error = %e, "channel read failed");
                return ReadOutcome::Failed;
            }
        }
    }
    ReadOutcome::Full
}
