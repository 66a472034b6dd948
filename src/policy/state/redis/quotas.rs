//! [`QuotaCounters`] in Redis: a counter per key (a hash of window numbers and counts,
//! and its block), checked and counted by one script per call, sent with the writes
//! held back. A check that does not count is answered from the counters the stage read
//! when every key fits (the script would change nothing); a key over a limit or blocked
//! is left to the script, which blocks it.

use std::time::{Duration, UNIX_EPOCH};

use super::Redis;
use super::packed::Args;
use crate::policy::BlockInfo;
use crate::policy::quota::{Breach, Subject, block_end};
use crate::policy::state::{BlockOf, Check, QuotaCounters, QuotaKey};
use crate::units::{QuotaName, Window};

/// What the quota script does with the keys after the checks.
#[derive(Clone, Copy)]
pub(super) enum Mode {
    /// Checks only.
    Check = 0,
    /// Counts every key checked, fitting or not.
    CountChecked = 1,
    /// Counts the other keys when every key checked fits.
    Reserve = 2,
    /// Takes one event back from the other keys.
    Cancel = 3,
}

impl Redis {
    pub(super) fn counter_key(&self, key: QuotaKey<'_>) -> String {
        let mut k = self.key_with("q:");
        k.push_str(key.name.name());
        k.push(':');
        key.subject.push_label(&mut k);
        k
    }

    fn blocks_key(&self) -> String {
        self.key(format_args!("blocks"))
    }

