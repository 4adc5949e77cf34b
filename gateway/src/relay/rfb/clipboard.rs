//! Which way a clipboard message carries text, for the link's clipboard policy.
//!
//! Classic cut text carries text from its sender. The extended clipboard (the
//! pseudo-encoding 0xC0A1E5CE; a negative cut-text length) says what a message does in
//! its flags word: `notify` and `provide` announce or carry the sender's text (towards
//! the receiver), `request` and `peek` ask for the receiver's text (towards the sender),
//! `caps` only states capabilities: in a `caps` message the other action bits list the
//! actions its sender supports, and both QEMU and noVNC treat a message with the `caps`
//! bit as capabilities only (its payload is a size limit per format, no text). Any other
//! message is judged on every action bit it has, so that no combination slips through.

use crate::model::clipboard::ClipboardPolicy;

/// Extended clipboard action flags (the top byte of the flags word).
pub const EXT_CAPS: u32 = 1 << 24;
pub const EXT_REQUEST: u32 = 1 << 25;
pub const EXT_PEEK: u32 = 1 << 26;
pub const EXT_NOTIFY: u32 = 1 << 27;
pub const EXT_PROVIDE: u32 = 1 << 28;

/// The directions a clipboard message needs allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needs {
    pub to_guest: bool,
    pub from_guest: bool,
}

impl Needs {
    pub const NOTHING: Needs = Needs {
        to_guest: false,
        from_guest: false,
    };
    pub const TO_GUEST: Needs = Needs {
        to_guest: true,
        from_guest: false,
    };
    pub const FROM_GUEST: Needs = Needs {
        to_guest: false,
        from_guest: true,
    };

    /// Whether `policy` allows everything this message needs.
    pub fn allowed_by(self, policy: ClipboardPolicy) -> bool {
        (!self.to_guest || policy.to_guest()) && (!self.from_guest || policy.from_guest())
    }
}

/// What sending `flags` needs: (towards the receiver, towards the sender).
fn sender_receiver(flags: u32) -> (bool, bool) {
    if flags & EXT_CAPS != 0 {
        return (false, false);
    }
    let gives = flags & (EXT_NOTIFY | EXT_PROVIDE) != 0;
    let asks = flags & (EXT_REQUEST | EXT_PEEK) != 0;
    (gives, asks)
}

/// An extended clipboard message from the visitor (towards QEMU).
pub fn client_ext_needs(flags: u32) -> Needs {
    let (gives, asks) = sender_receiver(flags);
    Needs {
        to_guest: gives,
        from_guest: asks,
    }
}

/// An extended clipboard message from QEMU (towards the visitor).
pub fn server_ext_needs(flags: u32) -> Needs {
    let (gives, asks) = sender_receiver(flags);
    Needs {
        to_guest: asks,
        from_guest: gives,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClipboardPolicy::*;

    #[test]
    fn directions_of_extended_messages() {
        assert_eq!(client_ext_needs(EXT_CAPS | 1), Needs::NOTHING);
        assert_eq!(server_ext_needs(EXT_CAPS | 0x1f), Needs::NOTHING);
        assert_eq!(client_ext_needs(EXT_PROVIDE | 1), Needs::TO_GUEST);
        assert_eq!(client_ext_needs(EXT_NOTIFY | 1), Needs::TO_GUEST);
        assert_eq!(client_ext_needs(EXT_REQUEST | 1), Needs::FROM_GUEST);
        assert_eq!(client_ext_needs(EXT_PEEK), Needs::FROM_GUEST);
        assert_eq!(server_ext_needs(EXT_PROVIDE | 1), Needs::FROM_GUEST);
        assert_eq!(server_ext_needs(EXT_NOTIFY | 1), Needs::FROM_GUEST);
        assert_eq!(server_ext_needs(EXT_REQUEST | 1), Needs::TO_GUEST);
        // A capabilities message lists actions; it performs none.
        assert_eq!(
            server_ext_needs(EXT_CAPS | EXT_PROVIDE | EXT_NOTIFY | EXT_REQUEST | 1),
            Needs::NOTHING
        );
        // Several actions need every direction they touch.
        let both = client_ext_needs(EXT_PROVIDE | EXT_REQUEST);
        assert!(both.to_guest && both.from_guest);
        assert!(!both.allowed_by(ToGuest) && !both.allowed_by(FromGuest));
        assert!(both.allowed_by(Both));
        assert!(Needs::NOTHING.allowed_by(None));
        assert!(!Needs::TO_GUEST.allowed_by(FromGuest));
        assert!(!Needs::FROM_GUEST.allowed_by(ToGuest));
    }
}
