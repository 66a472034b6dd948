//! Blacklists and whitelists: static entries with optional expiry, and the seeded draw
//! that blacklists some new IPs and sender domains at random.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use super::quota::{finish, hash_lowercase, mix};

/// An IP address or a CIDR range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is inside the range.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl From<IpAddr> for IpNet {
    fn from(addr: IpAddr) -> Self {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Self { addr, prefix }
    }
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("`{s}` is not an IP address or CIDR range");
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(bad)?,
            None => max,
        };
        Ok(Self { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let full = if self.addr.is_ipv4() { 32 } else { 128 };
        if self.prefix == full {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// A listing: what, until when (Unix seconds), and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listed<T> {
    pub value: T,
    pub until: Option<u64>,
    pub source: &'static str,
}

impl<T> Listed<T> {
    pub fn active(&self, now: u64) -> bool {
        self.until.is_none_or(|u| now < u)
    }
}

/// The seeded coin for random blacklisting: the same seed and subject always land the
/// same way, whatever order subjects arrive in.
///
/// The hash is qqmx's own, fixed forever, so a seed draws the same subjects on every
/// platform and with every Rust or dependency version.
pub(crate) fn draw(seed: u64, salt: &str, subject: &str, probability: f64) -> bool {
    if probability <= 0.0 {
        return false;
    }
    let h = finish(hash_lowercase(
        hash_lowercase(mix(seed, 0x5EED), salt),
        subject,
    ));
    // The top 53 bits as a fraction in [0, 1).
    let unit = (h >> 11) as f64 / (1u64 << 53) as f64;
    unit < probability
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_ranges() {
        let net: IpNet = "127.0.0.0/30".parse().expect("net");
        assert!(net.contains("127.0.0.3".parse().expect("ip")));
        assert!(!net.contains("127.0.0.4".parse().expect("ip")));
        let all: IpNet = "0.0.0.0/0".parse().expect("net");
        assert!(all.contains("8.8.8.8".parse().expect("ip")));
        let v6: IpNet = "2001:db8::/32".parse().expect("net");
        assert!(v6.contains("2001:db8::1".parse().expect("ip")));
        assert!(!v6.contains("127.0.0.1".parse().expect("ip")));
        assert!("1.2.3.4/33".parse::<IpNet>().is_err());
        assert!("nope".parse::<IpNet>().is_err());
        assert_eq!(net.to_string(), "127.0.0.0/30");
    }

    #[test]
    fn the_draw_depends_on_seed_and_subject_only() {
        let hits = |seed| {
            (0..1000u32)
                .filter(|i| draw(seed, "ip", &i.to_string(), 0.1))
                .collect::<Vec<_>>()
        };
        assert_eq!(hits(7), hits(7));
        assert_ne!(hits(7), hits(8));
        let n = hits(7).len();
        assert!((50..150).contains(&n), "{n} of 1000 at p=0.1");
        assert!(!draw(7, "ip", "1", 0.0));
        assert!(draw(7, "ip", "1", 1.0));
    }

    /// The draw is pinned: a change here replays old seeds differently.
    #[test]
    fn the_draw_is_stable_across_versions() {
        const PINNED: &[u32] = &[6, 36, 90, 97, 116, 123, 145, 158, 165, 191, 192];
        let hits = (0..200u32)
            .filter(|i| draw(7, "ip", &format!("127.0.0.{i}"), 0.05))
            .collect::<Vec<_>>();
        assert_eq!(hits, PINNED);
    }
}
