//! Fast hashes of keys, so that a lookup allocates nothing, and maps keyed by them.

use std::hash::{BuildHasherDefault, Hasher};

/// One step of a fast multiplicative hash.
///
/// It is not keyed and not collision-resistant, and the keys it hashes come from clients
/// (sender addresses, domains, recipients), so a client that wants to can craft two keys
/// with one id: they then share a counter. qqmx is a test double on a test network, where
/// that is an accepted risk; do not reuse this hash where clients are hostile.
pub(crate) fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(5) ^ v).wrapping_mul(0x517c_c1b7_2722_0a95)
}

/// Spreads the bits of a finished hash (MurmurHash3's finaliser).
pub(crate) fn finish(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Hashes `text` as if lower-cased, without allocating.
pub(crate) fn hash_lowercase(mut h: u64, text: &str) -> u64 {
    if text.is_ascii() {
        for b in text.bytes() {
            h = mix(h, u64::from(b.to_ascii_lowercase()));
        }
    } else {
        for c in text.chars().flat_map(char::to_lowercase) {
            h = mix(h, u64::from(c));
        }
    }
    h
}

/// A hasher for keys that are already hashes.
#[derive(Default)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = mix(self.0, u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by hashes.
pub(crate) type IdMap<V> = std::collections::HashMap<u64, V, BuildHasherDefault<IdHasher>>;
/// A set of hashes.
pub(crate) type IdSet = std::collections::HashSet<u64, BuildHasherDefault<IdHasher>>;
