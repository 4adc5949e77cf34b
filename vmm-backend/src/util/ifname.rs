//! Linux interface names (and thus OVS bridge, port and tap names).

/// The longest Linux interface name (IFNAMSIZ minus the NUL).
pub const IFNAMSIZ_MAX: usize = 15;

/// Whether `name` is usable as a Linux interface name (and thus an OVS bridge or port).
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= IFNAMSIZ_MAX
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        assert!(valid_ifname("br0"));
        assert!(valid_ifname("a.b_c-d"));
        assert!(valid_ifname("abcdefghijklmno"));
        assert!(!valid_ifname("abcdefghijklmnop"));
        assert!(!valid_ifname(""));
        assert!(!valid_ifname("-x"));
        assert!(!valid_ifname("a b"));
        assert!(!valid_ifname("a/b"));
    }
}
