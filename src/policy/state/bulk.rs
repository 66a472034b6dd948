//! Bulk fingerprints, in memory: the recipients each body went to in its bulk window.

use super::BulkPrints;
use super::memory::Memory;
use crate::config::Content;
use crate::policy::content::Bulk;
use crate::policy::lru::{Lru, Oldest};

/// Bodies and their recipients; each body and each recipient counts toward the cap.
#[derive(Debug)]
pub(super) struct Prints {
    /// The bulk window, in seconds.
    window: u64,
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
    fn window_of(&self, now: u64) -> u64 {
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

impl BulkPrints for Memory {
    fn recipients_with(&mut self, print: u64, rcpts: &[String], now: u64) -> usize {
        // Only a lookup: the body is remembered when a message is accepted.
        let window = self.prints.window_of(now);
        let tick = self.cap.next_tick();
        match self.prints.lru.get_mut(print, tick) {
            Some(bulk) => {
                self.prints.recipients -= bulk.enter(window, now);
                bulk.with(rcpts)
            }
            None => Bulk::default().with(rcpts),
        }
    }

    fn add_recipients(&mut self, print: u64, rcpts: &[String], now: u64) {
        let window = self.prints.window_of(now);
        let tick = self.cap.next_tick();
        // Each recipient remembered for a body counts as a key.
        let incoming = match self.prints.lru.get_mut(print, tick) {
            Some(bulk) => {
                self.prints.recipients -= bulk.enter(window, now);
                bulk.with(rcpts) - bulk.recipients.len()
            }
            None => 1 + Bulk::default().with(rcpts),
        };
        self.make_room(incoming, now);
        let bulk = self.prints.lru.get_or_default(print, tick);
        self.prints.recipients -= bulk.enter(window, now);
        self.prints.recipients += bulk.add(rcpts);
    }

    fn clear_prints(&mut self) {
        self.prints.lru.clear();
        self.prints.recipients = 0;
    }
}
