//! The policy sections of the config: quotas, blacklists, reputation and content rules.
//!
//! Every number here is an assumption: Tencent publishes none. The defaults describe a
//! plausible QQ, strict enough that a new IP sending hundreds of messages in a minute is
//! cut off; [`Config::no_limits`](super::Config::no_limits) switches them all off.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::reply::ReplyKind;
use crate::units::{Stage, Window, duration_text};

/// A limit per calendar window and what crossing it costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Most events allowed in one window.
    pub limit: u64,
    /// How long the key is blocked once it tries to go past the limit.
    pub block: Block,
}

/// How long a block lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// A fixed time from the moment the limit was crossed.
    For(Duration),
    /// Until the next midnight in China Standard Time, as QQ says of its day limits.
    UntilMidnight,
}

impl Serialize for Block {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::For(d) => s.collect_str(&duration_text::Text(*d)),
            Self::UntilMidnight => s.serialize_str("until_midnight"),
        }
    }
}

impl<'de> Deserialize<'de> for Block {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        if text == "until_midnight" {
            return Ok(Self::UntilMidnight);
        }
        duration_text::parse(&text).map(Self::For).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration such as \"30s\", \"5m\", \"1h30m\" \
                 (or \"until_midnight\")"
            ))
        })
    }
}

impl fmt::Display for Block {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::For(d) => write!(f, "{}", duration_text::Text(*d)),
            Self::UntilMidnight => f.write_str("until midnight (UTC+8)"),
        }
    }
}

/// One quota: a key, up to three tiers, and the reply a blocked key gets at a stage.
///
/// In a config file every field is optional and falls back to that quota's default, so
/// `[quotas.ip_messages]` with just `minute = { limit = 5 }` changes one number. A tier
/// is removed with `minute = "off"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Quota {
    /// Whether the quota applies.
    pub enabled: bool,
    /// Where a client over the quota is refused.
    pub stage: Stage,
    /// What it is told.
    pub reply: ReplyKind,
    /// Limit per calendar minute.
    pub minute: Option<Tier>,
    /// Limit per clock hour.
    pub hour: Option<Tier>,
    /// Limit per day, midnight to midnight in China Standard Time.
    pub day: Option<Tier>,
}

fn tier(limit: u64, block: Block) -> Option<Tier> {
    Some(Tier { limit, block })
}

const fn minutes(n: u64) -> Block {
    Block::For(Duration::from_secs(n * 60))
}

const fn hours(n: u64) -> Block {
    Block::For(Duration::from_secs(n * 3600))
}

impl Quota {
    /// Its tier for `window`.
    pub(crate) fn tier(&self, window: Window) -> Option<&Tier> {
        match window {
            Window::Minute => self.minute.as_ref(),
            Window::Hour => self.hour.as_ref(),
            Window::Day => self.day.as_ref(),
        }
    }

    /// Its tier for `window`, to change it.
    pub(crate) fn tier_mut(&mut self, window: Window) -> &mut Option<Tier> {
        match window {
            Window::Minute => &mut self.minute,
            Window::Hour => &mut self.hour,
            Window::Day => &mut self.day,
        }
    }

    fn new(stage: Stage, reply: ReplyKind, limits: [u64; 3], blocks: [Block; 3]) -> Self {
        Self {
            enabled: true,
            stage,
            reply,
            minute: tier(limits[0], blocks[0]),
            hour: tier(limits[1], blocks[1]),
            day: tier(limits[2], blocks[2]),
        }
    }
}

/// The concurrent-connection limit per IP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Concurrency {
    /// Whether the limit applies.
    pub enabled: bool,
    /// Connections from one IP open at once.
    pub limit: u64,
    /// Where the extra connection is refused.
    pub stage: Stage,
    /// What it is told.
    pub reply: ReplyKind,
}

impl Default for Concurrency {
    fn default() -> Self {
        Self {
            enabled: true,
            limit: 10,
            stage: Stage::EndOfData,
            reply: ReplyKind::ConnectionFrequency,
        }
    }
}

