//! The host's side of the channel: connect to a running enclave, or start one as a child.
//!
//! Invariant: a child enclave started here is stopped (SIGTERM, then SIGKILL after a grace
//! period) when its [`EnclaveClient`] is dropped, so no enclave outlives its host by accident.

use frostgate_common::bounded::Label;
use frostgate_common::channel::{Channel, Handler};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::{HealthReply, Hello, HelloReply, Message, Ping, Side, PROTOCOL_VERSION};
use frostgate_common::transport::{self, Address};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default deadline for one request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers the enclave's requests to the host.
pub fn host_handler() -> Handler {
    Arc::new(|m: Message| {
        Box::pin(async move {
            match m {
                Message::Ping(p) => Message::Pong(p),
                other => Message::error(
                    ErrorCode::UnexpectedMessage,
                    format!("{} is not served by the host", other.info().name),
                ),
            }
        })
    })
}

/// A connected enclave.
#[derive(Debug)]
pub struct EnclaveClient {
    channel: Channel,
    address: Address,
    hello: HelloReply,
    child: Option<ChildEnclave>,
}

impl EnclaveClient {
    /// Connects to a running enclave and says hello.
    pub async fn connect(address: Address) -> Result<Self, Error> {
        let (r, w) = transport::connect(&address).await?;
        let (channel, _done) = Channel::start(Side::Host, r, w, host_handler());
        let client = Label::new(format!("frostgate {}", env!("CARGO_PKG_VERSION")))
            .map_err(|e| Error::new(ErrorCode::Internal, e))?;
        let reply = channel
            .call(Message::Hello(Hello { protocol_version: PROTOCOL_VERSION, client }), Some(REQUEST_TIMEOUT))
            .await?;
        let hello = match reply {
            Message::HelloReply(h) => h,
            other => return Err(unexpected("HelloReply", &other)),
        };
        Ok(EnclaveClient { channel, address, hello, child: None })
    }

    /// Starts `enclave_bin` listening on a socket in `socket_dir`, waits for its readiness line,
    /// then connects.
    pub async fn spawn(enclave_bin: &Path, socket_dir: &Path, extra_args: &[String]) -> Result<Self, Error> {
        let socket = socket_dir.join("enclave.sock");
        let child = ChildEnclave::start(enclave_bin, &socket, extra_args)?;
        let mut client = Self::connect(Address::Unix(socket)).await?;
        client.child = Some(child);
        Ok(client)
    }

    /// The enclave's hello.
    pub fn hello(&self) -> &HelloReply {
        &self.hello
    }

    /// Where the enclave listens.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The raw channel (for callers that build their own requests).
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// Asks for the enclave's health.
    pub async fn health(&self) -> Result<HealthReply, Error> {
        match self.channel.call(Message::Health, Some(REQUEST_TIMEOUT)).await? {
            Message::HealthReply(h) => Ok(h),
            other => Err(unexpected("HealthReply", &other)),
        }
    }

    /// Round trip of a ping.
    pub async fn ping(&self, echo: u64) -> Result<u64, Error> {
        match self.channel.call(Message::Ping(Ping { echo }), Some(REQUEST_TIMEOUT)).await? {
            Message::Pong(p) => Ok(p.echo),
            other => Err(unexpected("Pong", &other)),
        }
    }
}

fn unexpected(wanted: &str, got: &Message) -> Error {
    Error::new(ErrorCode::UnexpectedMessage, format!("expected {wanted}, got {}", got.info().name))
}

/// An enclave process started by this host.
#[derive(Debug)]
pub struct ChildEnclave {
    child: Child,
}

impl ChildEnclave {
    /// Starts the enclave and waits (bounded) for its `READY` line on stdout.
    pub fn start(enclave_bin: &Path, socket: &Path, extra_args: &[String]) -> Result<Self, Error> {
        let mut child = Command::new(enclave_bin)
            .args(["serve", "--listen"])
            .arg(socket)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                Error::new(ErrorCode::EnclaveUnavailable, format!("starting {}: {e}", enclave_bin.display()))
            })?;
        let stdout = child.stdout.take().ok_or_else(|| Error::new(ErrorCode::Internal, "child stdout not captured"))?;
        let mut guard = ChildEnclave { child };
        let mut line = String::new();
        let read = BufReader::new(stdout).read_line(&mut line);
        match read {
            Ok(n) if n > 0 && line.starts_with("READY ") => Ok(guard),
            _ => {
                let status = guard.child.wait().ok();
                Err(Error::new(
                    ErrorCode::EnclaveUnavailable,
                    format!("enclave exited before it was ready ({status:?})"),
                ))
            }
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for ChildEnclave {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `frostgate-enclave` binary next to the running executable, if there is one.
pub fn default_enclave_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("frostgate-enclave")))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("frostgate-enclave"))
}
