//! Quota counters: calendar windows, tiers and blocks.
//!
//! A counter counts events for one key (an IP, a sender, a domain, a recipient) in the
//! current calendar minute, clock hour and China Standard Time day. Windows are fixed,
//! not sliding: a new minute starts from zero. When an event would take a window past its
//! tier's limit, the key is blocked for the tier's block time and the event refused.

use std::net::IpAddr;

use super::hash::{finish, hash_lowercase, mix};
use crate::config::{Block, Quota};
use crate::units::{QuotaName, Window};

/// When a block imposed at `now` in `window` ends.
pub fn block_end(block: Block, window: Window, now: u64) -> u64 {
    match block {
        Block::For(d) => now + d.as_secs().max(1),
        Block::UntilMidnight => Window::Day.end(now).max(window.end(now)),
    }
}

/// What a counter counts, borrowed for a lookup.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Subject<'a> {
    Ip(IpAddr),
    /// An address or domain; case does not matter.
    Text(&'a str),
}

impl Subject<'_> {
    /// The key of its counter under `quota`: a hash of the IP, or of the text
    /// lower-cased, so that a lookup allocates nothing.
    pub fn id(&self, quota: QuotaName) -> u64 {
        self.hash(quota as u64 + 1)
    }

    /// The key of what is remembered about the subject beside its counters (an IP's
    /// history, a domain's random listing).
    pub fn record_id(&self) -> u64 {
        self.hash(0)
    }

    fn hash(&self, salt: u64) -> u64 {
        let h = mix(0, salt);
        let h = match self {
            Self::Ip(IpAddr::V4(ip)) => mix(mix(h, 4), u64::from(u32::from(*ip))),
            Self::Ip(IpAddr::V6(ip)) => {
                let bits = u128::from(*ip);
                mix(mix(mix(h, 6), bits as u64), (bits >> 64) as u64)
            }
            Self::Text(text) => hash_lowercase(mix(h, 1), text),
        };
        finish(h)
    }

    /// The subject as shown in blocks and decisions.
    pub fn label(&self) -> Box<str> {
        let mut label = String::new();
        self.push_label(&mut label);
        label.into()
    }

    /// Writes [`label`](Self::label) to `out`: an IP as its `Display` does (an IPv4
    /// address without the formatting machinery, as a shared store names a key for
    /// every read of a stage), a text lower-cased.
    pub fn push_label(&self, out: &mut String) {
        match self {
            Self::Ip(IpAddr::V4(ip)) => {
                for (i, octet) in ip.octets().into_iter().enumerate() {
                    if i > 0 {
                        out.push('.');
                    }
                    if octet >= 100 {
                        out.push(char::from(b'0' + octet / 100));
                    }
                    if octet >= 10 {
                        out.push(char::from(b'0' + octet / 10 % 10));
                    }
                    out.push(char::from(b'0' + octet % 10));
                }
            }
            // Writing to a string cannot fail.
            Self::Ip(ip) => {
                let _ = std::fmt::Write::write_fmt(out, format_args!("{ip}"));
            }
            Self::Text(text) if text.is_ascii() => {
                out.extend(text.bytes().map(|b| char::from(b.to_ascii_lowercase())));
            }
            Self::Text(text) => out.push_str(&text.to_lowercase()),
        }
    }
}

/// Events of one key in the current windows, and its block.
///
/// Kept small, as there is one for every key counted: the block, with the key's name for
/// display, is allocated only when there is one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Counter {
    /// (window number, count) for minute, hour, day. Both saturate at `u32::MAX`: minute
    /// numbers last until the year 10,000, and no window counts 4 billion events.
    windows: [(u32, u32); 3],
    /// Last event or check, Unix seconds.
    pub last_seen: u64,
    /// The last block, until a check after its end.
    block: Option<Box<Blocked>>,
}

/// A block of a counter.
#[derive(Debug, Clone)]
pub(crate) struct Blocked {
    /// The quota it counts for.
    pub quota: QuotaName,
    /// What it counts, for display.
    pub label: Box<str>,
    /// Unix seconds when the block ends.
    pub until: u64,
    /// The window whose tier imposed the block.
    pub window: Window,
    /// The limit that imposed the block (a tier's or the extra limit).
    limit: u64,
    /// Refusals since the block began.
    pub refused: u64,
    /// Whether the block came from the extra limit (the warm-up) rather than a tier.
    extra: bool,
}

/// Why a counter refused an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Breach {
    pub window: Window,
    pub count: u64,
    pub limit: u64,
    pub until: u64,
    /// Whether the key was already blocked (rather than crossing a limit now).
    pub already: bool,
    /// Whether the extra limit (not a tier) imposed the block.
    pub extra: bool,
}

/// A window number as a counter keeps it.
fn window_number(window: Window, now: u64) -> u32 {
    u32::try_from(window.index(now)).unwrap_or(u32::MAX)
}

impl Counter {
    /// Events in the current `window`.
    pub fn count(&self, window: Window, now: u64) -> u64 {
        let (number, count) = self.windows[window as usize];
        if number == window_number(window, now) {
            u64::from(count)
        } else {
            0
        }
    }

    /// Whether forgetting the counter at `now` would change a decision: it is blocked, or
    /// one of its windows with events is still the current one.
    pub fn matters(&self, now: u64) -> bool {
        self.blocked(now) || Window::ALL.into_iter().any(|w| self.count(w, now) > 0)
    }

