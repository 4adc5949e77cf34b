//! The share-link gateway: a public TLS listener for visitors (token exchange, console
//! WebSocket relay) and an admin listener (JSON API), on top of `vmm-backend`.

pub mod acme;
pub mod config;
pub mod confine;
pub mod engine;
pub mod fuzzing;
pub mod http;
pub mod launch;
pub mod limits;
pub mod links;
pub mod memory;
pub mod metrics;
pub mod passwords;
pub mod relay;
pub mod secret;
pub mod server;
pub mod sessions;
pub mod store;
pub mod tokens;
