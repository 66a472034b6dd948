//! Expectations about a sender's behaviour, checked against the event log of a run.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::duration_text;
use crate::reply::ReplyKind;
use crate::store::Folder;

/// One expectation of a scenario (`[[expect]]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Expect {
    /// What is checked.
    pub kind: ExpectKind,
    /// A label for reports; by default one is made from the kind and its parameters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Lower bound of a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<u64>,
    /// Upper bound of a count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<u64>,
    /// `rejected`: the reply kind counted (every refusal when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<ReplyKind>,
    /// `accepted`: only messages that arrived at this MX host; `failover`: the host
    /// that goes down.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mx: Option<String>,
    /// `accepted`: only messages delivered to this folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub folder: Option<Folder>,
    /// `retries`: what the sender retries after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<RetryAfter>,
    /// `retries`: the earliest acceptable retry, in virtual time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_text::option"
    )]
    pub min_delay: Option<Duration>,
    /// `retries`: the latest acceptable retry, in virtual time.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "duration_text::option"
    )]
    pub max_delay: Option<Duration>,
}

/// The kinds of expectation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExpectKind {
    /// Messages accepted (optionally at one `mx`, into one `folder`): between `min` and
    /// `max`.
    Accepted,
    /// Replies of kind `reply` (every refusal when unset): between `min` and `max`.
    Rejected,
    /// Attempts made while the sender's IP or sender key is blocked (a quota block or a
    /// blacklisting): at most `max` (default 0) per block.
    RespectsBlocks,
    /// After a temporary failure (`after = "temporary"`: a 4xx reply) or a dropped
    /// connection (`after = "dropped"`), the next attempt at the same recipient comes no
    /// sooner than `min_delay` and no later than `max_delay`.
    Retries,
    /// Recipients tried again after `Mailbox not found`: at most `max` (default 0).
    NoResendToUnknown,
    /// Refusals by the new-IP warm-up allowance: at most `max` (default 0).
    WithinWarmup,
    /// While MX host `mx` is down, mail still arrives at another host: at least `min`
    /// (default 1) messages accepted elsewhere during the outage.
    Failover,
    /// Every accepted message passes DMARC.
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

/// The result of one expectation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Outcome {
    /// The expectation's name.
    pub name: String,
    /// Whether it held.
    pub passed: bool,
    /// What was seen, in words (`"12 accepted, expected 10 to 20"`).
    pub seen: String,
}

impl Expect {
    /// Checks that the parameters fit the kind.
    ///
    /// # Errors
    ///
    /// What is wrong, in words.
    pub fn check(&self) -> Result<(), String> {
        if let (Some(min), Some(max)) = (self.min, self.max)
            && min > max
        {
            return Err(format!("min {min} is above max {max}"));
        }
        match self.kind {
            ExpectKind::Retries if self.after.is_none() => {
                Err("retries: needs `after = \"temporary\"` or `\"dropped\"`".into())
            }
            ExpectKind::Retries if self.min_delay.is_none() && self.max_delay.is_none() => {
                Err("retries: needs `min_delay`, `max_delay` or both".into())
            }
            ExpectKind::Failover if self.mx.is_none() => {
                Err("failover: needs the `mx` that goes down".into())
            }
            _ => Ok(()),
        }
    }
}
