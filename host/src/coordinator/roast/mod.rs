//! The ROAST coordinator: robust asynchronous threshold signing over untrusted signer nodes.
//!
//! - [`core`]: ROAST as a state machine without I/O (answers in, asks out), unit-tested by
//!   hand-fed answers;
//! - [`exchange`]: the core's asks and actions, the signers' answers;
//! - [`strategy`]: the interactive and preprocessed attempts behind one trait;
//! - [`driver`]: runs the core over gRPC;
//! - [`key`]: a key's public material and the package consensus;
//! - [`aggregate`]: aggregation and blame, off the signing path;
//! - [`evidence`], [`request`]: the typed inputs and outputs.
//!
//! Callers sign through [`crate::coordinator::Signing`], which owns the closings.

mod aggregate;
mod core;
mod driver;
mod evidence;
mod exchange;
mod key;
mod request;
mod strategy;
#[cfg(test)]
mod tests;

pub use aggregate::libsecp_verifies;
pub use evidence::{Evidence, Reason, Step};
pub use key::KeyMaterial;
pub use request::{validate, PsbtInput, Settings, SignRequest, Signed};

use crate::coordinator::signer::SignerClient;
use core::{Outcome, Roast};
use frostgate_common::ids::ParticipantId;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Runs ROAST for `request` until a signature or until fewer than the key's threshold of
/// signers remain. The session's closings are queued on the nodes (see `Signing::finish`).
pub(crate) async fn sign(
    nodes: &Arc<BTreeMap<ParticipantId, Arc<SignerClient>>>,
    request: SignRequest,
    settings: Settings,
    key: &KeyMaterial,
) -> Outcome {
    let fail = |e| (e, Vec::new());
    validate(&request).map_err(fail)?;
    let public = key.tweaked_at(&request.path, &request.mode).map_err(fail)?;
    let signers: Vec<(ParticipantId, bool)> = nodes.values().map(|c| (c.id(), c.reachable())).collect();
    let (session, seed) = (request.session(), crate::random_bytes());
    let cx = driver::Context {
        session,
        request: Arc::new(request),
        timeout: settings.signer_timeout,
        batch: settings.batch,
    };
    let (t, disagreeing) = (key.threshold(), key.disagreeing());
    if settings.preprocessed {
        let core = Roast::new(strategy::Preprocessed, seed, &cx.request, public, t, &signers, disagreeing);
        driver::run(core.map_err(fail)?, nodes, cx).await
    } else {
        let core = Roast::new(strategy::Interactive, seed, &cx.request, public, t, &signers, disagreeing);
        driver::run(core.map_err(fail)?, nodes, cx).await
    }
}
