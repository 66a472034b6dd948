//! [`BulkPrints`] over the in-memory bulk fingerprints (`state::bulk`), under the
//! shared key cap.

use super::Memory;
use crate::policy::content::Bulk;
use crate::policy::state::BulkPrints;

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
