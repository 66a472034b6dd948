//! The model: [`Expectation`] (one check, read from `[[expect]]` or built in Rust), its
//! [`Kind`], the [`Times`] a count may take, and the [`ExpectError`] of a parameter that
//! does not fit its kind.

use std::fmt;
use std::ops::{Bound, RangeBounds};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::reply::ReplyKind;
use crate::store::Folder;
use crate::units::duration_text;

/// One expectation about what a server saw: a scenario's `[[expect]]`, or built in Rust
/// for [`QqMx::expect`](crate::QqMx::expect) and `Remote::expect` (feature `remote`).
///
/// Every [`Kind`] has a constructor, and the parameters a builder method each:
///
/// ```
/// use std::time::Duration;
/// use qqmx::{Expectation, ReplyKind};
///
/// let three_at_mx2 = Expectation::accepted(3).mx("mx2");
/// let patient = Expectation::retries()
///     .min_delay(Duration::from_secs(300))
///     .max_delay(Duration::from_secs(3600));
/// let polite = Expectation::respects_blocks().named("waits out a block");
/// let stale = Expectation::replies(ReplyKind::MailboxNotFound, 1..);
/// assert_eq!(polite.name(), "waits out a block");
/// assert_eq!(three_at_mx2.name(), "accepted exactly 3 at mx2");
/// # let _ = (patient, stale);
/// ```
///
/// The same in a scenario file:
///
/// ```toml
/// [[expect]]
/// kind = "accepted"
/// min = 3
/// max = 3
/// mx = "mx2"
/// [[expect]]
/// kind = "retries"
/// after = "temporary"
/// min_delay = "5m"
/// max_delay = "1h"
/// [[expect]]
/// kind = "respects_blocks"
/// name = "waits out a block"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[must_use = "an expectation does nothing until it is checked (`QqMx::expect`)"]
pub struct Expectation {
    /// What is checked.
    pub(super) kind: Kind,
    /// A label for reports; by default one is made from the kind and its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) name: Option<String>,
    /// Lower bound of a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) min: Option<u64>,
    /// Upper bound of a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) max: Option<u64>,
    /// `rejected`, `replies`: the reply kind counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reply: Option<ReplyKind>,
    /// `accepted`: only messages that arrived at this MX host; `failover`: the host
    /// that goes down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) mx: Option<String>,
    /// `accepted`: only messages delivered to this folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) folder: Option<Folder>,
    /// `retries`: what the sender retries after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) after: Option<RetryAfter>,
    /// `retries`: the earliest acceptable retry, in virtual time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_text::option"
    )]
    pub(super) min_delay: Option<Duration>,
    /// `retries`: the latest acceptable retry, in virtual time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_text::option"
    )]
    pub(super) max_delay: Option<Duration>,
}

