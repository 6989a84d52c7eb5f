//! The boundary message set: every message that may cross the host/enclave channel.
//!
//! Invariants: one enum, [`Message`], generated from the one table in [`table`]; each request
//! names its reply type, so a call is typed end to end ([`crate::channel::Channel::request`]:
//! `Round2 -> Round2Reply`, no "unexpected reply" branch at any call site); variants are only
//! appended (the wire carries the variant index as the message kind); no variant carries a
//! secret. [`KINDS`] describes each kind, and the checked-in boundary manifest
//! (`common/BOUNDARY.md`) pins all of it.

mod lists;
mod registry;
mod table;
mod types;

pub use crate::bounded::IdentityKeyBytes;
pub use lists::*;
pub use registry::{Entry, Registers, Registry, When};
pub use types::*;

use crate::error::{Error, ErrorCode};
use std::future::Future;

/// The protocol version this build speaks. A frame with any other version is rejected.
/// Version 2: `HealthReply` carries the policy hash; kinds 42-47 (PSBT sessions, policy, audit).
/// Version 4: `HealthReply` carries the custody profile. Version 5: `HealthReply` carries the open
/// sessions and attempts; kinds 80-86 (attestation, a ceremony's attestation). Version 6: the
/// signing service's error codes 74-79. Version 7: sessions bound to a signing service request
/// (`SessionBinding::Request`, kinds 87-88, `AuditDecision::Requested`, code 80).
pub const PROTOCOL_VERSION: u16 = 7;

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

/// Where a request may come from, beyond the host/enclave channel itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposure {
    /// Only between a host and its enclave.
    Channel,
    /// Also an RPC of the node's gRPC API (same name), forwarded to the enclave.
    Network,
}

/// What the enclave must be before it serves a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Served in any state.
    Any,
    /// Needs HSM custody (a store being loaded is fine).
    Custody,
    /// Needs custody and a verified store.
    Ready,
    /// Only development builds serve it (then as `Ready`); production refuses it whatever its state.
    DevBuild,
}

impl Direction {
    /// Whether `sender` may send a message with this direction.
    pub fn allows_sender(self, sender: Side) -> bool {
        matches!(
            (self, sender),
            (Direction::Both, _) | (Direction::HostToEnclave, Side::Host) | (Direction::EnclaveToHost, Side::Enclave)
        )
    }
}

/// What a request row adds to its kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestInfo {
    /// Where it may come from.
    pub exposure: Exposure,
    /// What the enclave must be to serve it.
    pub readiness: Readiness,
    /// The serving trait's method (snake case; the gRPC method of a `Network` request).
    pub method: &'static str,
    /// The enclave registries it may open entries in ([`Registers::opens`]).
    pub opens: &'static [Registry],
    /// The registries it may close entries of ([`Registers::closes`]).
    pub closes: &'static [Registry],
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
    /// For requests: exposure, readiness and serving method.
    pub request: Option<RequestInfo>,
    /// What it is for: its row's doc comment.
    pub purpose: &'static str,
}

/// A payload that is the reply to some request: it knows which message kinds carry it.
pub trait FromMessage: Sized {
    /// The payload, or the message back if it is of another kind.
    fn from_message(m: Message) -> Result<Self, Box<Message>>;
    /// The names of the message kinds it is read from.
    fn names() -> Vec<&'static str>;
}

/// A request payload: its message kind and its reply type.
pub trait Request: Into<Message> + Send + 'static {
    /// The kind number of its message.
    const KIND: usize;
    /// What the receiver answers on success.
    type Reply: FromMessage + Into<Message> + Send + 'static;
}

/// Reads a reply: the expected payload, the error the peer sent, or `unexpected_message`.
pub fn reply_of<R: Request>(m: Message) -> Result<R::Reply, Error> {
    match m {
        Message::Error(e) => Err(e),
        m => R::Reply::from_message(m).map_err(|other| {
            Error::new(
                ErrorCode::UnexpectedMessage,
                format!(
                    "{} answered with {}, expected {}",
                    KINDS[R::KIND].name,
                    other.info().name,
                    R::Reply::names().join(" or ")
                ),
            )
        }),
    }
}

fn not_served(side: &str, name: &str) -> Message {
    Message::error(ErrorCode::UnexpectedMessage, format!("{name} is not served by the {side}"))
}

/// Expands to the serving trait's method for rows served by `$side` (requests from the other
/// side or from both), and to nothing otherwise.
macro_rules! serving_method {
    (@fn $method:ident, $payload:ty, $reply:ty) => {
        #[allow(missing_docs)]
        fn $method(&self, request: $payload) -> impl Future<Output = Result<$reply, Error>> + Send;
    };
    (enclave, Host, $method:ident, $payload:ty, $reply:ty) => { serving_method!(@fn $method, $payload, $reply); };
    (host, Enclave, $method:ident, $payload:ty, $reply:ty) => { serving_method!(@fn $method, $payload, $reply); };
    ($side:ident, Both, $method:ident, $payload:ty, $reply:ty) => { serving_method!(@fn $method, $payload, $reply); };
    ($side:ident, $from:ident, $method:ident, $payload:ty, $reply:ty) => {};
}

/// One arm of a dispatch: call the method when `$side` serves the row, refuse otherwise.
macro_rules! serving_arm {
    (enclave, Host, $api:ident, $r:ident, $kind:literal, $method:ident) => {
        $api.$method($r).await.map_or_else(Message::Error, Into::into)
    };
    (host, Enclave, $api:ident, $r:ident, $kind:literal, $method:ident) => {
        $api.$method($r).await.map_or_else(Message::Error, Into::into)
    };
    ($side:ident, Both, $api:ident, $r:ident, $kind:literal, $method:ident) => {
        $api.$method($r).await.map_or_else(Message::Error, Into::into)
    };
    ($side:ident, $from:ident, $api:ident, $r:ident, $kind:literal, $($method:ident)?) => {{
        let _ = $r;
        not_served(stringify!($side), KINDS[$kind].name)
    }};
}

