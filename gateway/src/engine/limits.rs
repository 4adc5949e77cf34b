//! Abuse limits for the visitor side: session exchanges per client address (governor),
//! wrong passwords per link (lockout, whatever the address), and connection caps.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::config::Limits;

/// A client key: the address, IPv6 reduced to its /64 (one subscriber's prefix).
pub fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(bits.into())
            }
        },
        v4 => v4,
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Failures {
    count: u32,
    locked_until: Option<Instant>,
    last: Option<Instant>,
}

/// Visitor-side limits, shared by all connections.
#[derive(Debug)]
pub struct Limiter {
    per_ip: DefaultKeyedRateLimiter<IpAddr>,
    failures: DashMap<String, Failures>,
    max_failures: u32,
    lockout: Duration,
    conns_per_ip: Arc<DashMap<IpAddr, usize>>,
    max_conns_per_ip: usize,
}

/// A refusal with the time after which trying again makes sense.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header (at least 1).
    pub fn secs(&self) -> u64 {
        self.0.as_secs() + u64::from(self.0.subsec_nanos() > 0)
    }
}

/// Counts one open connection of a client until dropped (also after a WebSocket
/// upgrade: the relay keeps it).
#[derive(Debug)]
pub struct ConnSlot {
    conns: Arc<DashMap<IpAddr, usize>>,
    key: IpAddr,
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        if let dashmap::Entry::Occupied(mut e) = self.conns.entry(self.key) {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

impl Limiter {
    pub fn new(l: &Limits) -> Limiter {
        let per_min = NonZeroU32::new(l.exchanges_per_ip_per_minute).unwrap_or(NonZeroU32::MIN);
        Limiter {
            per_ip: RateLimiter::keyed(Quota::per_minute(per_min)),
            failures: DashMap::new(),
            max_failures: l.password_failures_before_lockout.max(1),
            lockout: l.lockout,
            conns_per_ip: Arc::new(DashMap::new()),
            max_conns_per_ip: l.max_connections_per_ip,
        }
    }

    /// One session exchange from `ip`.
    pub fn exchange(&self, ip: IpAddr) -> Result<(), RetryAfter> {
        self.per_ip.check_key(&client_key(ip)).map_err(|not_until| {
            RetryAfter(not_until.wait_time_from(DefaultClock::default().now()))
        })
    }

    /// Whether the link is locked after too many wrong passwords.
    pub fn locked(&self, link_id: &str) -> Result<(), RetryAfter> {
        let now = Instant::now();
        match self.failures.get(link_id).and_then(|f| f.locked_until) {
            Some(until) if until > now => Err(RetryAfter(until - now)),
            _ => Ok(()),
        }
    }

    /// Records a wrong password; returns the lockout when this one triggered it.
    pub fn password_failed(&self, link_id: &str) -> Option<RetryAfter> {
        let now = Instant::now();
        let mut f = self.failures.entry(link_id.to_owned()).or_default();
        // A lockout that ran out starts a new count.
        if f.locked_until.is_some_and(|u| u <= now) {
            *f = Failures::default();
        }
        f.count += 1;
        f.last = Some(now);
        if f.count >= self.max_failures {
            f.locked_until = Some(now + self.lockout);
            return Some(RetryAfter(self.lockout));
        }
        None
    }

    /// A right password clears the link's failure count.
    pub fn password_ok(&self, link_id: &str) {
        self.failures.remove(link_id);
    }

    /// Takes a connection slot for a client address, or refuses past the per-IP cap.
    pub fn connection(&self, ip: IpAddr) -> Option<ConnSlot> {
        let key = client_key(ip);
        let mut n = self.conns_per_ip.entry(key).or_default();
        if *n >= self.max_conns_per_ip {
            return None;
        }
        *n += 1;
        drop(n);
        Some(ConnSlot {
            conns: self.conns_per_ip.clone(),
            key,
        })
    }

    /// Drops state that no longer matters, so memory does not grow with the number of
    /// addresses and links ever seen. Called periodically.
    pub fn prune(&self) {
        self.per_ip.retain_recent();
        self.per_ip.shrink_to_fit();
        let now = Instant::now();
        let keep_for = self.lockout.max(Duration::from_secs(60));
        self.failures.retain(|_, f| match (f.locked_until, f.last) {
            (Some(u), _) if u > now => true,
            (_, Some(last)) => now.duration_since(last) < keep_for,
            _ => false,
        });
    }

    pub fn tracked_clients(&self) -> usize {
        self.per_ip.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            exchanges_per_ip_per_minute: 3,
            password_failures_before_lockout: 3,
            lockout: Duration::from_secs(60),
            max_connections_per_ip: 2,
            ..Limits::default()
        }
    }

    #[test]
    fn ipv6_is_keyed_by_slash_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().expect("ip");
        assert_eq!(
            client_key(mapped),
            "192.0.2.1".parse::<IpAddr>().expect("ip")
        );
    }

    #[test]
    fn exchanges_are_rate_limited_per_prefix() {
        let l = Limiter::new(&limits());
        let a: IpAddr = "2001:db8::1".parse().expect("ip");
        let b: IpAddr = "2001:db8::2".parse().expect("ip");
        assert!(l.exchange(a).is_ok());
        assert!(l.exchange(b).is_ok());
        assert!(l.exchange(a).is_ok());
        let retry = l.exchange(b).expect_err("limited");
        assert!(retry.secs() >= 1);
        assert!(l.exchange("192.0.2.7".parse().expect("ip")).is_ok());
    }

    #[test]
    fn lockout_after_failures_on_one_link() {
        let l = Limiter::new(&limits());
        assert!(l.password_failed("L").is_none());
        assert!(l.password_failed("L").is_none());
        assert!(l.locked("L").is_ok());
        let r = l.password_failed("L").expect("locked now");
        assert_eq!(r.secs(), 60);
        assert!(l.locked("L").is_err());
        assert!(l.locked("other").is_ok());
        l.prune();
        assert!(l.locked("L").is_err(), "pruning keeps live lockouts");
    }

    #[test]
    fn connection_caps_per_ip() {
        let l = Limiter::new(&limits());
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let a = l.connection(ip).expect("1");
        let _b = l.connection(ip).expect("2");
        assert!(l.connection(ip).is_none());
        drop(a);
        assert!(l.connection(ip).is_some());
    }
}
