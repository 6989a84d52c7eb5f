//! Answers the host's requests. One `Service` per enclave process, shared by all connections.

use crate::custody::Custody;
use frostgate_common::bounded::Label;
use frostgate_common::error::ErrorCode;
use frostgate_common::protocol::{BuildInfo, HealthReply, HelloReply, Message, ServiceState, PROTOCOL_VERSION};
use std::time::Instant;

/// The enclave's request handler.
#[derive(Debug)]
pub struct Service {
    started: Instant,
    build: BuildInfo,
    custody: Option<Custody>,
}

fn label(s: &str) -> Label {
    // Build strings are compile-time constants far below the label bound.
    Label::new(s.chars().take(Label::MAX_LEN).collect::<String>())
        .unwrap_or_else(|_| unreachable!("truncated to bound"))
}

impl Service {
    /// A new service. Without custody it answers but refuses to sign.
    pub fn new(custody: Option<Custody>) -> Self {
        let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
        Service {
            started: Instant::now(),
            build: BuildInfo {
                name: label(env!("CARGO_PKG_NAME")),
                version: label(env!("CARGO_PKG_VERSION")),
                profile: label(profile),
            },
            custody,
        }
    }

    /// Whether the enclave can sign, or the code that says why not.
    pub fn state(&self) -> ServiceState {
        match &self.custody {
            Some(_) => ServiceState::Ready,
            None => ServiceState::Refusing(ErrorCode::CustodyNotConfigured),
        }
    }

    /// Closes the HSM session and finalizes the module.
    pub fn shutdown(self) {
        if let Some(c) = self.custody {
            c.close();
        }
    }

    /// Answers one request. Never panics on any input.
    pub async fn handle(&self, request: Message) -> Message {
        match request {
            Message::Hello(hello) => {
                if hello.protocol_version != PROTOCOL_VERSION {
                    return Message::error(
                        ErrorCode::UnsupportedProtocolVersion,
                        format!("host speaks {}, enclave speaks {PROTOCOL_VERSION}", hello.protocol_version),
                    );
                }
                tracing::info!(client = %hello.client.as_inner(), "hello");
                Message::HelloReply(HelloReply { protocol_version: PROTOCOL_VERSION, build: self.build.clone() })
            }
            Message::Health => Message::HealthReply(HealthReply {
                state: self.state(),
                uptime_seconds: self.started.elapsed().as_secs(),
            }),
            Message::Ping(p) => Message::Pong(p),
            other => Message::error(
                ErrorCode::UnexpectedMessage,
                format!("{} is not served by the enclave", other.info().name),
            ),
        }
    }
}
