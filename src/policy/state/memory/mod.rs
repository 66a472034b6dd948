//! The in-memory store: every owner's state, under one cap on the keys remembered.

mod bulk;
mod ips;
mod lists;
mod quotas;

use super::Store;
use super::bulk::Prints;
use super::ips::{IpHistory, Ips};
use super::lists::{DomainHistory, Lists, Recipients};
use super::quotas::Counters;
use crate::config::Config;
use crate::policy::lru::Oldest;
use crate::policy::quota::Counter;

/// How often idle state is swept, in virtual seconds.
const SWEEP_EVERY: u64 = 600;

/// Every owner's state, in memory.
#[derive(Debug)]
pub(crate) struct Memory {
    pub(super) cap: Cap,
    pub(super) lists: Lists,
    pub(super) recipients: Recipients,
    pub(super) counters: Counters,
    pub(super) ips: Ips,
    pub(super) prints: Prints,
}

/// The cap on keys remembered (`memory.max_tracked_keys`) and the sweep of idle ones.
#[derive(Debug)]
pub(super) struct Cap {
    max: usize,
    idle_counters: u64,
    idle_ips: u64,
    /// Grows with every use of a key, to know which was used longest ago.
    tick: u64,
    /// Keys forgotten to stay under the cap.
    evictions: u64,
    /// When a key set aside by eviction may next be released.
    release_at: u64,
    last_sweep: u64,
}

impl Cap {
    /// The tick of a use now.
    pub(super) fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

/// Until when a key eviction considered must stay, when it was set aside.
fn kept<V>(oldest: Option<Oldest<V>>) -> Option<u64> {
    match oldest {
        Some(Oldest::Kept(until)) => Some(until),
        Some(Oldest::Evicted(_)) | None => None,
    }
}

impl Memory {
    /// Nothing remembered yet; the config's lists, personal blacklists and bounds.
    pub(crate) fn new(config: &Config) -> Self {
        let memory = &config.memory;
        Self {
            cap: Cap {
                max: memory.max_tracked_keys,
                idle_counters: memory.idle_counters.as_secs(),
                idle_ips: memory.idle_ips.as_secs(),
                tick: 0,
                evictions: 0,
                release_at: u64::MAX,
                last_sweep: 0,
            },
            lists: Lists::new(config.seed, &config.blacklist),
            recipients: Recipients::new(&config.content),
            counters: Counters::default(),
            ips: Ips::new(config.seed, &config.blacklist, &config.reputation),
            prints: Prints::new(&config.content),
        }
    }

    /// Forgets keys, least recently used first, until `incoming` more fit under the cap.
    pub(super) fn make_room(&mut self, incoming: usize, now: u64) {
        while self.tracked_keys() + incoming > self.cap.max {
            if !self.evict_one(now) {
                break;
            }
        }
    }

    /// Forgets the least recently used key whose loss changes no decision now: the key
    /// used longest ago among counters, IPs, domains and bodies; a key that must stay (a
    /// block in force, a random listing, complaints that count) is set aside until then.
    /// `false` when no key may go.
    fn evict_one(&mut self, now: u64) -> bool {
        let complaint_window = self.ips.complaint_window;
        let counter_stays = |c: &Counter| c.blocked_at(now).map(|b| b.until);
        let ip_stays = |h: &IpHistory| h.stays_until(now, complaint_window);
        let domain_stays = |h: &DomainHistory| Some(h.random_until).filter(|u| *u > now);
        if now >= self.cap.release_at {
            self.cap.release_at = [
                self.counters.lru.release(counter_stays),
                self.ips.lru.release(ip_stays),
                self.lists.domains.release(domain_stays),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(u64::MAX);
        }
        loop {
            let oldest = [
                self.counters.lru.oldest(),
                self.ips.lru.oldest(),
                self.lists.domains.oldest(),
                self.prints.lru.oldest(),
            ];
            let Some(which) = (0..oldest.len())
                .filter(|i| oldest[*i].is_some())
                .min_by_key(|i| oldest[*i])
            else {
                return false;
            };
            let kept = match which {
                0 => kept(self.counters.lru.evict_oldest(counter_stays)),
                1 => kept(self.ips.lru.evict_oldest(ip_stays)),
                2 => kept(self.lists.domains.evict_oldest(domain_stays)),
                _ => {
                    self.prints.evict_oldest();
                    None
                }
            };
            match kept {
                Some(until) => self.cap.release_at = self.cap.release_at.min(until),
                None => {
                    self.cap.evictions += 1;
                    return true;
                }
            }
        }
    }
}

impl Store for Memory {
    fn sweep(&mut self, now: u64) {
        if now < self.cap.last_sweep + SWEEP_EVERY {
            return;
        }
        self.cap.last_sweep = now;
        let idle = self.cap.idle_counters;
        // A counter goes only once its windows and its block are over, whatever
        // `idle_counters` says: forgetting it earlier would reset a quota.
        self.counters
            .lru
            .retain(|c| c.matters(now) || now < c.last_seen + idle);
        self.ips.sweep(now, self.cap.idle_ips);
        self.lists.sweep(now, idle);
        self.prints.sweep(now);
    }

    fn tracked_keys(&self) -> usize {
        self.counters.lru.len()
            + self.ips.lru.len()
            + self.lists.domains.len()
            + self.prints.tracked()
    }

    fn evictions(&self) -> u64 {
        self.cap.evictions
    }

    #[cfg(test)]
    fn memory(&self) -> &Memory {
        self
    }
}

/// Looks inside, for tests.
#[cfg(test)]
impl Memory {
    /// Counters blocked at `now`.
    pub(crate) fn blocked_counters(&self, now: u64) -> usize {
        self.counters
            .lru
            .values()
            .filter(|c| c.blocked(now))
            .count()
    }

    /// The count of `key` in `window` at `now`, when it has a counter.
    pub(crate) fn counted(
        &self,
        key: super::QuotaKey<'_>,
        window: crate::units::Window,
        now: u64,
    ) -> Option<u64> {
        self.counters
            .lru
            .get(key.subject.id(key.name))
            .map(|c| c.count(window, now))
    }

    /// The recipients of bulk detection: as counted, and counted again body by body.
    pub(crate) fn bulk_recipients(&self) -> (usize, usize) {
        let recount = self.prints.lru.values().map(|b| b.recipients.len()).sum();
        (self.prints.recipients, recount)
    }

    /// The complaints kept about `ip`, when it is known.
    pub(crate) fn complaints_kept(&self, ip: std::net::IpAddr) -> Option<usize> {
        self.ips
            .lru
            .values()
            .find(|h| h.ip == ip)
            .map(|h| h.complaints.len())
    }
}
