//! The share-link gateway: a public TLS listener for visitors (token exchange, console
//! WebSocket relay) and an admin listener (JSON API), on top of `vmm-backend`.
//!
//! The modules are the architecture; each imports only the ones below it:
//!
//! ```text
//! cli (bin)   subcommands: serve, demo, vm, link, admin-token, key, vswitch, bond
//! launch      puts a gateway together: store, backend, TLS, listeners, engine
//! server      listeners, connection caps, TLS (reloadable), PROXY protocol
//! acme        certificates from an ACME CA for the public listener
//! http        routes as data, the admin API, the visitor side, pages, error -> status
//! relay       WebSocket <-> console: RFB and SPICE filters, close codes
//! engine      App (private state) and its operations, sessions, passwords, limits
//! store       one Store contract; SQLite and PostgreSQL beside each other
//! model       links, tokens, secrets: plain types and pure rules
//! config      the TOML file, validated once;   metrics, logging: leaves
//! ```
//!
//! The engine knows nothing of HTTP (it answers with `EngineError`, mapped to statuses
//! in `http::error` only), and the VM backend is reached through `vmm_backend`'s traits.

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