/// The kinds of expectation.
///
/// Every kind is checked over the event log and the accepted messages of a run
/// ([`Run`](super::Run)), in the server's virtual time. Where a kind counts *attempts*,
/// an attempt is one transaction (from its `MAIL`; for a refusal at connect or `HELO`,
/// the connection): a sender that pipelines ten `RCPT`s into a refusal makes one
/// attempt, not ten.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Kind {
    /// Messages accepted (only those at `mx` and in `folder`, when given): between `min`
    /// and `max`, either bound optional; at least 1 when neither is given.
    Accepted,
    /// Refusals sent: replies with a code of 400 or more (only those of kind `reply`,
    /// when given), between `min` and `max` as for `accepted`.
    Rejected,
    /// Replies of kind `reply` sent, whatever their code (`queued` counts the `250` at
    /// the end of data): between `min` and `max` as for `accepted`.
    Replies,
    /// Attempts made while a key (`ip:...`, `sender:...`, `domain:...`,
    /// `recipient:...`) is blocked: at most `max` (default 0) in each block.
    ///
    /// A block begins at a refusal that carries a block end (`until`: the quota
    /// blocks, and the blacklistings that expire) on a key that is not blocked then. It
    /// lasts until that end, pushed later by any refusal during it that names a later one.
    /// Every later refusal on the same key before the end is an attempt while blocked,
    /// except refusals of transactions (or connections) that began before the refusal
    /// that started the block: the sender could not have known yet (the refusal that
    /// starts a block, the other recipients pipelined with it, a concurrent session
    /// already past `MAIL`). Refusals of one transaction count once. The block with the
    /// most attempts is reported.
    RespectsBlocks,
    /// How soon a failed recipient is tried again.
    ///
    /// A failure is, with `after = "temporary"`, a 4xx reply that decides a recipient: to
    /// its `RCPT`, or, for the recipients accepted in the transaction, to `DATA`, at the
    /// end of data, or a `421` that closes the session mid-transaction; with `after =
    /// "dropped"`, a session that ends dropped while the recipient's transaction is
    /// still open (accepted at `RCPT`, or its `RCPT` unanswered, and no final reply to
    /// the message yet). Dropped means closed by a fault, a failed write, or the client
    /// closing (or a failed read) while it waited for a reply.
    ///
    /// The retry is the next `RCPT TO` of the same address (compared without case), in
    /// any session; its delay from the failure must be at least `min_delay` and at most
    /// `max_delay`. A failure never retried breaks `max_delay` only if the run went on
    /// past the failure plus `max_delay` (the end of the run is
    /// [`Run::end`](super::Run::end), by default the last event). The worst violation is
    /// reported: the one furthest outside its bound, relatively.
    ///
    /// Limits: a recipient is named only by a logged `RCPT`, so a drop before any (a
    /// fault at connect, `HELO`, `MAIL`, or before the reply to the first `RCPT`) is
    /// counted in the report but not measured; and the next message to the same address
    /// counts as the retry, so scenarios that check retries send each recipient one
    /// message at a time.
    Retries,
    /// `RCPT`s to an address after a `Mailbox not found` reply to an earlier `RCPT` of it
    /// (compared without case): at most `max` (default 0) in all. The address with the
    /// most is reported.
    NoResendToUnknown,
    /// Attempts refused by the new-IP warm-up allowance (rule `reputation.warmup`): at
    /// most `max` (default 0).
    WithinWarmup,
    /// While MX host `mx` is down, mail still arrives: during each of its outages, at
    /// least `min` (default 1) messages accepted at another host (received between the
    /// outage's start and end). Fails when `mx` was never down, as far as the run knows:
    /// a scenario's timeline records its outages; the embedded server and a `Remote`
    /// record none. The outage with the fewest is reported.
    Failover,
    /// Every accepted message passes DMARC (authentication on, DMARC `pass`); holds when
    /// none was accepted. How many did not, and why the first did not, is reported.
    Authenticated,
}

/// What a retry follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetryAfter {
    /// A 4xx reply.
    Temporary,
    /// A connection closed or reset without a reply.
    Dropped,
}

/// A parameter of an [`Expectation`] that does not fit its kind.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExpectError {
    /// `min` is above `max`.
    #[error("min {min} is above max {max}")]
    Bounds {
        /// The lower bound.
        min: u64,
        /// The upper bound.
        max: u64,
    },
    /// `min_delay` is above `max_delay`.
    #[error(
        "min_delay {} is above max_delay {}",
        duration_text::Text(*min),
        duration_text::Text(*max)
    )]
    Delays {
        /// The earliest retry.
        min: Duration,
        /// The latest retry.
        max: Duration,
    },
    /// `retries` without `after`.
    #[error("retries: needs `after = \"temporary\"` or `\"dropped\"`")]
    NoRetryAfter,
    /// `retries` with neither delay.
    #[error("retries: needs `min_delay`, `max_delay` or both")]
    NoDelay,
    /// `failover` without the host that goes down.
    #[error("failover: needs the `mx` that goes down")]
    NoMx,
    /// `replies` without the kind it counts.
    #[error("replies: needs the `reply` kind it counts")]
    NoReply,
}

impl Expectation {
    pub(super) fn of(kind: Kind) -> Self {
        Self {
            kind,
            name: None,
            min: None,
            max: None,
            reply: None,
            mx: None,
            folder: None,
            after: None,
            min_delay: None,
            max_delay: None,
        }
    }

    fn counted(kind: Kind, times: impl Into<Times>) -> Self {
        let times = times.into();
        Self {
            min: Some(times.min),
            max: times.max,
            ..Self::of(kind)
        }
    }

    /// [`Kind::Accepted`]: the number of messages accepted (answered `250` at the end of
    /// data); narrow it with [`mx`](Self::mx) and [`folder`](Self::folder).
    pub fn accepted(times: impl Into<Times>) -> Self {
        Self::counted(Kind::Accepted, times)
    }

    /// [`Kind::Rejected`]: the number of refusals (replies of 400 and more); one kind of
    /// them with [`reply`](Self::reply).
    pub fn rejected(times: impl Into<Times>) -> Self {
        Self::counted(Kind::Rejected, times)
    }

