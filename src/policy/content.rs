//! Content rules: bulk detection over a normalised body, and spam phrases.

use std::collections::HashSet;

use super::hash::{IdSet, finish, hash_lowercase, mix};

/// A fingerprint of the body: the text after the headers, lower-cased, without
/// whitespace, so that re-wrapped or re-cased copies count as the same content.
pub(crate) fn fingerprint(message: &[u8]) -> u64 {
    let body = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(message, |i| &message[i + 4..]);
    let h = body
        .iter()
        .filter(|b| !b.is_ascii_whitespace())
        .fold(0, |h, b| mix(h, u64::from(b.to_ascii_lowercase())));
    finish(h)
}

/// Recipients that got one body within one bulk window.
#[derive(Debug, Default)]
pub(crate) struct Bulk {
    pub window: u64,
    /// Hashes of the recipients, lower-cased.
    pub recipients: IdSet,
    pub last_seen: u64,
}

impl Bulk {
    /// Moves the body into bulk window `window` (forgetting an older window's
    /// recipients) and marks it seen at `now`. Returns how many recipients it forgot.
    pub fn enter(&mut self, window: u64, now: u64) -> usize {
        self.last_seen = now;
        if self.window == window {
            return 0;
        }
        self.window = window;
        let forgotten = self.recipients.len();
        self.recipients = IdSet::default();
        forgotten
    }

    /// How many distinct recipients the body would have after adding `rcpts`.
    pub fn with(&self, rcpts: &[String]) -> usize {
        self.recipients.len()
            + rcpts
                .iter()
                .map(|r| recipient_id(r))
                .filter(|id| !self.recipients.contains(id))
                .collect::<HashSet<_>>()
                .len()
    }

    /// Adds `rcpts` to the recipients of the body. Returns how many were new.
    pub fn add(&mut self, rcpts: &[String]) -> usize {
        let before = self.recipients.len();
        self.recipients
            .extend(rcpts.iter().map(|r| recipient_id(r)));
        self.recipients.len() - before
    }
}

fn recipient_id(rcpt: &str) -> u64 {
    finish(hash_lowercase(0, rcpt))
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
