//! The share-link model: links and their rules, the signed tokens that carry them, and
//! secrets that must never be printed. Plain types and pure functions: the engine and
//! the store both build on it, and it imports neither.

pub mod clipboard;
pub mod links;
pub mod secret;
pub mod tokens;
