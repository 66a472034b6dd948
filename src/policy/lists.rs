//! The seeded draw that blacklists some new IPs and sender domains at random.

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