/// Generates the boundary from the table (see [`table`]).
macro_rules! define_boundary {
    ($(
        $(#[doc = $doc:literal])*
        $kind:literal $name:ident ($payload:ty) {
            $role:ident, from: $from:ident
            $(,
                exposure: $exposure:ident, ready: $ready:ident, serve: $method:ident, reply: $reply:ty,
                opens: [$($opens:ident),*], closes: [$($closes:ident),*]
            )?
        }
    )*) => {
        /// Every message crossing the channel, in wire order. Generated from the table; append only.
        #[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
        pub enum Message {
            $( $(#[doc = $doc])* $name($payload), )*
        }

        /// Every kind, in wire (variant index) order.
        pub const KINDS: &[KindInfo] = &[
            $(
                KindInfo {
                    name: stringify!($name),
                    purpose: concat!($($doc),*),
                    role: role!($role),
                    direction: direction!($from),
                    request: optional!($(
                        RequestInfo {
                            exposure: Exposure::$exposure,
                            readiness: Readiness::$ready,
                            method: stringify!($method),
                            opens: &[$(Registry::$opens),*],
                            closes: &[$(Registry::$closes),*],
                        }
                    )?),
                },
            )*
        ];

        impl Message {
            /// The kind number (variant index) as it travels on the wire.
            pub fn kind(&self) -> usize {
                match self {
                    $( Message::$name(_) => $kind, )*
                }
            }

            /// The registry entries this request opens (none for replies), as its row's `opens`.
            pub fn opens(&self) -> Vec<Entry> {
                match self {
                    $( Message::$name(_p) => registers!(_p, opens, $($($opens)*)?), )*
                }
            }

            /// The registry entries this request closes, and when (none for replies).
            pub fn closes(&self) -> Vec<(Entry, When)> {
                match self {
                    $( Message::$name(_p) => registers!(_p, closes, $($($closes)*)?), )*
                }
            }

            /// The names of the reply kinds of request kind `kind` (empty for replies).
            pub fn reply_names(kind: usize) -> Vec<&'static str> {
                match kind {
                    $( $kind => optional!($( <$reply as FromMessage>::names() )?).unwrap_or_default(), )*
                    _ => Vec::new(),
                }
            }
        }

        $(
            impl From<$payload> for Message {
                fn from(p: $payload) -> Message {
                    Message::$name(p)
                }
            }

            impl FromMessage for $payload {
                fn from_message(m: Message) -> Result<Self, Box<Message>> {
                    match m {
                        Message::$name(p) => Ok(p),
                        other => Err(Box::new(other)),
                    }
                }
                fn names() -> Vec<&'static str> {
                    vec![stringify!($name)]
                }
            }

            $(
                impl Request for $payload {
                    const KIND: usize = $kind;
                    type Reply = $reply;
                }
            )?
        )*

        /// What the enclave serves: one method per request the host (or either side) sends.
        /// [`serve_enclave`] dispatches to it after [`EnclaveApi::admit`].
        pub trait EnclaveApi: Sync {
            /// Whether the enclave is in a state to serve a request needing `readiness`
            /// (checked before the method is called).
            fn admit(&self, readiness: Readiness) -> Result<(), Error>;
            $( $( serving_method!(enclave, $from, $method, $payload, $reply); )? )*
        }

        /// What the host serves: one method per request the enclave (or either side) sends.
        pub trait HostApi: Sync {
            $( $( serving_method!(host, $from, $method, $payload, $reply); )? )*
        }

        /// Answers one request received by the enclave: a reply or a typed error, never a panic.
        pub async fn serve_enclave<A: EnclaveApi>(api: &A, request: Message) -> Message {
            let kind = request.kind();
            if let Some(info) = KINDS[kind].request {
                if let Err(e) = api.admit(info.readiness) {
                    return Message::Error(e);
                }
            }
            match request {
                $( Message::$name(r) => serving_arm!(enclave, $from, api, r, $kind, $($method)?), )*
            }
        }

        /// Answers one request received by the host.
        pub async fn serve_host<A: HostApi>(api: &A, request: Message) -> Message {
            match request {
                $( Message::$name(r) => serving_arm!(host, $from, api, r, $kind, $($method)?), )*
            }
        }
    };
}

/// A row's entries: none when its column is empty (its payload need not implement
/// [`Registers`]), else what the payload says.
macro_rules! registers {
    ($p:ident, $method:ident, ) => {
        Vec::new()
    };
    ($p:ident, $method:ident, $($registry:ident)+) => {
        Registers::$method($p)
    };
}

macro_rules! optional {
    () => {
        None
    };
    ($e:expr) => {
        Some($e)
    };
}

macro_rules! role {
    (request) => {
        Role::Request
    };
    (reply) => {
        Role::Reply
    };
}

macro_rules! direction {
    (Host) => {
        Direction::HostToEnclave
    };
    (Enclave) => {
        Direction::EnclaveToHost
    };
    (Both) => {
        Direction::Both
    };
}

crate::boundary_table!(define_boundary);

impl Message {
    /// Static description of this message's kind.
    pub fn info(&self) -> &'static KindInfo {
        &KINDS[self.kind()]
    }

    /// Builds the error reply.
    pub fn error(code: ErrorCode, message: impl std::fmt::Display) -> Message {
        Message::Error(Error::new(code, message))
    }
}
