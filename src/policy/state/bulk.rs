//! Bulk fingerprints, in memory: the recipients each body went to in its bulk window.

use crate::config::Content;
use crate::policy::content::Bulk;
use crate::policy::lru::{Lru, Oldest};

/// Bodies and their recipients; each body and each recipient counts toward the cap.
#[derive(Debug)]
pub(super) struct Prints {
    /// The bulk window, in seconds.
    pub(super) window: u64,
    pub lru: Lru<Bulk>,
    /// Recipients remembered across the bodies.
    pub recipients: usize,
}

impl Prints {
    pub(super) fn new(config: &Content) -> Self {
        Self {
            window: config.bulk_window.as_secs().max(1),
            lru: Lru::default(),
            recipients: 0,
        }
    }

    /// The number of the bulk window holding `now`.
    pub(super) fn window_of(&self, now: u64) -> u64 {
        now / self.window
    }

    /// Keys held: bodies and their recipients.
    pub(super) fn tracked(&self) -> usize {
        self.lru.len() + self.recipients
    }

    /// Forgets the least recently used body.
    pub(super) fn evict_oldest(&mut self) {
        if let Some(Oldest::Evicted(bulk)) = self.lru.evict_oldest(|_| None) {
            self.recipients -= bulk.recipients.len();
        }
    }

    pub(super) fn sweep(&mut self, now: u64) {
        let window = self.window;
        self.lru.retain(|b| now < b.last_seen + window);
        self.recipients = self.lru.values().map(|b| b.recipients.len()).sum();
    }
}