/// All quotas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields, try_from = "QuotasText")]
#[non_exhaustive]
pub struct Quotas {
    /// Messages accepted from one IP (one per message, whatever its recipients). Answered
    /// from `helo` on; `connect` is refused.
    pub ip_messages: Quota,
    /// Connections opened by one IP.
    pub ip_connections: Quota,
    /// Connections one IP holds open at once.
    pub ip_concurrent: Concurrency,
    /// Messages accepted from one envelope sender address.
    pub sender: Quota,
    /// Messages accepted from one envelope sender domain.
    pub domain: Quota,
    /// Messages accepted for one recipient (mail received).
    pub recipient: Quota,
    /// Refusals a blocked IP may collect before it is told `Connection denied` at
    /// connect, until its block ends. 0 never denies.
    pub deny_after: u64,
}

impl Default for Quotas {
    fn default() -> Self {
        use ReplyKind::*;
        use Stage::*;
        let blocks = [minutes(10), hours(2), Block::UntilMidnight];
        Self {
            ip_messages: Quota::new(EndOfData, IpFrequency, [60, 600, 3000], blocks),
            ip_connections: Quota::new(EndOfData, ConnectionFrequency, [60, 1000, 10_000], blocks),
            ip_concurrent: Concurrency::default(),
            sender: Quota::new(Mail, SenderFrequency, [60, 1000, 5000], blocks),
            domain: Quota::new(Mail, DomainFrequency, [120, 2000, 10_000], blocks),
            recipient: Quota::new(
                Rcpt,
                MailboxUnavailable,
                [10, 60, 500],
                [minutes(5), hours(1), Block::UntilMidnight],
            ),
            deny_after: 50,
        }
    }
}

/// How the quotas are written in a file: every field optional, merged onto the defaults.
#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct QuotasText {
    ip_messages: Option<QuotaText>,
    ip_connections: Option<QuotaText>,
    ip_concurrent: Option<Concurrency>,
    sender: Option<QuotaText>,
    domain: Option<QuotaText>,
    recipient: Option<QuotaText>,
    deny_after: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct QuotaText {
    enabled: Option<bool>,
    stage: Option<Stage>,
    reply: Option<ReplyKind>,
    minute: Option<TierText>,
    hour: Option<TierText>,
    day: Option<TierText>,
}

