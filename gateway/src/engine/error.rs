//! The engine's errors: what went wrong in terms of links, visitors, VMs and the store,
//! never in terms of HTTP. `http::error` is the one place that turns them into statuses.

use std::time::Duration;

use crate::model::links::{LinkError, Refusal};

/// Why an engine operation did not happen.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The caller's input is wrong (the message says how; it is shown to admins).
    #[error("{0}")]
    Invalid(String),
    /// No valid credentials for this (a fixed reason word).
    #[error("unauthorized ({0})")]
    Unauthorized(&'static str),
    /// A link's rules refuse the visitor.
    #[error("refused ({})", .0.reason())]
    Refused(Refusal),
    /// Not allowed for this caller (a fixed reason word).
    #[error("forbidden ({0})")]
    Forbidden(&'static str),
    #[error("not found")]
    NotFound,
    /// The thing exists but is in the wrong state (the message says which).
    #[error("{0}")]
    Conflict(String),
    /// A recording whose file is on another gateway (named), which serves it.
    #[error("the recording is held by gateway {0}")]
    RecordingElsewhere(String),
    #[error("recording")]
    Recording(#[from] crate::engine::recordings::RecordingError),
    /// Too many attempts; try again after `retry_after`.
    #[error("rate limited ({reason})")]
    RateLimited {
        retry_after: Duration,
        reason: &'static str,
    },
    /// Temporarily unable to serve (busy, shutting down); try again after `retry_after`.
    #[error("unavailable ({reason})")]
    Unavailable {
        retry_after: Duration,
        reason: &'static str,
    },
    /// The console behind a link cannot be reached.
    #[error("console unavailable ({0})")]
    ConsoleUnavailable(&'static str),
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("store")]
    Store(#[from] crate::store::StoreError),
    #[error("VM backend")]
    Backend(#[from] vmm_backend::BackendError),
    #[error("network")]
    Net(#[from] vmm_backend::net::NetError),
    #[error("signing keys")]
    Keys(#[source] crate::model::tokens::TokenError),
    #[error("hashing a password")]
    Hashing(#[source] crate::engine::passwords::PasswordError),
    #[error("a worker task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error("encoding a response")]
    Encode(#[from] serde_json::Error),
}
