//! The guest's keyboard layout: a name the console pages use to type text with the keys
//! the guest expects (see the gateway's README, "Keyboard layouts"). QEMU itself is not
//! told: with `-k`, its VNC server would ignore the scancodes of extended key events
//! and map keysyms instead, which breaks typing for every visitor whose own keyboard
//! differs from the guest's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::spec::vm::SpecError;

/// The layouts known to the console pages (the names of QEMU's keymaps; tables in
/// `static/src/lib/layouts.gen.js`).
pub const KEYBOARD_LAYOUTS: &[&str] = &[
    "en-us", "en-gb", "de", "de-ch", "fr", "fr-be", "fr-ch", "es", "it", "pt", "pt-br", "nl", "sv",
    "no", "da", "fi", "pl", "ja",
];

/// One of [`KEYBOARD_LAYOUTS`]; serialized as its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyboardLayout(&'static str);

impl Serialize for KeyboardLayout {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0)
    }
}

impl<'de> Deserialize<'de> for KeyboardLayout {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

impl KeyboardLayout {
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl FromStr for KeyboardLayout {
    type Err = SpecError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        KEYBOARD_LAYOUTS
            .iter()
            .find(|l| **l == s)
            .map(|l| KeyboardLayout(l))
            .ok_or_else(|| SpecError::UnknownKeyboardLayout(s.chars().take(40).collect()))
    }
}

impl fmt::Display for KeyboardLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_round_trip() {
        for name in KEYBOARD_LAYOUTS {
            let l: KeyboardLayout = name.parse().expect(name);
            assert_eq!(l.as_str(), *name);
            let json = serde_json::to_string(&l).expect("json");
            assert_eq!(
                serde_json::from_str::<KeyboardLayout>(&json).expect("back"),
                l
            );
        }
        for bad in ["", "us", "DE", "de ", "../de", "x".repeat(100).as_str()] {
            assert!(bad.parse::<KeyboardLayout>().is_err(), "{bad:?} accepted");
        }
        assert!(serde_json::from_str::<KeyboardLayout>("\"klingon\"").is_err());
    }

    /// The console page's tables and this list name the same layouts.
    #[test]
    fn same_layouts_as_the_console_page() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../static/src/lib/layouts.gen.js"
        );
        let js = std::fs::read_to_string(path).expect("layouts.gen.js");
        let names: Vec<&str> = js
            .lines()
            .filter_map(|l| l.strip_prefix("  \"")?.split_once("\": {").map(|(n, _)| n))
            .collect();
        assert_eq!(names, KEYBOARD_LAYOUTS);
    }
}
