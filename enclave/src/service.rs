//! Answers the host's requests. One `Service` per enclave process, shared by all connections.
//! Every request is answered with its reply or a typed error; nothing here panics on input.

use crate::custody::Custody;
use crate::markers::MarkerStore;
use crate::rounds::{Engine, Limits};
use frostgate_common::bounded::{Label, PublicKeyPackageBytes, Signers};
use frostgate_common::error::{Error, ErrorCode};
use frostgate_common::protocol::*;
use std::sync::Arc;
use std::time::Instant;

/// The enclave's request handler.
#[derive(Debug)]
pub struct Service {
    started: Instant,
    build: BuildInfo,
    engine: Option<Engine>,
}

fn label(s: &str) -> Label {
    // Build strings are compile-time constants far below the label bound.
    Label::new(s.chars().take(Label::MAX_LEN).collect::<String>())
        .unwrap_or_else(|_| unreachable!("truncated to bound"))
}

impl Service {
    /// A new service. Without custody it answers but refuses to sign.
    pub fn new(custody: Option<Custody>, store: Arc<dyn MarkerStore>, limits: Limits) -> Self {
        let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
        Service {
            started: Instant::now(),
            build: BuildInfo {
                name: label(env!("CARGO_PKG_NAME")),
                version: label(env!("CARGO_PKG_VERSION")),
                profile: label(profile),
            },
            engine: custody.map(|c| Engine::new(Arc::new(c), store, limits)),
        }
    }

    /// A service over an already built engine (tests build engines with their own limits and
    /// marker stores).
    pub fn from_engine(engine: Option<Engine>) -> Self {
        let mut s = Service::new(None, Arc::new(crate::markers::MemoryStore::new()), Limits::default());
        s.engine = engine;
        s
    }

    /// Whether the enclave can sign, or the code that says why not.
    pub fn state(&self) -> ServiceState {
        match &self.engine {
            Some(_) => ServiceState::Ready,
            None => ServiceState::Refusing(ErrorCode::CustodyNotConfigured),
        }
    }

    /// The signing engine, if custody is configured.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    /// Closes the HSM sessions.
    pub fn shutdown(self) {
        if let Some(engine) = self.engine {
            drop(engine);
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
            other => {
                let kind = other.info().name;
                let result = match &self.engine {
                    Some(engine) => signing(engine, other).await,
                    None => {
                        Err(Error::new(ErrorCode::CustodyNotConfigured, "this enclave has no HSM custody configured"))
                    }
                };
                result.unwrap_or_else(|e| {
                    tracing::info!(kind, code = %e.code(), "request refused: {}", e.message());
                    Message::Error(e)
                })
            }
        }
    }
}

async fn signing(engine: &Engine, request: Message) -> Result<Message, Error> {
    Ok(match request {
        Message::OpenSession(r) => {
            let output_key = engine.open_session(r.session, r.key, r.message, r.mode)?;
            Message::SessionOpened(SessionOpened { session: r.session, output_key })
        }
        Message::OpenAttempt(r) => {
            engine.open_attempt(r.session, r.attempt, r.signers.as_inner())?;
            Message::AttemptOpened(AttemptRef { attempt: r.attempt })
        }
        Message::Round1(r) => {
            let commitments = engine.round1(r.attempt, r.seat)?;
            Message::Round1Reply(Round1Reply { attempt: r.attempt, seat: r.seat, commitments })
        }
        Message::Round2(r) => {
            let signature_share = engine.round2(r.attempt, r.seat, r.mode, r.signing_package.as_inner()).await?;
            Message::Round2Reply(Round2Reply { attempt: r.attempt, seat: r.seat, signature_share })
        }
        Message::VerifyShare(r) => {
            Message::ShareVerdict(engine.verify_share(r.attempt, r.signing_package.as_inner(), &r.share)?)
        }
        Message::Aggregate(r) => Message::AggregateReply(
            engine.aggregate(r.attempt, r.mode, r.signing_package.as_inner(), r.shares.as_inner()).await?,
        ),
        Message::AbortAttempt(r) => {
            Message::AttemptAborted(AttemptAborted { attempt: r.attempt, wiped_count: engine.abort(r.attempt)? })
        }
        Message::GetKey(r) => Message::KeyInfo(key_info(engine, &*engine.key(&r.key)?)?),
        Message::DevDealerKeygen(r) => dev_dealer(engine, r)?,
        other => {
            return Err(Error::new(
                ErrorCode::UnexpectedMessage,
                format!("{} is not served by the enclave", other.info().name),
            ));
        }
    })
}

#[cfg(feature = "dev-dealer")]
fn dev_dealer(engine: &Engine, r: DevDealerKeygen) -> Result<Message, Error> {
    let record = crate::keys::dev_dealer(engine.custody(), r.threshold, r.participants)?;
    let info = key_info(engine, &record)?;
    tracing::warn!(key = %record.key_id, "DEVELOPMENT dealer key created: not for production funds");
    engine.insert_key(record)?;
    Ok(Message::KeyInfo(info))
}

#[cfg(not(feature = "dev-dealer"))]
fn dev_dealer(_engine: &Engine, _r: DevDealerKeygen) -> Result<Message, Error> {
    Err(Error::new(ErrorCode::DevFeatureDisabled, "this enclave was built without the dev-dealer feature"))
}

fn key_info(_engine: &Engine, record: &crate::keys::KeyRecord) -> Result<KeyInfo, Error> {
    let internal = |e| Error::new(ErrorCode::Internal, e);
    let bytes =
        record.public.serialize().map_err(|e| crate::keys::frost_err(ErrorCode::Internal, "public key package", e))?;
    Ok(KeyInfo {
        key: record.key_id,
        threshold: record.threshold,
        participants: Signers::new(record.participants.keys().copied().collect::<Vec<_>>()).map_err(internal)?,
        seats: Signers::new(record.seats.keys().copied().collect::<Vec<_>>()).map_err(internal)?,
        bip86_output_key: crate::keys::output_key(&record.public, &TaprootMode::Bip86)?,
        public_key_package: PublicKeyPackageBytes::new(bytes).map_err(internal)?,
    })
}
