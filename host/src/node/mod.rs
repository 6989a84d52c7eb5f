//! The node daemon's side of the host: what runs next to one enclave.
//!
//! - [`enclave`]: the channel client of the enclave (connect or spawn, hello, store load).
//! - [`proxy`]: the [`proxy::Host`] every local and network request goes through, reconnecting
//!   and reloading when the enclave restarts.
//! - [`store`]: the host store (SQLite, records MAC-chained by the enclave, head anchored in its HSM), the durable half of the enclave's markers.
//! - [`metrics`]: Prometheus metrics.
//!
//! The network API the node serves is [`crate::api`]; child processes are [`crate::supervisor`].

pub mod enclave;
pub mod metrics;
pub mod proxy;
pub mod store;
