//! A link's clipboard policy: which way clipboard text may cross the gateway.
//!
//! The gateway enforces it (the page only reflects it): text the guest copies leaves the
//! gateway only with [`ClipboardPolicy::from_guest`], text a visitor sends reaches the
//! guest only with [`ClipboardPolicy::to_guest`] on a link that is not view-only.
//!
//! The default for a new link is `to_guest`: pasting into the guest gives a visitor of an
//! interactive link nothing they could not already do by typing, while text copied in the
//! guest (which may be a secret the VM's owner copied there) never leaves without the
//! administrator asking for it. Links stored before the policy existed read as `none`,
//! which is what they had.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Which way clipboard text may cross the gateway on a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClipboardPolicy {
    /// Neither way.
    None,
    /// From the visitor to the guest only (the default).
    #[default]
    ToGuest,
    /// From the guest to the visitor only.
    FromGuest,
    /// Both ways.
    Both,
}

/// A clipboard policy spelled wrongly.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`clipboard` must be one of `none`, `to_guest`, `from_guest`, `both`")]
pub struct UnknownClipboardPolicy;

impl ClipboardPolicy {
    /// The wire / storage spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ClipboardPolicy::None => "none",
            ClipboardPolicy::ToGuest => "to_guest",
            ClipboardPolicy::FromGuest => "from_guest",
            ClipboardPolicy::Both => "both",
        }
    }

    /// Whether text the guest copies may reach the visitor.
    pub fn from_guest(self) -> bool {
        matches!(self, ClipboardPolicy::FromGuest | ClipboardPolicy::Both)
    }

    /// Whether the policy lets visitor text reach the guest (a view-only link never
    /// does: see [`ClipboardPolicy::effective`]).
    pub fn to_guest(self) -> bool {
        matches!(self, ClipboardPolicy::ToGuest | ClipboardPolicy::Both)
    }

    /// The policy in force on a link: view-only links never write to the guest.
    pub fn effective(self, view_only: bool) -> ClipboardPolicy {
        match (self, view_only) {
            (ClipboardPolicy::ToGuest, true) => ClipboardPolicy::None,
            (ClipboardPolicy::Both, true) => ClipboardPolicy::FromGuest,
            (p, _) => p,
        }
    }
}

impl fmt::Display for ClipboardPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ClipboardPolicy {
    type Err = UnknownClipboardPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "none" => Ok(ClipboardPolicy::None),
            "to_guest" => Ok(ClipboardPolicy::ToGuest),
            "from_guest" => Ok(ClipboardPolicy::FromGuest),
            "both" => Ok(ClipboardPolicy::Both),
            _ => Err(UnknownClipboardPolicy),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_round_trip() {
        for p in [
            ClipboardPolicy::None,
            ClipboardPolicy::ToGuest,
            ClipboardPolicy::FromGuest,
            ClipboardPolicy::Both,
        ] {
            assert_eq!(p.as_str().parse::<ClipboardPolicy>(), Ok(p));
            let j = serde_json::to_string(&p).expect("ser");
            assert_eq!(j, format!("\"{p}\""));
            assert_eq!(serde_json::from_str::<ClipboardPolicy>(&j).expect("de"), p);
        }
        assert!("To_Guest".parse::<ClipboardPolicy>().is_err());
        assert!(serde_json::from_str::<ClipboardPolicy>("\"all\"").is_err());
        assert_eq!(ClipboardPolicy::default(), ClipboardPolicy::ToGuest);
    }

    #[test]
    fn view_only_never_writes_to_the_guest() {
        use ClipboardPolicy::*;
        assert_eq!(Both.effective(true), FromGuest);
        assert_eq!(ToGuest.effective(true), None);
        assert_eq!(FromGuest.effective(true), FromGuest);
        assert_eq!(None.effective(true), None);
        for p in [None, ToGuest, FromGuest, Both] {
            assert_eq!(p.effective(false), p);
            assert!(!p.effective(true).to_guest());
        }
        assert!(Both.to_guest() && Both.from_guest());
        assert!(!None.to_guest() && !None.from_guest());
        assert!(ToGuest.to_guest() && !ToGuest.from_guest());
        assert!(!FromGuest.to_guest() && FromGuest.from_guest());
    }
}