/// A tier as written: `"off"`, or a table whose errors (a bad `block`) are reported
/// as they are, not as a mismatch of every form a tier may take.
enum TierText {
    Off,
    Tier(TierTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TierTable {
    limit: Option<u64>,
    block: Option<Block>,
}

impl<'de> Deserialize<'de> for TierText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TierText;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"off\" or a table such as { limit = 60, block = \"10m\" }")
            }

            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<TierText, E> {
                if text == "off" {
                    Ok(TierText::Off)
                } else {
                    Err(E::custom(format!(
                        "`{text}` is not a tier: \"off\", or a table such as \
                         {{ limit = 60, block = \"10m\" }}"
                    )))
                }
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<TierText, A::Error> {
                TierTable::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(TierText::Tier)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl QuotaText {
    fn merge(self, mut quota: Quota) -> Result<Quota, String> {
        quota.enabled = self.enabled.unwrap_or(quota.enabled);
        quota.stage = self.stage.unwrap_or(quota.stage);
        quota.reply = self.reply.unwrap_or(quota.reply);
        for (text, tier, name) in [
            (self.minute, &mut quota.minute, "minute"),
            (self.hour, &mut quota.hour, "hour"),
            (self.day, &mut quota.day, "day"),
        ] {
            *tier = match text {
                None => *tier,
                Some(TierText::Off) => None,
                Some(TierText::Tier(TierTable { limit, block })) => {
                    let limit = limit.or(tier.map(|t| t.limit)).ok_or_else(|| {
                        format!("the {name} tier has no default limit: give `limit`")
                    })?;
                    let block = block
                        .or(tier.map(|t| t.block))
                        .unwrap_or(Block::UntilMidnight);
                    Some(Tier { limit, block })
                }
            };
        }
        Ok(quota)
    }
}

impl TryFrom<QuotasText> for Quotas {
    type Error = String;

    fn try_from(text: QuotasText) -> Result<Self, String> {
        let mut quotas = Quotas::default();
        let merge = |t: Option<QuotaText>, q: Quota| t.map_or(Ok(q.clone()), |t| t.merge(q));
        quotas.ip_messages = merge(text.ip_messages, quotas.ip_messages)?;
        quotas.ip_connections = merge(text.ip_connections, quotas.ip_connections)?;
        quotas.sender = merge(text.sender, quotas.sender)?;
        quotas.domain = merge(text.domain, quotas.domain)?;
        quotas.recipient = merge(text.recipient, quotas.recipient)?;
        if let Some(c) = text.ip_concurrent {
            quotas.ip_concurrent = c;
        }
        if let Some(d) = text.deny_after {
            quotas.deny_after = d;
        }
        Ok(quotas)
    }
}

/// An entry of a static list, with an optional end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ListEntry {
    /// Listed for good.
    Plain(String),
    /// Listed until `until` (RFC 3339).
    Until {
        /// The IP, CIDR range, address or domain.
        value: String,
        /// When the listing ends.
        until: String,
    },
}

impl ListEntry {
    /// The listed value.
    pub(crate) fn value(&self) -> &str {
        match self {
            Self::Plain(v) | Self::Until { value: v, .. } => v,
        }
    }

    /// The end of the listing, if any.
    pub(crate) fn until(&self) -> Option<&str> {
        match self {
            Self::Plain(_) => None,
            Self::Until { until, .. } => Some(until),
        }
    }
}

/// Static and random blacklisting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Blacklist {
    /// IPs and CIDR ranges.
    pub ips: Vec<ListEntry>,
    /// Sender addresses.
    pub senders: Vec<ListEntry>,
    /// Sender domains.
    pub domains: Vec<ListEntry>,
    /// What a blacklisted IP is told: `ip_frequency` (QQ's misleading default),
    /// `suspected_spam_ip` or `connection_denied`.
    pub ip_reply: ReplyKind,
    /// Where a blacklisted IP is refused.
    pub ip_stage: Stage,
    /// What a blacklisted sender address or domain is told.
    pub sender_reply: ReplyKind,
    /// Where a blacklisted sender is refused.
    pub sender_stage: Stage,
    /// Chance that a new IP is blacklisted on first sight (0 to 1), from the seed.
    pub random_ip_probability: f64,
    /// How long a random IP listing lasts.
    #[serde(with = "duration_text")]
    pub random_ip_duration: Duration,
    /// Chance that a new sender domain is blacklisted on first sight.
    pub random_domain_probability: f64,
    /// How long a random domain listing lasts.
    #[serde(with = "duration_text")]
    pub random_domain_duration: Duration,
}

impl Default for Blacklist {
    fn default() -> Self {
        Self {
            ips: Vec::new(),
            senders: Vec::new(),
            domains: Vec::new(),
            ip_reply: ReplyKind::IpFrequency,
            ip_stage: Stage::EndOfData,
            sender_reply: ReplyKind::SuspectedSpamSender,
            sender_stage: Stage::Rcpt,
            random_ip_probability: 0.0,
            random_ip_duration: Duration::from_secs(86_400),
            random_domain_probability: 0.0,
            random_domain_duration: Duration::from_secs(86_400),
        }
    }
}

/// One step of the warm-up schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarmupStep {
    /// The last day (1 = the day the IP was first seen, in UTC+8) of this step.
    pub until_day: u32,
    /// Messages allowed per day during the step.
    pub daily: u64,
}

