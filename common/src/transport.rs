//! Transports for the channel: a Unix domain socket by default, AF_VSOCK behind the `vsock`
//! feature. Both yield boxed reader/writer halves, so all framing code is shared.
//!
//! Invariant: the listener reports who connected (Unix: the peer's uid from `SO_PEERCRED`;
//! vsock: the peer's CID) so the enclave can refuse anyone but its configured host.

use crate::channel::{BoxRead, BoxWrite};
use crate::error::{Error, ErrorCode};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Where the enclave listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// A Unix domain socket path (`unix:/path` or a bare path).
    Unix(PathBuf),
    /// A vsock context id and port (`vsock:CID:PORT`).
    #[cfg(feature = "vsock")]
    Vsock {
        /// Context id.
        cid: u32,
        /// Port.
        port: u32,
    },
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Unix(p) => write!(f, "unix:{}", p.display()),
            #[cfg(feature = "vsock")]
            Address::Vsock { cid, port } => write!(f, "vsock:{cid}:{port}"),
        }
    }
}

impl FromStr for Address {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        if let Some(rest) = s.strip_prefix("vsock:") {
            #[cfg(feature = "vsock")]
            {
                let (cid, port) = rest
                    .split_once(':')
                    .and_then(|(c, p)| Some((c.parse().ok()?, p.parse().ok()?)))
                    .ok_or_else(|| Error::new(ErrorCode::ConfigInvalid, format!("bad vsock address {s:?}")))?;
                return Ok(Address::Vsock { cid, port });
            }
            #[cfg(not(feature = "vsock"))]
            return Err(Error::new(ErrorCode::ConfigInvalid, format!("{rest:?}: this build has no vsock support")));
        }
        let path = s.strip_prefix("unix:").unwrap_or(s);
        if path.is_empty() {
            return Err(Error::new(ErrorCode::ConfigInvalid, "empty socket path"));
        }
        Ok(Address::Unix(PathBuf::from(path)))
    }
}

/// Who is on the other end of an accepted connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A Unix socket peer, by user id (from the kernel, not from the peer).
    Unix {
        /// The peer process's effective uid.
        uid: u32,
        /// The peer process's pid, if the kernel reported it.
        pid: Option<i32>,
    },
    /// A vsock peer, by context id.
    Vsock {
        /// The peer's CID.
        cid: u32,
    },
}

fn io_err(what: &str, e: std::io::Error) -> Error {
    Error::new(ErrorCode::ChannelIo, format!("{what}: {e}"))
}

/// A bound listener.
#[derive(Debug)]
pub enum Listener {
    /// Unix domain socket.
    Unix(tokio::net::UnixListener),
    /// vsock.
    #[cfg(feature = "vsock")]
    Vsock(tokio_vsock::VsockListener),
}

impl Listener {
    /// Binds. Only a *stale* Unix socket (a socket file nobody accepts on) is replaced; any other
    /// existing path (a regular file such as a database, a directory, a symlink, a live socket)
    /// is refused with `listen_path_occupied` and left untouched. The new file is made
    /// accessible to its owner only (peer credentials are still checked on every connection).
    pub fn bind(address: &Address) -> Result<Listener, Error> {
        Self::bind_mode(address, 0o600)
    }

    /// [`Self::bind`] with the socket file's mode (0o666 when another user must connect; the
    /// peer credentials of every connection are still checked).
    pub fn bind_mode(address: &Address, mode: u32) -> Result<Listener, Error> {
        match address {
            Address::Unix(path) => {
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    let occupied = |why: &str| {
                        Error::new(
                            ErrorCode::ListenPathOccupied,
                            format!("{} {why}; refusing to replace it", path.display()),
                        )
                    };
                    if !meta.file_type().is_socket() {
                        return Err(occupied("exists and is not a socket"));
                    }
                    if std::os::unix::net::UnixStream::connect(path).is_ok() {
                        return Err(occupied("is a socket another process is serving"));
                    }
                    std::fs::remove_file(path).map_err(|e| io_err("removing stale socket", e))?;
                }
                let l = tokio::net::UnixListener::bind(path).map_err(|e| io_err("binding socket", e))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| io_err("restricting socket permissions", e))?;
                Ok(Listener::Unix(l))
            }
            #[cfg(feature = "vsock")]
            Address::Vsock { cid, port } => {
                let l = tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(*cid, *port))
                    .map_err(|e| io_err("binding vsock", e))?;
                Ok(Listener::Vsock(l))
            }
        }
    }

    /// Accepts the next connection, logging (and skipping) failed accepts.
    pub async fn next(&self) -> (BoxRead, BoxWrite, Peer) {
        loop {
            match self.accept().await {
                Ok(c) => return c,
                Err(e) => tracing::warn!(code = %e.code(), "accept failed: {}", e.message()),
            }
        }
    }

    /// Accepts one connection and reports its peer.
    pub async fn accept(&self) -> Result<(BoxRead, BoxWrite, Peer), Error> {
        match self {
            Listener::Unix(l) => {
                let (stream, _) = l.accept().await.map_err(|e| io_err("accept", e))?;
                let cred = stream.peer_cred().map_err(|e| io_err("reading peer credentials", e))?;
                let (r, w) = stream.into_split();
                Ok((Box::new(r), Box::new(w), Peer::Unix { uid: cred.uid(), pid: cred.pid() }))
            }
            #[cfg(feature = "vsock")]
            Listener::Vsock(l) => {
                let (stream, addr) = l.accept().await.map_err(|e| io_err("accept", e))?;
                let (r, w) = tokio::io::split(stream);
                Ok((Box::new(r), Box::new(w), Peer::Vsock { cid: addr.cid() }))
            }
        }
    }
}

/// Connects to an enclave.
pub async fn connect(address: &Address) -> Result<(BoxRead, BoxWrite), Error> {
    match address {
        Address::Unix(path) => {
            let s = tokio::net::UnixStream::connect(path).await.map_err(|e| {
                Error::new(ErrorCode::EnclaveUnavailable, format!("connecting to {}: {e}", path.display()))
            })?;
            let (r, w) = s.into_split();
            Ok((Box::new(r), Box::new(w)))
        }
        #[cfg(feature = "vsock")]
        Address::Vsock { cid, port } => {
            let s = tokio_vsock::VsockStream::connect(tokio_vsock::VsockAddr::new(*cid, *port)).await.map_err(|e| {
                Error::new(ErrorCode::EnclaveUnavailable, format!("connecting to vsock {cid}:{port}: {e}"))
            })?;
            let (r, w) = tokio::io::split(s);
            Ok((Box::new(r), Box::new(w)))
        }
    }
}