    /// Runs the quota script: `checks` in order, then `mode` on `others`; a script sent
    /// ahead with the stage's reads answers it when it is the same call.
    fn quota(
        &self,
        checks: &[Check<'_>],
        mode: Mode,
        others: &[QuotaKey<'_>],
        now: u64,
    ) -> Option<(usize, Breach)> {
        let reply = match self.claim(&signature(checks, mode, others, now)) {
            Some(reply) => reply,
            None => {
                let keys = self.quota_keys(checks, others);
                self.exchange("quota", |p| {
                    self.quota_call(&mut p.command("EVALSHA"), &keys, mode, checks, now);
                })?
                .pop()?
            }
        };
        self.forget_counters();
        let found: Vec<u64> = match redis::from_redis_value(reply) {
            Ok(found) => found,
            Err(e) => {
                self.failed("quota", &e.into());
                return None;
            }
        };
        let &[i, window, count, limit, until, already, extra] = found.as_slice() else {
            return None;
        };
        let index = usize::try_from(i).ok()?;
        let window = *Window::ALL.get(usize::try_from(window).ok()?)?;
        Some((
            index,
            Breach {
                window,
                count,
                limit,
                until,
                already: already == 1,
                extra: extra == 1,
            },
        ))
    }

    /// The keys of the quota script's call: the set of blocks, the counters of `checks`,
    /// then those of `others`.
    pub(super) fn quota_keys(&self, checks: &[Check<'_>], others: &[QuotaKey<'_>]) -> Vec<String> {
        let mut keys = Vec::with_capacity(1 + checks.len() + others.len());
        keys.push(self.blocks_key());
        keys.extend(checks.iter().map(|check| self.counter_key(check.key)));
        keys.extend(others.iter().map(|key| self.counter_key(*key)));
        keys
    }

    /// The arguments, after `EVALSHA`, of the quota script's call on `keys` (from
    /// [`quota_keys`](Self::quota_keys)): `checks` in order, then `mode` on the other
    /// keys.
    pub(super) fn quota_call<A: Args>(
        &self,
        call: &mut A,
        keys: &[String],
        mode: Mode,
        checks: &[Check<'_>],
        now: u64,
    ) {
        // A counter outlives the day it counts in by `idle_counters`, at least a day, so
        // that a clock held still (a manual clock) never sees it expire mid-window.
        let ttl = Window::Day.end(now) - now + self.idle_counters.max(86_400);
        call.arg(self.scripts.quota.get_hash())
            .arg(keys.len())
            .arg(keys)
            .arg(now)
            .arg(mode as u8)
            .arg(Window::Minute.index(now))
            .arg(Window::Hour.index(now))
            .arg(Window::Day.index(now))
            .arg(ttl)
            .arg(checks.len());
        for check in checks {
            call.arg(check.key.name.name())
                .arg(&*check.key.subject.label());
            for window in Window::ALL {
                match check.quota.tier(window) {
                    Some(tier) => call.arg(tier.limit).arg(block_end(tier.block, window, now)),
                    None => call.arg(-1).arg(0),
                };
            }
            match check.extra {
                Some((window, limit)) => call.arg(window as u8).arg(limit).arg(window.end(now)),
                None => call.arg(-1).arg(0).arg(0),
            };
        }
    }
}

/// A call of the quota script as numbers (a key as its name and the hash of its
/// subject, as the in-memory store keys it): a script sent ahead answers the rule's
/// call when their signatures are equal.
pub(super) fn signature(
    checks: &[Check<'_>],
    mode: Mode,
    others: &[QuotaKey<'_>],
    now: u64,
) -> Vec<u64> {
    let key = |k: &QuotaKey<'_>| [k.name as u64, k.subject.id(k.name)];
    let mut sig = Vec::with_capacity(3 + checks.len() * 10 + others.len() * 2);
    sig.extend([mode as u64, now, checks.len() as u64]);
    for check in checks {
        sig.extend(key(&check.key));
        for window in Window::ALL {
            match check.quota.tier(window) {
                Some(tier) => sig.extend([tier.limit, block_end(tier.block, window, now)]),
                None => sig.extend([u64::MAX, 0]),
            }
        }
        match check.extra {
            Some((window, limit)) => sig.extend([window as u64, limit]),
            None => sig.extend([u64::MAX, 0]),
        }
    }
    for k in others {
        sig.extend(key(k));
    }
    sig
}

impl QuotaCounters for Redis {
    fn check(&mut self, checks: &[Check<'_>], count: bool, now: u64) -> Option<(usize, Breach)> {
        if count {
            return self.quota(checks, Mode::CountChecked, &[], now);
        }
        let fit = self.staged(|view| {
            let mut fit = true;
            for check in checks {
                let (name, id) = (check.key.name, check.key.subject.id(check.key.name));
                let (_, _, counter) = view
                    .counters
                    .iter()
                    .find(|(n, i, _)| *n == name && *i == id)?;
                fit &= counter.fits(check, now);
            }
            Some(fit)
        });
        if fit == Some(true) {
            return None;
        }
        self.quota(checks, Mode::Check, &[], now)
    }

    fn count(&mut self, keys: &[QuotaKey<'_>], now: u64) {
        self.quota(&[], Mode::Reserve, keys, now);
    }

    fn reserve(
        &mut self,
        checks: &[Check<'_>],
        keys: &[QuotaKey<'_>],
        now: u64,
    ) -> Option<(usize, Breach)> {
        self.quota(checks, Mode::Reserve, keys, now)
    }

    fn cancel(&mut self, keys: &[QuotaKey<'_>], now: u64) {
        self.quota(&[], Mode::Cancel, keys, now);
    }

    fn block_of(&self, key: QuotaKey<'_>, now: u64) -> Option<BlockOf> {
        if let Subject::Ip(ip) = key.subject
            && let Some(block) = self.staged(|v| {
                (v.ip == Some(ip))
                    .then(|| v.ip_view.block_of(key, now))
                    .flatten()
            })
        {
            return block;
        }
        let k = self.counter_key(key);
        let (until, refused): (Option<u64>, Option<u64>) = self.call("block_of", |conn| {
            redis::cmd("HMGET").arg(&k).arg("bu").arg("br").query(conn)
        });
        let until = until.filter(|u| *u > now)?;
        Some(BlockOf {
            until,
            refused: refused.unwrap_or(0),
        })
    }

    fn blocks(&self, now: u64) -> Vec<BlockInfo> {
        let mut invocation = self.scripts.blocks.key(self.blocks_key());
        invocation.arg(now);
        let found: Vec<(String, String, usize, u64, u64)> =
            self.call("blocks", |conn| invocation.invoke(conn));
        found
            .into_iter()
            .filter_map(|(quota, label, window, until, refused)| {
                let quota = QuotaName::ALL.into_iter().find(|q| q.name() == quota)?;
                Some(BlockInfo {
                    quota,
                    key: format!("{}:{label}", quota.key_prefix()),
                    window: Some(*Window::ALL.get(window)?),
                    until: UNIX_EPOCH + Duration::from_secs(until),
                    refused,
                })
            })
            .collect()
    }

    fn clear_counters(&mut self) {
        self.delete_all("clear_counters", "q:");
        let blocks = self.blocks_key();
        self.call("clear_counters", |conn| {
            redis::cmd("DEL").arg(&blocks).query::<()>(conn)
        });
    }
}
