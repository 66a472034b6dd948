//! Content rules: bulk detection over a normalised body, and spam phrases.

use std::collections::HashSet;
use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;

/// A fingerprint of the body: the text after the headers, lower-cased, without
/// whitespace, so that re-wrapped or re-cased copies count as the same content.
pub(crate) fn fingerprint(message: &[u8]) -> u64 {
    let body = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message, |i| &message[i + 4..]);
    let mut hasher = DefaultHasher::new();
    for b in body.iter().filter(|b| !b.is_ascii_whitespace()) {
        hasher.write_u8(b.to_ascii_lowercase());
    }
    hasher.finish()
}

/// Recipients that got one body within one bulk window.
#[derive(Debug, Default)]
pub(crate) struct Bulk {
    pub window: u64,
    pub recipients: HashSet<Box<str>>,
    pub last_seen: u64,
}

impl Bulk {
    /// How many distinct recipients the body would have after adding `rcpts`.
    pub fn with(&self, rcpts: &[String]) -> usize {
        self.recipients.len()
            + rcpts
                .iter()
                .filter(|r| !self.recipients.contains(r.to_lowercase().as_str()))
                .collect::<HashSet<_>>()
                .len()
    }
}

/// Whether `message` contains `phrase`, ignoring ASCII case.
pub(crate) fn contains_phrase(message: &[u8], phrase: &str) -> bool {
    let needle = phrase.as_bytes();
    !needle.is_empty()
        && message
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_ignore_headers_case_and_wrapping() {
        let a = fingerprint(b"To: a@qq.com\r\n\r\nBuy NOW\r\ncheap");
        let b = fingerprint(b"To: b@qq.com\r\nX: y\r\n\r\nbuy now cheap\r\n");
        let c = fingerprint(b"To: b@qq.com\r\n\r\nbuy later");
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn phrases_ignore_case() {
        assert!(contains_phrase(b"Subject: CHEAP Pills", "cheap pills"));
        assert!(!contains_phrase(b"Subject: pills", "cheap pills"));
        assert!(!contains_phrase(b"x", ""));
    }
}
