//! Answers the host's requests. One `Service` per enclave process, shared by all connections.

use frostgate_common::bounded::Label;
use frostgate_common::error::ErrorCode;
use frostgate_common::protocol::{
    BuildInfo, HealthReply, HelloReply, Message, ServiceState, PROTOCOL_VERSION,
};
use std::time::Instant;

/// The enclave's request handler.
#[derive(Debug)]
pub struct Service {
    started: Instant,
    build: BuildInfo,
}

fn label(s: &str) -> Label {
    // Build strings are compile-time constants far below the label bound.
    Label::new(s.chars().take(Label::MAX_LEN).collect::<String>())
        .unwrap_or_else(|_| unreachable!("truncated to bound"))
}

impl Service {
    /// A new service.
    pub fn new() -> Self {
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        Service {
            started: Instant::now(),
            build: BuildInfo {
                name: label(env!("CARGO_PKG_NAME")),
                version: label(env!("CARGO_PKG_VERSION")),
                profile: label(profile),
            },
        }
    }

    /// Answers one request. Never panics on any input.
    pub async fn handle(&self, request: Message) -> Message {
        match request {
            Message::Hello(hello) => {
                if hello.protocol_version != PROTOCOL_VERSION {
                    return Message::error(
                        ErrorCode::UnsupportedProtocolVersion,
                        format!(
                            "host speaks {}, enclave speaks {PROTOCOL_VERSION}",
                            hello.protocol_version
                        ),
                    );
                }
                tracing::info!(client = %hello.client.as_inner(), "hello");
                Message::HelloReply(HelloReply {
                    protocol_version: PROTOCOL_VERSION,
                    build: self.build.clone(),
                })
            }
            Message::Health => Message::HealthReply(HealthReply {
                state: ServiceState::Ready,
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

impl Default for Service {
    fn default() -> Self {
        Self::new()
    }
}
