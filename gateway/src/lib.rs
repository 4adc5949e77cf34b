//! The share-link gateway: a public TLS listener for visitors (token exchange, console
//! WebSocket relay) and an admin listener (JSON API), on top of `vmm-backend`.

pub mod config;
pub mod confine;
pub mod engine;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
pub mod http;
pub mod launch;
pub mod limits;
pub mod links;
pub mod logging;
pub mod memory;
pub mod metrics;
pub mod passwords;
pub mod relay;
pub mod secret;
pub mod server;
pub mod sessions;
pub mod store;
pub mod tokens;
