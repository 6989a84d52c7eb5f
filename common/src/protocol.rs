//! The boundary message set: every message that may cross the host/enclave channel.
//!
//! Invariants: one enum, [`Message`]; each request sits beside its reply; variants are only
//! appended (the wire carries the variant index as the message kind); no variant carries a
//! secret. [`KINDS`] describes each kind's role and direction, and the checked-in boundary
//! manifest (`common/BOUNDARY.md`) pins all of it.

use crate::bounded::Label;
use crate::error::{Error, ErrorCode};
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. A frame with any other version is rejected.
pub const PROTOCOL_VERSION: u16 = 1;

/// Whether a message opens an exchange or answers one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Opens an exchange; the receiver answers with a reply carrying the same request id.
    Request,
    /// Answers the request with the same request id. Never answered itself.
    Reply,
}

/// Which side may send a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Only the host sends it.
    HostToEnclave,
    /// Only the enclave sends it.
    EnclaveToHost,
    /// Either side.
    Both,
}

/// One side of the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The host process.
    Host,
    /// The enclave process.
    Enclave,
}

impl Direction {
    /// Whether `sender` may send a message with this direction.
    pub fn allows_sender(self, sender: Side) -> bool {
        matches!(
            (self, sender),
            (Direction::Both, _)
                | (Direction::HostToEnclave, Side::Host)
                | (Direction::EnclaveToHost, Side::Enclave)
        )
    }
}

/// Static description of one message kind, indexed by the kind number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindInfo {
    /// The variant name.
    pub name: &'static str,
    /// Request or reply.
    pub role: Role,
    /// Who may send it.
    pub direction: Direction,
}

/// Every message crossing the channel. Append only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Reply to any request that failed, or to a frame that could not be read (request id 0
    /// when the frame's id could not be read).
    Error(Error),
    /// Host -> enclave: opens the conversation and states the host's protocol version.
    Hello(Hello),
    /// Enclave -> host: the enclave's protocol version and build.
    HelloReply(HelloReply),
    /// Host -> enclave: is the enclave able to serve?
    Health,
    /// Enclave -> host: whether it serves, or the code of the error that makes it refuse.
    HealthReply(HealthReply),
    /// Either side: liveness of the reverse path; the receiver echoes the value.
    Ping(Ping),
    /// Reply to [`Message::Ping`] with the same value.
    Pong(Ping),
}

/// Role and direction of every kind, in wire (variant index) order.
pub const KINDS: &[KindInfo] = &[
    KindInfo {
        name: "Error",
        role: Role::Reply,
        direction: Direction::Both,
    },
    KindInfo {
        name: "Hello",
        role: Role::Request,
        direction: Direction::HostToEnclave,
    },
    KindInfo {
        name: "HelloReply",
        role: Role::Reply,
        direction: Direction::EnclaveToHost,
    },
    KindInfo {
        name: "Health",
        role: Role::Request,
        direction: Direction::HostToEnclave,
    },
    KindInfo {
        name: "HealthReply",
        role: Role::Reply,
        direction: Direction::EnclaveToHost,
    },
    KindInfo {
        name: "Ping",
        role: Role::Request,
        direction: Direction::Both,
    },
    KindInfo {
        name: "Pong",
        role: Role::Reply,
        direction: Direction::Both,
    },
];

impl Message {
    /// The kind number (variant index) as it travels on the wire.
    pub fn kind(&self) -> usize {
        match self {
            Message::Error(_) => 0,
            Message::Hello(_) => 1,
            Message::HelloReply(_) => 2,
            Message::Health => 3,
            Message::HealthReply(_) => 4,
            Message::Ping(_) => 5,
            Message::Pong(_) => 6,
        }
    }

    /// Static description of this message's kind.
    pub fn info(&self) -> &'static KindInfo {
        &KINDS[self.kind()]
    }

    /// Builds the error reply.
    pub fn error(code: ErrorCode, message: impl std::fmt::Display) -> Message {
        Message::Error(Error::new(code, message))
    }
}

/// Opening request from the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The protocol version the host speaks.
    pub protocol_version: u16,
    /// Free-form client name for the enclave's log (e.g. `frostgate 0.1.0`).
    pub client: Label,
}

/// The enclave's answer to [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloReply {
    /// The protocol version the enclave speaks.
    pub protocol_version: u16,
    /// The enclave's build.
    pub build: BuildInfo,
}

/// What binary is answering.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// Package name.
    pub name: Label,
    /// Package version.
    pub version: Label,
    /// `debug` or `release`.
    pub profile: Label,
}

/// The enclave's health.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthReply {
    /// Whether it serves signing requests.
    pub state: ServiceState,
    /// Seconds since the enclave process started.
    pub uptime_seconds: u64,
}

/// Whether the enclave serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServiceState {
    /// Serving.
    Ready,
    /// Refusing to sign, with the code of the condition that makes it refuse.
    Refusing(ErrorCode),
}

/// A value to echo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Echoed unchanged by the receiver.
    pub echo: u64,
}