/// IP reputation, complaints and warm-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Reputation {
    /// Reputation of a new IP; at zero the IP is blacklisted.
    pub initial: u64,
    /// What one complaint costs.
    pub complaint_penalty: u64,
    /// How long a complaint counts.
    #[serde(with = "duration_text")]
    pub complaint_window: Duration,
    /// Whether a content rule that fires counts as a complaint against the IP.
    pub content_complaints: bool,
    /// Whether new IPs are held to the warm-up schedule.
    pub warmup: bool,
    /// Daily allowance of a new IP by age (50, about 150, about 300: the ramp of a
    /// third-party deliverability guide for QQ, not Tencent's own figures).
    pub warmup_schedule: Vec<WarmupStep>,
    /// Added to the allowance for each day past the schedule.
    pub warmup_growth_per_day: u64,
}

impl Default for Reputation {
    fn default() -> Self {
        Self {
            initial: 100,
            complaint_penalty: 10,
            complaint_window: Duration::from_secs(60 * 86_400),
            content_complaints: true,
            warmup: true,
            warmup_schedule: vec![
                WarmupStep {
                    until_day: 3,
                    daily: 50,
                },
                WarmupStep {
                    until_day: 7,
                    daily: 150,
                },
                WarmupStep {
                    until_day: 14,
                    daily: 300,
                },
            ],
            warmup_growth_per_day: 25,
        }
    }
}

/// A phrase that marks a message as spam.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phrase {
    /// Matched case-insensitively in the message.
    pub phrase: String,
    /// `suspected_spam`, `spam_embedded` or `antispam` (`Error: mail rejected by antispam
    /// server`), or any kind.
    #[serde(default = "suspected_spam")]
    pub reply: ReplyKind,
}

fn suspected_spam() -> ReplyKind {
    ReplyKind::SuspectedSpam
}

/// Content rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Content {
    /// The same normalised body to more than this many distinct recipients within
    /// `bulk_window` is `Mail content denied`. 0 switches bulk detection off.
    pub bulk_recipients: u64,
    /// The window of bulk detection.
    #[serde(with = "duration_text")]
    pub bulk_window: Duration,
    /// Spam phrases.
    pub phrases: Vec<Phrase>,
    /// Per recipient, the sender addresses and domains they have blocked.
    pub personal_blacklists: std::collections::BTreeMap<String, Vec<String>>,
    /// Refuse bounces (null sender) to QQ addresses that have not mailed the bouncing
    /// IP. Off by default: qqmx only knows what QQ users sent when told through the API.
    pub backscatter: bool,
}

impl Default for Content {
    fn default() -> Self {
        Self {
            bulk_recipients: 100,
            bulk_window: Duration::from_secs(3600),
            phrases: Vec::new(),
            personal_blacklists: std::collections::BTreeMap::new(),
            backscatter: false,
        }
    }
}

/// How much the policy remembers about senders: how long state for an idle key is kept,
/// and how many keys at most.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct Memory {
    /// Quota counters idle this long are forgotten, once their block and every window
    /// they counted in (up to the day, UTC+8) are over: a short value saves memory but
    /// never resets a quota.
    #[serde(with = "duration_text")]
    pub idle_counters: Duration,
    /// IP history (age, complaints) idle this long is forgotten: the IP is new again.
    #[serde(with = "duration_text")]
    pub idle_ips: Duration,
    /// Keys remembered at most: quota counters, IP histories, randomly listed domains,
    /// message bodies of bulk detection and each recipient remembered for one. Beyond it
    /// the least recently used keys are forgotten, counted as evictions, except keys whose
    /// loss would change a decision now (a block in force, a random listing, complaints
    /// that still count), which may take the count past the cap. A key forgotten while it
    /// counted toward a quota loses its count. The default holds a few tens of MB.
    pub max_tracked_keys: usize,
}

impl Default for Memory {
    fn default() -> Self {
        Self {
            idle_counters: Duration::from_secs(2 * 86_400),
            idle_ips: Duration::from_secs(90 * 86_400),
            max_tracked_keys: 200_000,
        }
    }
}
