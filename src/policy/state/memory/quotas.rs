//! [`QuotaCounters`] over the in-memory counters and blocks (`state::quotas`), under the
//! shared key cap.

use std::time::{Duration, UNIX_EPOCH};

use super::Memory;
use crate::policy::BlockInfo;
use crate::policy::quota::{Breach, Counter};
use crate::policy::state::{BlockOf, Check, QuotaCounters, QuotaKey};

impl Memory {
    /// The counter of `key`, made (room first) when there is none.
    fn counter(&mut self, key: QuotaKey<'_>, now: u64) -> &mut Counter {
        let id = key.subject.id(key.name);
        let tick = self.cap.next_tick();
        if !self.counters.lru.contains(id) {
            self.make_room(1, now);
        }
        self.counters.lru.get_or_default(id, tick)
    }

    /// Checks one key; only a lookup unless it is counted or must be blocked.
    fn check_one(&mut self, check: &Check<'_>, count: bool, now: u64) -> Result<(), Breach> {
        let key = (check.key.name, check.key.subject);
        if count {
            let counter = self.counter(check.key, now);
            let checked = counter.check(check.quota, key, now, check.extra);
            counter.add(now, 1);
            return checked;
        }
        // A key that is merely checked leaves nothing behind, so a flood of refused
        // senders or recipients cannot grow memory. A counter is made when an event is
        // counted or, here, when a block must be remembered.
        let id = check.key.subject.id(check.key.name);
        let tick = self.cap.next_tick();
        if let Some(counter) = self.counters.lru.get_mut(id, tick) {
            return counter.check(check.quota, key, now, check.extra);
        }
        let mut fresh = Counter::default();
        let breach = fresh.check(check.quota, key, now, check.extra);
        if breach.is_err() {
            self.make_room(1, now);
            self.counters.lru.insert(id, fresh, tick);
        }
        breach
    }
}

impl QuotaCounters for Memory {
    fn check(&mut self, checks: &[Check<'_>], count: bool, now: u64) -> Option<(usize, Breach)> {
        checks
            .iter()
            .enumerate()
            .find_map(|(i, check)| self.check_one(check, count, now).err().map(|b| (i, b)))
    }

    fn count(&mut self, keys: &[QuotaKey<'_>], now: u64) {
        for key in keys {
            self.counter(*key, now).add(now, 1);
        }
    }

    fn block_of(&self, key: QuotaKey<'_>, now: u64) -> Option<BlockOf> {
        let b = self
            .counters
            .lru
            .get(key.subject.id(key.name))?
            .blocked_at(now)?;
        Some(BlockOf {
            until: b.until,
            refused: b.refused,
        })
    }

    fn blocks(&self, now: u64) -> Vec<BlockInfo> {
        self.counters
            .lru
            .values()
            .filter_map(|c| c.blocked_at(now))
            .map(|b| BlockInfo {
                quota: b.quota,
                key: format!("{}:{}", b.quota.key_prefix(), b.label),
                window: Some(b.window),
                until: UNIX_EPOCH + Duration::from_secs(b.until),
                refused: b.refused,
            })
            .collect()
    }

    fn clear_counters(&mut self) {
        self.counters.lru.clear();
    }
}
