//! The share-link gateway: a public TLS listener for visitors (token exchange, console
//! WebSocket relay) and an admin listener (JSON API), on top of `vmm-backend`.

pub mod acme;
pub mod config;
pub mod engine;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http;
pub mod launch;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod relay;
pub mod server;
pub mod store;
