//! Blacklists and whitelists: static entries with optional expiry, and the seeded draw
//! that blacklists some new IPs and sender domains at random.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

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
/// same way, whatever order subjects arrive in, and with any Rust or `rand` version (the
/// hash and the coin are written out here; std's hashers and `StdRng` may change).
pub(crate) fn draw(seed: u64, salt: &str, subject: &[u8], probability: f64) -> bool {
    if probability <= 0.0 {
        return false;
    }
    if probability >= 1.0 {
        return true;
    }
    // The top 53 bits as a fraction of 1, as a double holds them exactly.
    let unit = (roll(seed, salt, subject) >> 11) as f64 / (1u64 << 53) as f64;
    unit < probability
}

/// 64 well-mixed bits from the seed, the salt and the subject: FNV-1a over the salt, a
/// separator and the subject, then SplitMix64's finaliser over that xor the seed.
pub(crate) fn roll(seed: u64, salt: &str, subject: &[u8]) -> u64 {
    const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    let fnv = salt
        .as_bytes()
        .iter()
        .chain(&[0xff])
        .chain(subject)
        .fold(FNV_OFFSET, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(FNV_PRIME)
        });
    splitmix64(seed ^ fnv)
}

/// SplitMix64 (Steele, Lea and Flood): one step of the generator, as a mixing function.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
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
    fn the_draw_is_pinned_forever() {
        // These values must never change: a seed printed by a failed run today must list
        // the same IPs and domains with any later Rust or rand version.
        assert_eq!(roll(7, "ip", &[127, 0, 0, 3]), 0xee4f_90cc_ba35_56eb);
        let listed: Vec<u8> = (2..=40u8)
            .filter(|last| draw(7, "ip", &[127, 0, 0, *last], 0.3))
            .collect();
        assert_eq!(listed, [10, 16, 17, 20, 23, 24, 31, 32, 34, 37, 39]);
    }

    #[test]
    fn the_draw_depends_on_seed_and_subject_only() {
        let hits = |seed| {
            (0..1000u32)
                .filter(|i| draw(seed, "ip", &i.to_be_bytes(), 0.1))
                .collect::<Vec<_>>()
        };
        assert_eq!(hits(7), hits(7));
        assert_ne!(hits(7), hits(8));
        let n = hits(7).len();
        assert!((50..150).contains(&n), "{n} of 1000 at p=0.1");
        assert!(!draw(7, "ip", b"1", 0.0));
        assert!(draw(7, "ip", b"1", 1.0));
    }
}
