//! Strings that must never reach a log: link passwords on their way to being hashed, and
//! the VNC passwords the gateway answers for visitors.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A secret string. `Debug` prints `<redacted>` and there is no `Display`, so a struct
/// holding one can derive `Debug` safely; the value is reached only through
/// [`Secret::expose`]. It (de)serializes as the plain string, for the requests and rows
/// that must carry it.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself: for hashing, storing or answering a console's challenge only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length in bytes (no need to expose the value to check it).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Secret {
        Secret(s)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Secret {
        Secret(s.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    struct Holder {
        user: String,
        password: Option<Secret>,
    }

    #[test]
    fn debug_never_shows_the_value_and_serde_is_transparent() {
        let h: Holder =
            serde_json::from_str(r#"{"user":"ann","password":"hunter2"}"#).expect("json");
        let dbg = format!("{h:?} {h:#?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(dbg.contains("<redacted>"), "{dbg}");
        assert_eq!(h.password.as_ref().map(Secret::expose), Some("hunter2"));
        assert_eq!(h.password.as_ref().map(Secret::len), Some(7));
        assert_eq!(
            serde_json::to_string(&h).expect("json"),
            r#"{"user":"ann","password":"hunter2"}"#
        );
        assert!(Secret::new("").is_empty());
    }
}