    /// The block in force at `now`.
    pub fn blocked_at(&self, now: u64) -> Option<&Blocked> {
        self.block.as_deref().filter(|b| b.until > now)
    }

    /// Whether the key is blocked at `now`.
    pub fn blocked(&self, now: u64) -> bool {
        self.blocked_at(now).is_some()
    }

    /// Checks whether one more event of `key` fits; blocks the key when it does not.
    ///
    /// (There is deliberately no form for `n` events: one event over the limit means the
    /// window is full, so the block is deserved; `n` events that do not fit may find a
    /// window far from full, and blocking it then would be wrong.)
    pub fn check(
        &mut self,
        quota: &Quota,
        key: (QuotaName, Subject<'_>),
        now: u64,
        extra_limit: Option<(Window, u64)>,
    ) -> Result<(), Breach> {
        self.last_seen = now;
        if let Some(block) = self.block.as_deref_mut() {
            if block.until > now {
                block.refused += 1;
                let (window, limit, until, extra) =
                    (block.window, block.limit, block.until, block.extra);
                return Err(Breach {
                    window,
                    count: self.count(window, now),
                    limit,
                    until,
                    already: true,
                    extra,
                });
            }
            self.block = None;
        }
        for window in Window::ALL {
            let Some(tier) = quota.tier(window) else {
                continue;
            };
            let count = self.count(window, now);
            if count >= tier.limit {
                let until = block_end(tier.block, window, now);
                return Err(self.block(key, window, count, (tier.limit, until), false));
            }
        }
        if let Some((window, limit)) = extra_limit {
            let count = self.count(window, now);
            if count >= limit {
                let until = window.end(now);
                return Err(self.block(key, window, count, (limit, until), true));
            }
        }
        Ok(())
    }

    fn block(
        &mut self,
        (quota, subject): (QuotaName, Subject<'_>),
        window: Window,
        count: u64,
        (limit, until): (u64, u64),
        extra: bool,
    ) -> Breach {
        self.block = Some(Box::new(Blocked {
            quota,
            label: subject.label(),
            until,
            window,
            limit,
            refused: 1,
            extra,
        }));
        Breach {
            window,
            count,
            limit,
            until,
            already: false,
            extra,
        }
    }

    /// Counts `n` events at `now`.
    pub fn add(&mut self, now: u64, n: u64) {
        self.last_seen = now;
        let n = u32::try_from(n).unwrap_or(u32::MAX);
        for window in Window::ALL {
            let slot = &mut self.windows[window as usize];
            let number = window_number(window, now);
            if slot.0 != number {
                *slot = (number, 0);
            }
            slot.1 = slot.1.saturating_add(n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Tier;
    use std::time::Duration;

    const KEY: (QuotaName, Subject<'static>) = (QuotaName::IpMessages, Subject::Text("k"));

    #[test]
    fn a_label_is_the_ip_as_displayed_or_the_text_lower_cased() {
        for ip in [
            "0.0.0.0",
            "10.0.100.255",
            "127.0.0.1",
            "9.99.199.200",
            "::1",
            "2001:db8::7",
        ] {
            let ip: IpAddr = ip.parse().expect("an IP");
            assert_eq!(&*Subject::Ip(ip).label(), ip.to_string());
        }
        assert_eq!(
            &*Subject::Text("Bob@Example.ORG").label(),
            "bob@example.org"
        );
        assert_eq!(&*Subject::Text("ÉLISE@QQ.COM").label(), "élise@qq.com");
    }

    fn quota(minute: u64, day: u64) -> Quota {
        let mut q = crate::config::Quotas::default().ip_messages;
        q.minute = Some(Tier {
            limit: minute,
            block: Block::For(Duration::from_secs(600)),
        });
        q.hour = None;
        q.day = Some(Tier {
            limit: day,
            block: Block::UntilMidnight,
        });
        q
    }

    #[test]
    fn table_of_limits_and_blocks() {
        let q = quota(2, 3);
        let t0 = 1_748_826_000; // 09:00 CST
        let mut c = Counter::default();
        // (seconds after t0, expected outcome, window if refused, block end)
        let rows: &[(u64, bool, Option<Window>, u64)] = &[
            (0, true, None, 0),
            (1, true, None, 0),
            (2, false, Some(Window::Minute), t0 + 2 + 600), // one over the minute tier
            (599, false, Some(Window::Minute), t0 + 2 + 600), // still blocked
            (603, true, None, 0),                           // block over, new minute
            (660, false, Some(Window::Day), Window::Day.end(t0)), // the day tier
            (Window::Day.end(t0) - t0, true, None, 0),      // midnight lifts it
        ];
        for &(at, ok, window, until) in rows {
            let now = t0 + at;
            match c.check(&q, KEY, now, None) {
                Ok(()) => {
                    assert!(ok, "t0+{at}: accepted but should not be");
                    c.add(now, 1);
                }
                Err(b) => {
                    assert!(!ok, "t0+{at}: refused {b:?}");
                    assert_eq!((Some(b.window), b.until), (window, until), "t0+{at}");
                }
            }
        }
    }

    #[test]
    fn an_extra_limit_blocks_until_the_window_ends() {
        let q = quota(100, 100);
        let t0 = 1_748_826_000;
        let mut c = Counter::default();
        c.add(t0, 50);
        let breach = c
            .check(&q, KEY, t0 + 60, Some((Window::Day, 50)))
            .expect_err("over");
        assert_eq!(breach.limit, 50);
        assert_eq!(breach.until, Window::Day.end(t0));
    }
}