    /// [`Kind::Replies`]: the number of replies of `kind` sent.
    pub fn replies(kind: ReplyKind, times: impl Into<Times>) -> Self {
        Self::counted(Kind::Replies, times).reply(kind)
    }

    /// [`Kind::RespectsBlocks`]: no attempt while a key is blocked (or at most
    /// [`max`](Self::max) per block).
    pub fn respects_blocks() -> Self {
        Self::of(Kind::RespectsBlocks)
    }

    /// [`Kind::Retries`] after a temporary failure (a drop with
    /// [`after`](Self::after)), within [`min_delay`](Self::min_delay) and
    /// [`max_delay`](Self::max_delay); at least one of the two must be given.
    pub fn retries() -> Self {
        Self::of(Kind::Retries).after(RetryAfter::Temporary)
    }

    /// [`Kind::NoResendToUnknown`]: no `RCPT` to an address after its `Mailbox not
    /// found` (or at most [`max`](Self::max)).
    pub fn no_resend_to_unknown() -> Self {
        Self::of(Kind::NoResendToUnknown)
    }

    /// [`Kind::WithinWarmup`]: no attempt refused by the new-IP warm-up allowance (or at
    /// most [`max`](Self::max)).
    pub fn within_warmup() -> Self {
        Self::of(Kind::WithinWarmup)
    }

    /// [`Kind::Failover`]: while `mx` is down, at least one message (or
    /// [`min`](Self::min)) arrives at another host during each outage.
    pub fn failover(mx: impl Into<String>) -> Self {
        Self::of(Kind::Failover).mx(mx)
    }

    /// [`Kind::Authenticated`]: every accepted message passes DMARC.
    pub fn authenticated() -> Self {
        Self::of(Kind::Authenticated)
    }

    /// Names the expectation in the report.
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The lower bound of the count.
    pub fn min(mut self, n: u64) -> Self {
        self.min = Some(n);
        self
    }

    /// The upper bound of the count (the attempts allowed, for the kinds that allow
    /// none by default).
    pub fn max(mut self, n: u64) -> Self {
        self.max = Some(n);
        self
    }

    /// The reply kind counted (`rejected`, `replies`).
    pub fn reply(mut self, kind: ReplyKind) -> Self {
        self.reply = Some(kind);
        self
    }

    /// The MX host (`accepted`: messages that arrived there; `failover`: the host that
    /// goes down).
    pub fn mx(mut self, mx: impl Into<String>) -> Self {
        self.mx = Some(mx.into());
        self
    }

    /// Only messages delivered to `folder` (`accepted`).
    pub fn folder(mut self, folder: Folder) -> Self {
        self.folder = Some(folder);
        self
    }

    /// What a retry follows (`retries`).
    pub fn after(mut self, after: RetryAfter) -> Self {
        self.after = Some(after);
        self
    }

    /// The earliest acceptable retry, in virtual time (`retries`).
    pub fn min_delay(mut self, delay: Duration) -> Self {
        self.min_delay = Some(delay);
        self
    }

    /// The latest acceptable retry, in virtual time (`retries`).
    pub fn max_delay(mut self, delay: Duration) -> Self {
        self.max_delay = Some(delay);
        self
    }

    /// What is checked.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The name in reports: the one given, or [`describe`](Self::describe)'s.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.describe())
    }

    /// Checks that the parameters fit the kind (a scenario's are checked when it is
    /// read; an expectation built in Rust that does not fit fails when evaluated).
    ///
    /// # Errors
    ///
    /// The first parameter that does not fit.
    pub fn check(&self) -> Result<(), ExpectError> {
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(ExpectError::Bounds { min, max });
        }
        if let (Some(min), Some(max)) = (self.min_delay, self.max_delay)
            && min > max
        {
            return Err(ExpectError::Delays { min, max });
        }
        match self.kind {
            Kind::Retries if self.after.is_none() => Err(ExpectError::NoRetryAfter),
            Kind::Retries if self.min_delay.is_none() && self.max_delay.is_none() => {
                Err(ExpectError::NoDelay)
            }
            Kind::Failover if self.mx.is_none() => Err(ExpectError::NoMx),
            Kind::Replies if self.reply.is_none() => Err(ExpectError::NoReply),
            _ => Ok(()),
        }
    }

    /// A name made from the kind and its parameters (`accepted between 90 and 100`).
    pub fn describe(&self) -> String {
        let range = self.range_text();
        match self.kind {
            Kind::Accepted => {
                let mut text = format!("accepted {range}");
                if let Some(mx) = &self.mx {
                    text.push_str(&format!(" at {mx}"));
                }
                if let Some(folder) = self.folder {
                    text.push_str(&format!(" into {folder:?}").to_lowercase());
                }
                text
            }
            Kind::Rejected => match self.reply {
                Some(kind) => format!("`{kind}` replies {range}"),
                None => format!("refusals {range}"),
            },
            Kind::Replies => match self.reply {
                Some(kind) => format!("`{kind}` replies {range}"),
                None => format!("replies {range}"),
            },
            Kind::RespectsBlocks => format!(
                "respects blocks (at most {} attempts while blocked)",
                self.max.unwrap_or(0)
            ),
            Kind::Retries => {
                let after = match self.after {
                    Some(RetryAfter::Dropped) => "a dropped connection",
                    _ => "a temporary failure",
                };
                let min = self.min_delay.map_or(String::new(), |d| {
                    format!(" no sooner than {}", duration_text::Text(d))
                });
                let max = self.max_delay.map_or(String::new(), |d| {
                    format!(" no later than {}", duration_text::Text(d))
                });
                format!("retries after {after}{min}{max}")
            }
            Kind::NoResendToUnknown => format!(
                "drops unknown mailboxes (at most {} retries)",
                self.max.unwrap_or(0)
            ),
            Kind::WithinWarmup => format!(
                "stays within the warm-up allowance (at most {} refusals)",
                self.max.unwrap_or(0)
            ),
            Kind::Failover => format!(
                "fails over while {} is down",
                self.mx.as_deref().unwrap_or("?")
            ),
            Kind::Authenticated => "every message passes DMARC".to_owned(),
        }
    }

    /// The bounds in words (`exactly 3`; `at least 1` when neither is set).
    pub(super) fn range_text(&self) -> String {
        match (self.min, self.max) {
            (None, None) => "at least 1".to_owned(),
            (None, Some(max)) => format!("at most {max}"),
            (min, max) => Times {
                min: min.unwrap_or(0),
                max,
            }
            .to_string(),
        }
    }

    /// Whether `n` is within `min` and `max` (at least 1 when neither is set).
    pub(super) fn in_range(&self, n: u64) -> bool {
        match (self.min, self.max) {
            (None, None) => n >= 1,
            (min, max) => min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m),
        }
    }
}

/// How many times something may happen: a number or a range.
///
/// ```
/// use qqmx::Times;
/// assert!(Times::from(2).contains(2));
/// assert!(Times::from(1..).contains(50));
/// assert!(!Times::from(..=3).contains(4));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Times {
    min: u64,
    max: Option<u64>,
}

impl Times {
    /// Whether `n` is allowed.
    pub fn contains(&self, n: usize) -> bool {
        let n = u64::try_from(n).unwrap_or(u64::MAX);
        n >= self.min && self.max.is_none_or(|max| n <= max)
    }

    fn from_bounds(range: impl RangeBounds<usize>) -> Self {
        let wide = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
        let min = match range.start_bound() {
            Bound::Included(&n) => wide(n),
            Bound::Excluded(&n) => wide(n).saturating_add(1),
            Bound::Unbounded => 0,
        };
        let max = match range.end_bound() {
            Bound::Included(&n) => Some(wide(n)),
            Bound::Excluded(&n) => Some(wide(n).saturating_sub(1)),
            Bound::Unbounded => None,
        };
        Self { min, max }
    }
}

impl fmt::Display for Times {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.max {
            Some(max) if max == self.min => write!(f, "exactly {max}"),
            Some(max) if self.min == 0 => write!(f, "at most {max}"),
            Some(max) => write!(f, "between {} and {max}", self.min),
            None => write!(f, "at least {}", self.min),
        }
    }
}

impl From<u64> for Times {
    fn from(n: u64) -> Self {
        Self {
            min: n,
            max: Some(n),
        }
    }
}

impl From<usize> for Times {
    fn from(n: usize) -> Self {
        Self::from(u64::try_from(n).unwrap_or(u64::MAX))
    }
}

impl From<i32> for Times {
    /// Integer literals; negative numbers mean zero.
    fn from(n: i32) -> Self {
        Self::from(u64::try_from(n).unwrap_or(0))
    }
}

macro_rules! times_from_range {
    ($($range:ty),*) => {$(
        impl From<$range> for Times {
            fn from(range: $range) -> Self {
                Self::from_bounds(range)
            }
        }
    )*};
}

times_from_range!(
    std::ops::Range<usize>,
    std::ops::RangeInclusive<usize>,
    std::ops::RangeFrom<usize>,
    std::ops::RangeTo<usize>,
    std::ops::RangeToInclusive<usize>
);
