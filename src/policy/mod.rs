//! The policy layer: pure decisions about a sender.
//!
//! Given a [`Stage`] of the SMTP conversation, the [`Facts`] known at that stage and the
//! time, the [`Policy`] returns a [`Decision`]: a [`Verdict`] and the rule that produced
//! it, with the key, counter, limit, window and block end where there are some. No I/O,
//! no sockets, no tokio; time comes in as an argument and randomness from the seed. The
//! `session` layer turns verdicts into replies through the catalogue and records every
//! decision in the event log.
//!
//! The rules, in the order they are tried at each stage:
//!
//! 1. the protocol's own: address syntax ([`mailbox`]), SIZE, recipients per
//!    transaction, domains served, mailboxes that exist;
//! 2. personal blacklists and backscatter (RCPT);
//! 3. blacklists: static (IPs, CIDR ranges, senders, domains, with optional expiry),
//!    random (a seeded draw for each new IP and sender domain) and earned (an IP whose
//!    reputation fell to zero through complaints). A recipient's whitelist beats them:
//!    when one may apply to the sender, the listing is answered at RCPT, recipient by
//!    recipient, so that the whitelisting recipients get the mail and the others are
//!    refused. A complaint about the sender (through the API, or raised by a content
//!    rule) ends its whitelistings;
//! 4. quotas with minute, hour and day tiers per IP, sender, domain and recipient, and the
//!    warm-up allowance of new IPs;
//! 5. content rules at the end of data: spam phrases and bulk detection.
//!
//! # Quota semantics
//!
//! Windows are calendar windows: the minute, the clock hour, the day from midnight to
//! midnight in China Standard Time. `ip_messages`, `sender`, `domain` count **accepted
//! messages** (one per message, whatever its recipients); `recipient` counts accepted
//! messages per recipient; `ip_connections` counts **connection attempts**. A quota is
//! checked at its configured stage: if the key is blocked, or one more event would take
//! any tier past its limit, the client gets the quota's reply and the key is blocked for
//! that tier's block time (the day tier: until midnight UTC+8). A blocked key sees the
//! same reply at every attempt until the block ends. Message quotas are checked once more
//! when a message is accepted, so that no key ever gets more accepted messages in a window
//! than its limit, whatever the stage and however many sessions run at once.
//!
//! # Memory
//!
//! The policy remembers keys: quota counters, IP histories (age, complaints, random
//! listing), randomly listed domains, and the bodies of bulk detection with their
//! recipients (each recipient counts as a key). A key checked but never counted or
//! blocked leaves nothing behind. Idle keys expire (`idle_counters`, `idle_ips`), and at
//! most `max_tracked_keys` are kept: to make room for a new one, the key used longest ago
//! is evicted, whatever its kind, and counted ([`Policy::evictions`]). A key whose loss
//! would change a decision now (a block in force, a random listing, complaints that still
//! count) is never evicted: eviction sets it aside, and it takes its place among the
//! oldest keys again once that is over. Such keys may take the count past the cap. An
//! evicted key loses its counts: its quotas start again from zero, an evicted IP is new
//! again (its warm-up starts over, and a random draw may list it again). Lists,
//! whitelists, personal blacklists and outbound records come from the config or the API,
//! not from clients, and are neither counted nor evicted.

mod auth;
mod content;
mod hash;
mod lists;
mod lru;
pub mod mailbox;
mod quota;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::clock::{parse_rfc3339, unix_secs};
use crate::config::{Blacklist, Config, ConfigError, Content, Memory, Quota, Quotas, Reputation};
use crate::reply::ReplyKind;
use crate::units::{IpNet, QuotaName, Stage, Window};

pub use auth::{AuthReport, AuthResult, DkimCheck, DmarcCheck, DmarcPolicy, SpfCheck};
use auth::{AuthRules, Disposition};
pub use mailbox::{Address, AddressError};

use lists::Listed;
use lru::{Lru, Oldest};
use quota::{Breach, Counter, Subject};

/// What the policy wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "reply")]
#[non_exhaustive]
pub enum Verdict {
    /// Go on.
    Accept,
    /// Refuse with this reply.
    Reject(ReplyKind),
    /// Send this reply and close the connection. The policy returns it only at
    /// [`Stage::Connect`] (a refusal at any other stage is a [`Reject`](Self::Reject)),
    /// which is the only stage where the session closes on it.
    Disconnect(ReplyKind),
    /// Accept the message into the junk folder (DMARC `p=quarantine`).
    Junk,
}

/// A verdict with the rule behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Decision {
    /// Where it was made.
    pub stage: Stage,
    /// What to do.
    pub verdict: Verdict,
    /// The rule that decided (`mailbox.exists`, `quota.ip_messages`, ...).
    pub rule: Cow<'static, str>,
    /// Why, in words.
    pub detail: String,
    /// The key a quota or list matched (`ip:127.0.0.3`, `sender:a@example.org`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The count in the window when the rule fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter: Option<u64>,
    /// The limit of the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// The window whose limit was crossed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// When the block ends.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::clock::rfc3339::option"
    )]
    pub block_until: Option<SystemTime>,
}

impl Decision {
    fn new(
        stage: Stage,
        verdict: Verdict,
        rule: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            stage,
            verdict,
            rule: rule.into(),
            detail: detail.into(),
            key: None,
            counter: None,
            limit: None,
            window: None,
            block_until: None,
        }
    }

    fn accept(stage: Stage, rule: &'static str, detail: impl Into<String>) -> Self {
        Self::new(stage, Verdict::Accept, rule, detail)
    }

    fn reject(
        stage: Stage,
        kind: ReplyKind,
        rule: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        let verdict = if stage == Stage::Connect {
            Verdict::Disconnect(kind)
        } else {
            Verdict::Reject(kind)
        };
        Self::new(stage, verdict, rule, detail)
    }

    fn keyed(mut self, key: String) -> Self {
        self.key = Some(key);
        self
    }

    fn until(mut self, until: u64) -> Self {
        self.block_until = Some(UNIX_EPOCH + Duration::from_secs(until));
        self
    }

    fn breach(mut self, breach: &Breach) -> Self {
        self.counter = Some(breach.count);
        self.limit = Some(breach.limit);
        self.window = Some(breach.window);
        self.until(breach.until)
    }

    /// Whether the verdict lets the client go on.
    pub fn is_accept(&self) -> bool {
        matches!(self.verdict, Verdict::Accept | Verdict::Junk)
    }

    /// The reply a refusal sends.
    pub fn reply(&self) -> Option<ReplyKind> {
        match self.verdict {
            Verdict::Accept | Verdict::Junk => None,
            Verdict::Reject(kind) | Verdict::Disconnect(kind) => Some(kind),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.verdict {
            Verdict::Accept => write!(f, "{}: accept by {}", self.stage, self.rule)?,
            Verdict::Junk => write!(f, "{}: junk by {}", self.stage, self.rule)?,
            Verdict::Reject(kind) => write!(f, "{}: reject ({kind}) by {}", self.stage, self.rule)?,
            Verdict::Disconnect(kind) => {
                write!(f, "{}: disconnect ({kind}) by {}", self.stage, self.rule)?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, " [{key}]")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What is known about the client and the transaction at a stage.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Facts<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// The reverse path once MAIL was accepted (empty for the null sender).
    pub from: Option<&'a str>,
    /// The SIZE= parameter of MAIL, 0 when absent.
    pub declared_size: u64,
    /// Whether MAIL had SMTPUTF8.
    pub smtputf8: bool,
    /// Recipients accepted so far.
    pub rcpts: &'a [String],
    /// At RCPT: the recipient being decided.
    pub rcpt: Option<&'a str>,
    /// At the end of data: the message as received.
    pub message: Option<&'a [u8]>,
    /// From MAIL on: SPF for the envelope sender.
    pub spf: Option<&'a SpfCheck>,
    /// At MAIL, when a PTR record is required: whether the client's address has one that
    /// resolves back to it.
    pub ptr_matches: Option<bool>,
    /// At the end of data: DKIM and DMARC.
    pub auth: Option<&'a AuthReport>,
}

impl<'a> Facts<'a> {
    /// Facts about a client at `ip` before any transaction.
    pub fn new(ip: IpAddr) -> Self {
        Self {
            ip,
            from: None,
            declared_size: 0,
            smtputf8: false,
            rcpts: &[],
            rcpt: None,
            message: None,
            spf: None,
            ptr_matches: None,
            auth: None,
        }
    }

    /// With the reverse path.
    pub fn from(mut self, from: &'a str) -> Self {
        self.from = Some(from);
        self
    }

    /// With the SIZE= and SMTPUTF8 parameters of MAIL.
    pub fn mail_params(mut self, declared_size: u64, smtputf8: bool) -> Self {
        self.declared_size = declared_size;
        self.smtputf8 = smtputf8;
        self
    }

    /// With the recipients accepted so far.
    pub fn rcpts(mut self, rcpts: &'a [String]) -> Self {
        self.rcpts = rcpts;
        self
    }

    /// With the recipient being decided.
    pub fn rcpt(mut self, rcpt: &'a str) -> Self {
        self.rcpt = Some(rcpt);
        self
    }

    /// With the message.
    pub fn message(mut self, message: &'a [u8]) -> Self {
        self.message = Some(message);
        self
    }

    /// With the SPF result of the envelope sender.
    pub fn spf(mut self, spf: &'a SpfCheck) -> Self {
        self.spf = Some(spf);
        self
    }

    /// With whether the client's PTR record resolves back to it.
    pub fn ptr_matches(mut self, matches: bool) -> Self {
        self.ptr_matches = Some(matches);
        self
    }

    /// With the DKIM and DMARC results of the message.
    pub fn auth(mut self, report: &'a AuthReport) -> Self {
        self.auth = Some(report);
        self
    }
}

/// The decisions of a new connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Connect {
    /// Accept, or disconnect with a reply instead of the greeting.
    pub decision: Decision,
    /// Refusals decided now but answered at a later stage (`Connection frequency
    /// limited` at the end of data, as QQ does).
    pub deferred: Vec<Decision>,
}

/// A block in force, for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BlockInfo {
    /// The quota.
    pub quota: QuotaName,
    /// The blocked key.
    pub key: String,
    /// The window whose limit was crossed.
    pub window: Option<Window>,
    /// When it ends.
    #[serde(with = "crate::clock::rfc3339")]
    pub until: SystemTime,
    /// Refusals since it began.
    pub refused: u64,
}

/// What is remembered about a client IP.
#[derive(Debug)]
struct IpHistory {
    ip: IpAddr,
    first_seen: u64,
    last_seen: u64,
    /// When its random listing ends; 0 when it drew none.
    random_until: u64,
    /// Times of the complaints that still count, at most as many as can matter.
    complaints: Vec<u64>,
}

impl Default for IpHistory {
    fn default() -> Self {
        Self {
            ip: IpAddr::from([0, 0, 0, 0]),
            first_seen: 0,
            last_seen: 0,
            random_until: 0,
            complaints: Vec::new(),
        }
    }
}

impl IpHistory {
    /// Until when forgetting it would change a decision: while its random listing lasts
    /// and while a complaint counts.
    fn stays_until(&self, now: u64, complaint_window: u64) -> Option<u64> {
        let complained = self
            .complaints
            .iter()
            .max()
            .map_or(0, |t| t + complaint_window);
        let until = self.random_until.max(complained);
        (until > now).then_some(until)
    }
}

/// A sender domain that drew a random listing.
#[derive(Debug, Default)]
struct DomainHistory {
    last_seen: u64,
    random_until: u64,
}

/// QQ's rules about senders, and what it remembers about them.
#[derive(Debug)]
pub struct Policy {
    seed: u64,
    mailboxes: mailbox::Directory,
    max_message_size: u64,
    stages: crate::config::Stages,
    max_recipients: usize,
    quotas: Quotas,
    blacklist: Blacklist,
    reputation: Reputation,
    content: Content,
    memory: Memory,
    // What the policy remembers about clients, capped by `memory.max_tracked_keys`:
    counters: Lru<Counter>,
    ips: Lru<IpHistory>,
    domains: Lru<DomainHistory>,
    bulk: Lru<content::Bulk>,
    /// Recipients remembered across the bodies in `bulk`.
    bulk_recipients: usize,
    /// Grows with every use of a key, to know which was used longest ago.
    tick: u64,
    /// Keys forgotten to stay under the cap.
    evictions: u64,
    /// When a key set aside by eviction may next be released.
    release_at: u64,
    active: HashMap<IpAddr, u64>,
    ip_lists: Vec<Listed<IpNet>>,
    sender_lists: Vec<Listed<String>>,
    domain_lists: Vec<Listed<String>>,
    whitelist: HashSet<(String, String)>,
    personal: HashMap<String, HashSet<String>>,
    outbound: HashSet<(String, IpAddr)>,
    auth: AuthRules,
    last_sweep: u64,
}

const SWEEP_EVERY: u64 = 600;

fn secs(t: SystemTime) -> u64 {
    unix_secs(t)
}

/// The octets of an IP, as the random draw hashes them.
fn ip_bytes(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(ip) => ip.octets().to_vec(),
        IpAddr::V6(ip) => ip.octets().to_vec(),
    }
}

fn quota_of(quotas: &Quotas, name: QuotaName) -> &Quota {
    match name {
        QuotaName::IpMessages => &quotas.ip_messages,
        QuotaName::IpConnections => &quotas.ip_connections,
        QuotaName::Sender => &quotas.sender,
        QuotaName::Domain => &quotas.domain,
        QuotaName::Recipient => &quotas.recipient,
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

/// Whether `list` holds `address`, ignoring case.
pub(crate) fn contains_address(list: &[String], address: &str) -> bool {
    list.iter().any(|a| a.eq_ignore_ascii_case(address))
}

fn until_secs(until: Option<&str>) -> Option<u64> {
    until.and_then(parse_rfc3339).map(unix_secs)
}

/// Until when a key eviction considered must stay, when it was set aside.
fn kept<V>(oldest: Option<Oldest<V>>) -> Option<u64> {
    match oldest {
        Some(Oldest::Kept(until)) => Some(until),
        Some(Oldest::Evicted(_)) | None => None,
    }
}

impl Policy {
    /// The rules `config` describes, with nothing remembered yet.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the config does not pass [`Config::check`].
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        config.check()?;
        let b = &config.blacklist;
        let ip_lists = b
            .ips
            .iter()
            .filter_map(|e| {
                Some(Listed {
                    value: e.value().parse().ok()?,
                    until: until_secs(e.until()),
                    source: "config",
                })
            })
            .collect();
        let text_list = |entries: &[crate::config::ListEntry]| {
            entries
                .iter()
                .map(|e| Listed {
                    value: e.value().to_lowercase(),
                    until: until_secs(e.until()),
                    source: "config",
                })
                .collect()
        };
        let personal = config
            .content
            .personal_blacklists
            .iter()
            .map(|(rcpt, senders)| {
                let senders = senders.iter().map(|s| s.to_lowercase()).collect();
                (rcpt.to_lowercase(), senders)
            })
            .collect();
        Ok(Self {
            seed: config.seed,
            mailboxes: mailbox::Directory::new(&config.mailboxes),
            max_message_size: config.limits.max_message_size,
            stages: config.stages.clone(),
            max_recipients: config.limits.max_recipients,
            quotas: config.quotas.clone(),
            blacklist: config.blacklist.clone(),
            reputation: config.reputation.clone(),
            content: config.content.clone(),
            memory: config.memory.clone(),
            counters: Lru::default(),
            ips: Lru::default(),
            domains: Lru::default(),
            bulk: Lru::default(),
            bulk_recipients: 0,
            tick: 0,
            evictions: 0,
            release_at: u64::MAX,
            active: HashMap::new(),
            ip_lists,
            sender_lists: text_list(&b.senders),
            domain_lists: text_list(&b.domains),
            whitelist: HashSet::new(),
            personal,
            outbound: HashSet::new(),
            auth: AuthRules::new(&config.auth, config.seed),
            last_sweep: 0,
        })
    }

    // ---- the stages ------------------------------------------------------------------

    /// A client connects: counts the connection, draws random blacklisting for a new IP,
    /// and decides whether to greet it.
    pub fn connect(&mut self, ip: IpAddr, now: SystemTime) -> Connect {
        let now = secs(now);
        self.sweep(now);
        self.see_ip(ip, now);
        let mut deferred = Vec::new();

        let active = self.active.entry(ip).or_insert(0);
        *active += 1;
        let open = *active;
        let c = &self.quotas.ip_concurrent;
        if c.enabled && open > c.limit {
            let d = Decision::reject(
                c.stage,
                c.reply,
                "quota.ip_concurrent",
                format!("{open} connections open, limit {}", c.limit),
            )
            .keyed(format!("ip:{ip}"));
            let d = Decision {
                counter: Some(open),
                limit: Some(c.limit),
                ..d
            };
            deferred.push(d);
        }

        if let Some(d) = self.denied(ip, now) {
            if d.stage != Stage::Connect {
                deferred.push(d);
            } else {
                return Connect {
                    decision: d,
                    deferred,
                };
            }
        }

        let q = self.quotas.ip_connections.clone();
        if q.enabled {
            let key = (QuotaName::IpConnections, Subject::Ip(ip));
            let counter = self.counter(key.0, key.1, now);
            let checked = counter.check(&q, key, now, None);
            counter.add(now, 1);
            if let Err(breach) = checked {
                let what = if breach.already {
                    "blocked"
                } else {
                    "over the limit"
                };
                let d = Decision::reject(
                    q.stage,
                    q.reply,
                    "quota.ip_connections",
                    format!("connections from {ip} {what}"),
                )
                .keyed(format!("ip:{ip}"))
                .breach(&breach);
                deferred.push(d);
            }
        }

        let mut decision = Decision::accept(Stage::Connect, "connect.ok", format!("{ip}"));
        if let Some(pos) = deferred.iter().position(|d| d.stage == Stage::Connect) {
            decision = deferred.remove(pos);
        } else if let Some(d) = self.blacklisted(Stage::Connect, &Facts::new(ip), now) {
            decision = d;
        }
        Connect { decision, deferred }
    }

    /// A client's connection closed.
    pub fn disconnect(&mut self, ip: IpAddr) {
        if let Some(n) = self.active.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.active.remove(&ip);
            }
        }
    }

    /// Decides HELO, MAIL, RCPT or DATA. (The end of data is [`end_of_data`](Self::end_of_data).)
    pub fn check(&mut self, stage: Stage, facts: &Facts<'_>, now: SystemTime) -> Decision {
        let now = secs(now);
        self.see_ip(facts.ip, now);
        let intrinsic = match stage {
            Stage::Mail => self.mail_syntax(facts),
            Stage::Rcpt => self.rcpt_basics(facts),
            _ => None,
        };
        if let Some(d) = intrinsic {
            return d;
        }
        if stage == Stage::Mail
            && let Some(d) = self.auth.at_mail(facts)
        {
            return d;
        }
        if stage == Stage::Rcpt
            && let Some(d) = self.personal_and_backscatter(stage, facts)
        {
            return d;
        }
        if let Some(d) = self.blacklisted(stage, facts, now) {
            return d;
        }
        if let Some(d) = self.quotas_at(stage, facts, now) {
            return d;
        }
        let (rule, detail) = match (stage, facts.rcpt) {
            (Stage::Rcpt, Some(rcpt)) => ("mailbox.exists", format!("<{rcpt}> exists")),
            (Stage::Mail, _) => ("mail.ok", format!("<{}>", facts.from.unwrap_or(""))),
            (Stage::Helo, _) => ("helo.ok", String::new()),
            _ => ("data.ok", format!("{} recipients", facts.rcpts.len())),
        };
        Decision::accept(stage, rule, detail)
    }

    /// Decides a complete message; when it is accepted, counts it against every quota.
    pub fn end_of_data(&mut self, facts: &Facts<'_>, now: SystemTime) -> Decision {
        const STAGE: Stage = Stage::EndOfData;
        let now = secs(now);
        self.see_ip(facts.ip, now);
        if let Some(d) = self.blacklisted(STAGE, facts, now) {
            return d;
        }
        if let Some(d) = facts
            .rcpts
            .iter()
            .find_map(|r| self.personal_and_backscatter(STAGE, &facts.rcpt(r)))
        {
            return d;
        }
        let mailboxes = &self.mailboxes;
        let junk = match self.auth.at_end_of_data(facts, |d| mailboxes.is_hosted(d)) {
            Disposition::Reject(d) => return d,
            Disposition::Junk(detail) => Some(detail),
            Disposition::Inbox => None,
        };
        // Every message quota, wherever else it is answered, is checked again here, so
        // that concurrent sessions cannot take a key past its limit between their checks.
        if let Some(d) = self.message_quotas(STAGE, facts, now, true) {
            return d;
        }
        let print = facts
            .message
            .filter(|_| self.content.bulk_recipients > 0)
            .map(content::fingerprint);
        if let Some(d) = self.content_rules(facts, print, now) {
            return d;
        }
        self.commit(facts, print, now);
        if let Some(detail) = junk {
            return Decision::new(STAGE, Verdict::Junk, "auth.dmarc", detail);
        }
        let size = facts.message.map_or(0, <[u8]>::len);
        Decision::accept(STAGE, "message.ok", format!("{size} bytes"))
    }

    /// Decides a message whose DATA grew past the size limit.
    pub fn oversize(&self, received: u64) -> Decision {
        Decision::reject(
            Stage::EndOfData,
            ReplyKind::MessageTooLarge,
            "limits.max_message_size",
            format!(
                "more than {received} bytes received, limit {}",
                self.max_message_size
            ),
        )
    }

    // ---- rules -----------------------------------------------------------------------

    fn mail_syntax(&self, facts: &Facts<'_>) -> Option<Decision> {
        const STAGE: Stage = Stage::Mail;
        let from = facts.from.unwrap_or("");
        if !from.is_empty()
            && let Err(e) = Address::parse(from, facts.smtputf8)
        {
            let detail = format!("<{from}>: {e}");
            return Some(Decision::reject(
                STAGE,
                ReplyKind::BadAddressSyntax,
                "address.syntax",
                detail,
            ));
        }
        if self.stages.message_too_large == Stage::Mail
            && facts.declared_size > self.max_message_size
        {
            let detail = format!(
                "SIZE={} is over the limit of {}",
                facts.declared_size, self.max_message_size
            );
            return Some(Decision::reject(
                STAGE,
                ReplyKind::MessageTooLarge,
                "limits.max_message_size",
                detail,
            ));
        }
        None
    }

    fn rcpt_basics(&self, facts: &Facts<'_>) -> Option<Decision> {
        const STAGE: Stage = Stage::Rcpt;
        let to = facts.rcpt.unwrap_or("");
        if facts.rcpts.len() >= self.max_recipients {
            let detail = format!(
                "{} recipients already accepted, limit {}",
                facts.rcpts.len(),
                self.max_recipients
            );
            return Some(Decision::reject(
                STAGE,
                ReplyKind::TooManyRecipients,
                "limits.max_recipients",
                detail,
            ));
        }
        let address = match Address::parse(to, facts.smtputf8) {
            Ok(address) => address,
            Err(e) => {
                let detail = format!("<{to}>: {e}");
                return Some(Decision::reject(
                    STAGE,
                    ReplyKind::BadAddressSyntax,
                    "address.syntax",
                    detail,
                ));
            }
        };
        if !self.mailboxes.serves(&address) {
            let detail = format!("{} is not a domain served by QQ", address.domain());
            return Some(Decision::reject(
                STAGE,
                ReplyKind::RelayDenied,
                "mailbox.domain",
                detail,
            ));
        }
        if self.mailboxes.lookup(&address).is_none() {
            // A hosted customer domain is exmail's: its text and help host.
            let kind = if self.mailboxes.is_hosted(address.domain()) {
                ReplyKind::ExmailMailboxNotFound
            } else {
                ReplyKind::MailboxNotFound
            };
            return Some(Decision::reject(
                STAGE,
                kind,
                "mailbox.exists",
                format!("<{address}> {}", self.mailboxes.why_missing()),
            ));
        }
        None
    }

    /// A recipient's personal blacklist and backscatter, each answered at its stage in
    /// `[stages]`: `stage` is the one being decided.
    fn personal_and_backscatter(&self, stage: Stage, facts: &Facts<'_>) -> Option<Decision> {
        let rcpt = facts.rcpt?.to_lowercase();
        let from = facts.from.unwrap_or("").to_lowercase();
        if self.stages.rejected_by_recipients == stage
            && let Some(blocked) = self.personal.get(&rcpt)
            && !from.is_empty()
            && (blocked.contains(&from) || blocked.contains(domain_of(&from)))
        {
            return Some(
                Decision::reject(
                    stage,
                    ReplyKind::RejectedByRecipients,
                    "content.personal_blacklist",
                    format!("<{rcpt}> has blocked <{from}>"),
                )
                .keyed(format!("recipient:{rcpt}")),
            );
        }
        if self.content.backscatter
            && self.stages.bounce_attack == stage
            && from.is_empty()
            && mailbox::QQ_DOMAINS.contains(&domain_of(&rcpt))
            && !self.outbound.contains(&(rcpt.clone(), facts.ip))
        {
            return Some(
                Decision::reject(
                    stage,
                    ReplyKind::BounceAttack,
                    "content.backscatter",
                    format!("a bounce to <{rcpt}>, who never mailed {}", facts.ip),
                )
                .keyed(format!("ip:{}", facts.ip)),
            );
        }
        None
    }

    /// Whether every recipient (or the one being decided) whitelisted the sender.
    fn whitelisted(&self, facts: &Facts<'_>) -> bool {
        let Some(from) = facts.from.filter(|f| !f.is_empty()) else {
            return false;
        };
        let from = from.to_lowercase();
        let domain = domain_of(&from).to_owned();
        let allows = |rcpt: &str| {
            let rcpt = rcpt.to_lowercase();
            self.whitelist.contains(&(rcpt.clone(), from.clone()))
                || self.whitelist.contains(&(rcpt, domain.clone()))
        };
        match facts.rcpt {
            Some(rcpt) => allows(rcpt),
            None => !facts.rcpts.is_empty() && facts.rcpts.iter().all(|r| allows(r)),
        }
    }

    /// Whether some recipient's whitelist may let this client's mail through: before
    /// MAIL, any whitelist at all; from MAIL on, one that names the sender or its domain.
    fn whitelist_may_apply(&self, stage: Stage, facts: &Facts<'_>) -> bool {
        if stage < Stage::Mail {
            return !self.whitelist.is_empty();
        }
        let Some(from) = facts.from.filter(|f| !f.is_empty()) else {
            return false;
        };
        let from = from.to_lowercase();
        let domain = domain_of(&from);
        self.whitelist
            .iter()
            .any(|(_, s)| *s == from || s == domain)
    }

    /// Whether a blacklisting configured for stage `configured` is answered at `stage`.
    ///
    /// Whitelists are per recipient, so when one may apply the listing is answered at
    /// RCPT, one recipient at a time: a listing configured before RCPT waits for it (and
    /// is then always answered there), and one configured after it is answered there too
    /// for the recipients who did not whitelist the sender, so that one transaction can
    /// deliver to those who did.
    fn answers(configured: Stage, stage: Stage, may_whitelist: bool) -> bool {
        if configured < Stage::Rcpt {
            (stage == configured && !may_whitelist) || stage == Stage::Rcpt
        } else {
            stage == configured || (stage == Stage::Rcpt && may_whitelist)
        }
    }

    fn blacklisted(&mut self, stage: Stage, facts: &Facts<'_>, now: u64) -> Option<Decision> {
        let may_whitelist = self.whitelist_may_apply(stage, facts);
        if Self::answers(self.blacklist.ip_stage, stage, may_whitelist)
            && let Some(d) = self.ip_blacklisted(stage, facts, now)
        {
            return Some(d);
        }
        if !Self::answers(self.blacklist.sender_stage, stage, may_whitelist) {
            return None;
        }
        let from = facts.from.filter(|f| !f.is_empty())?.to_lowercase();
        let domain = domain_of(&from).to_owned();
        let reply = self.blacklist.sender_reply;
        let listed = if let Some(l) = self
            .sender_lists
            .iter()
            .find(|l| l.active(now) && l.value == from)
        {
            Some((
                "blacklist.sender",
                format!("sender:{from}"),
                l.until,
                l.source,
            ))
        } else if let Some(l) = self
            .domain_lists
            .iter()
            .find(|l| l.active(now) && l.value == domain)
        {
            Some((
                "blacklist.domain",
                format!("domain:{domain}"),
                l.until,
                l.source,
            ))
        } else {
            self.random_domain(&domain, now).map(|until| {
                (
                    "blacklist.domain.random",
                    format!("domain:{domain}"),
                    Some(until),
                    "seed",
                )
            })
        };
        let (rule, key, until, source) = listed?;
        if self.whitelisted(facts) {
            return None;
        }
        let d = Decision::reject(stage, reply, rule, format!("listed ({source})")).keyed(key);
        Some(match until {
            Some(u) => d.until(u),
            None => d,
        })
    }

    /// The IP's blacklisting, unless the recipients whitelisted the sender. The caller
    /// decides whether it is answered at `stage`.
    fn ip_blacklisted(&self, stage: Stage, facts: &Facts<'_>, now: u64) -> Option<Decision> {
        let ip = facts.ip;
        let reply = self.blacklist.ip_reply;
        let (rule, detail, until) = if let Some(l) = self
            .ip_lists
            .iter()
            .find(|l| l.active(now) && l.value.contains(ip))
        {
            (
                "blacklist.ip",
                format!("{ip} is in {} ({})", l.value, l.source),
                l.until,
            )
        } else if let Some(until) = self
            .ip_history(ip)
            .map(|h| h.random_until)
            .filter(|u| *u > now)
        {
            (
                "blacklist.ip.random",
                format!("{ip} drew a random listing"),
                Some(until),
            )
        } else if self.reputation_at(ip, now) == 0 {
            let until = self.reputation_restored_at(ip, now);
            (
                "blacklist.ip.reputation",
                format!("{ip} has reputation 0 after complaints"),
                until,
            )
        } else {
            return None;
        };
        if self.whitelisted(facts) {
            return None;
        }
        let d = Decision::reject(stage, reply, rule, detail).keyed(format!("ip:{ip}"));
        Some(match until {
            Some(u) => d.until(u),
            None => d,
        })
    }

    /// `Connection denied` for an IP that keeps coming while blocked.
    fn denied(&self, ip: IpAddr, now: u64) -> Option<Decision> {
        let after = self.quotas.deny_after;
        if after == 0 {
            return None;
        }
        [QuotaName::IpMessages, QuotaName::IpConnections]
            .into_iter()
            .filter_map(|q| self.counters.get(Subject::Ip(ip).id(q))?.blocked_at(now))
            .find(|b| b.refused >= after)
            .map(|b| {
                let d = Decision::reject(
                    self.stages.connection_denied,
                    ReplyKind::ConnectionDenied,
                    "quota.deny_after",
                    format!("{} refusals while blocked, limit {after}", b.refused),
                )
                .keyed(format!("ip:{ip}"))
                .until(b.until);
                Decision {
                    counter: Some(b.refused),
                    limit: Some(after),
                    ..d
                }
            })
    }

    /// The quotas answered at `stage`.
    fn quotas_at(&mut self, stage: Stage, facts: &Facts<'_>, now: u64) -> Option<Decision> {
        self.message_quotas(stage, facts, now, false)
    }

    /// Checks the message quotas answered at `stage` (or all of them when `all`).
    fn message_quotas(
        &mut self,
        stage: Stage,
        facts: &Facts<'_>,
        now: u64,
        all: bool,
    ) -> Option<Decision> {
        let at = |q: &Quota| q.enabled && (all || q.stage == stage);
        let warmup = self.reputation.warmup && (all || self.quotas.ip_messages.stage == stage);
        let mut checks: Vec<(QuotaName, Subject<'_>)> = Vec::with_capacity(4);
        if at(&self.quotas.ip_messages) || warmup {
            checks.push((QuotaName::IpMessages, Subject::Ip(facts.ip)));
        }
        if let Some(from) = facts.from.filter(|f| !f.is_empty()) {
            if at(&self.quotas.domain) {
                checks.push((QuotaName::Domain, Subject::Text(domain_of(from))));
            }
            if at(&self.quotas.sender) {
                checks.push((QuotaName::Sender, Subject::Text(from)));
            }
        }
        if at(&self.quotas.recipient) {
            match facts.rcpt {
                // A recipient named twice in one transaction gets the message once.
                Some(r) if !all => {
                    if !contains_address(facts.rcpts, r) {
                        checks.push((QuotaName::Recipient, Subject::Text(r)));
                    }
                }
                _ => {
                    for (i, r) in facts.rcpts.iter().enumerate() {
                        if !contains_address(&facts.rcpts[..i], r) {
                            checks.push((QuotaName::Recipient, Subject::Text(r)));
                        }
                    }
                }
            }
        }
        checks
            .into_iter()
            .find_map(|(name, subject)| self.check_counter(stage, name, subject, now))
    }

    fn counter(&mut self, name: QuotaName, subject: Subject<'_>, now: u64) -> &mut Counter {
        let id = subject.id(name);
        let tick = self.next_tick();
        if !self.counters.contains(id) {
            self.make_room(1, now);
        }
        self.counters.get_or_default(id, tick)
    }

    fn quota(&self, name: QuotaName) -> &Quota {
        quota_of(&self.quotas, name)
    }

    fn quota_mut(&mut self, name: QuotaName) -> &mut Quota {
        match name {
            QuotaName::IpMessages => &mut self.quotas.ip_messages,
            QuotaName::IpConnections => &mut self.quotas.ip_connections,
            QuotaName::Sender => &mut self.quotas.sender,
            QuotaName::Domain => &mut self.quotas.domain,
            QuotaName::Recipient => &mut self.quotas.recipient,
        }
    }

    fn check_counter(
        &mut self,
        stage: Stage,
        name: QuotaName,
        subject: Subject<'_>,
        now: u64,
    ) -> Option<Decision> {
        let warmup = match &subject {
            Subject::Ip(ip) if name == QuotaName::IpMessages => self.warmup_allowance(*ip, now),
            _ => None,
        };
        let mut quota = self.quota(name).clone();
        if !quota.enabled {
            // Only the warm-up allowance applies.
            (quota.minute, quota.hour, quota.day) = (None, None, None);
        }
        let extra = warmup.map(|(_, allowance)| (Window::Day, allowance));
        // Only a lookup: a key that is merely checked leaves nothing behind, so a flood
        // of refused senders or recipients cannot grow memory. A counter is created when
        // an event is counted (`commit`) or, here, when a block must be remembered.
        let id = subject.id(name);
        let tick = self.next_tick();
        let breach = match self.counters.get_mut(id, tick) {
            Some(counter) => counter.check(&quota, (name, subject), now, extra).err()?,
            None => {
                let mut fresh = Counter::default();
                let breach = fresh.check(&quota, (name, subject), now, extra).err()?;
                self.make_room(1, now);
                self.counters.insert(id, fresh, tick);
                breach
            }
        };
        let (rule, detail) = match (breach.extra, breach.already) {
            (true, false) => {
                let day = warmup.map_or(0, |(day, _)| day);
                (
                    Cow::Borrowed("reputation.warmup"),
                    format!(
                        "day {day} of a new IP: {} messages allowed today",
                        breach.limit
                    ),
                )
            }
            (true, true) => (
                Cow::Borrowed("reputation.warmup"),
                "blocked by the warm-up allowance".to_owned(),
            ),
            (false, true) => (
                Cow::Owned(format!("quota.{name}")),
                format!("blocked by the {} limit", breach.window),
            ),
            (false, false) => (
                Cow::Owned(format!("quota.{name}")),
                format!(
                    "{} of {} in this {}; one more is over",
                    breach.count, breach.limit, breach.window
                ),
            ),
        };
        let key = format!("{}:{}", name.key_prefix(), subject.label());
        Some(
            Decision::reject(stage, quota.reply, rule, detail)
                .keyed(key)
                .breach(&breach),
        )
    }

    /// (day of age, allowance) for an IP still warming up.
    fn warmup_allowance(&self, ip: IpAddr, now: u64) -> Option<(u32, u64)> {
        if !self.reputation.warmup {
            return None;
        }
        let first = self.ip_history(ip)?.first_seen;
        let day = Window::Day
            .index(now)
            .saturating_sub(Window::Day.index(first))
            + 1;
        let day = u32::try_from(day).unwrap_or(u32::MAX);
        let schedule = &self.reputation.warmup_schedule;
        let allowance = match schedule.iter().find(|s| day <= s.until_day) {
            Some(step) => step.daily,
            None => {
                let last = schedule.last()?;
                last.daily + u64::from(day - last.until_day) * self.reputation.warmup_growth_per_day
            }
        };
        Some((day, allowance))
    }

    fn content_rules(
        &mut self,
        facts: &Facts<'_>,
        print: Option<u64>,
        now: u64,
    ) -> Option<Decision> {
        const STAGE: Stage = Stage::EndOfData;
        let message = facts.message?;
        let mut found = self
            .content
            .phrases
            .iter()
            .find(|p| content::contains_phrase(message, &p.phrase))
            .map(|p| {
                Decision::reject(
                    STAGE,
                    p.reply,
                    "content.phrase",
                    format!("contains {:?}", p.phrase),
                )
                .keyed(format!("ip:{}", facts.ip))
            });
        let limit = self.content.bulk_recipients;
        if found.is_none()
            && let Some(print) = print
        {
            // Only a lookup: the body is remembered when a message is accepted.
            let window = self.bulk_window(now);
            let tick = self.next_tick();
            let would = match self.bulk.get_mut(print, tick) {
                Some(bulk) => {
                    self.bulk_recipients -= bulk.enter(window, now);
                    bulk.with(facts.rcpts)
                }
                None => content::Bulk::default().with(facts.rcpts),
            } as u64;
            if would > limit {
                let d = Decision::reject(
                    STAGE,
                    ReplyKind::ContentDenied,
                    "content.bulk",
                    format!("the same body to {would} recipients, limit {limit}"),
                )
                .keyed(format!("content:{print:016x}"));
                found = Some(Decision {
                    counter: Some(would),
                    limit: Some(limit),
                    ..d
                });
            }
        }
        let found = found?;
        if self.reputation.content_complaints {
            // As a complaint through the API: it also ends the sender's whitelistings.
            self.complaint(facts.ip, facts.from.filter(|f| !f.is_empty()), now);
        }
        Some(found)
    }

    /// The number of the bulk-detection window holding `now`.
    fn bulk_window(&self, now: u64) -> u64 {
        now / self.content.bulk_window.as_secs().max(1)
    }

    /// Counts an accepted message.
    fn commit(&mut self, facts: &Facts<'_>, print: Option<u64>, now: u64) {
        self.counter(QuotaName::IpMessages, Subject::Ip(facts.ip), now)
            .add(now, 1);
        if let Some(from) = facts.from.filter(|f| !f.is_empty()) {
            self.counter(QuotaName::Domain, Subject::Text(domain_of(from)), now)
                .add(now, 1);
            self.counter(QuotaName::Sender, Subject::Text(from), now)
                .add(now, 1);
        }
        for (i, r) in facts.rcpts.iter().enumerate() {
            if !contains_address(&facts.rcpts[..i], r) {
                self.counter(QuotaName::Recipient, Subject::Text(r), now)
                    .add(now, 1);
            }
        }
        if let Some(print) = print {
            let window = self.bulk_window(now);
            let tick = self.next_tick();
            // Each recipient remembered for a body counts as a key.
            let incoming = match self.bulk.get_mut(print, tick) {
                Some(bulk) => {
                    self.bulk_recipients -= bulk.enter(window, now);
                    bulk.with(facts.rcpts) - bulk.recipients.len()
                }
                None => 1 + content::Bulk::default().with(facts.rcpts),
            };
            self.make_room(incoming, now);
            let bulk = self.bulk.get_or_default(print, tick);
            self.bulk_recipients -= bulk.enter(window, now);
            self.bulk_recipients += bulk.add(facts.rcpts);
        }
    }

    // ---- memory ----------------------------------------------------------------------

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    fn ip_history(&self, ip: IpAddr) -> Option<&IpHistory> {
        self.ips
            .get(Subject::Ip(ip).record_id())
            .filter(|h| h.ip == ip)
    }

    fn see_ip(&mut self, ip: IpAddr, now: u64) {
        let id = Subject::Ip(ip).record_id();
        let tick = self.next_tick();
        if let Some(history) = self.ips.get_mut(id, tick).filter(|h| h.ip == ip) {
            history.last_seen = now;
            return;
        }
        // A new IP (or an IPv6 address whose id another one had: it takes the place).
        let (seed, p, duration) = (
            self.seed,
            self.blacklist.random_ip_probability,
            self.blacklist.random_ip_duration.as_secs(),
        );
        let listed = lists::draw(seed, "ip", &ip_bytes(ip), p);
        if !self.ips.contains(id) {
            self.make_room(1, now);
        }
        let history = IpHistory {
            ip,
            first_seen: now,
            last_seen: now,
            random_until: if listed { now + duration } else { 0 },
            complaints: Vec::new(),
        };
        self.ips.insert(id, history, tick);
    }

    fn random_domain(&mut self, domain: &str, now: u64) -> Option<u64> {
        let (seed, p, duration) = (
            self.seed,
            self.blacklist.random_domain_probability,
            self.blacklist.random_domain_duration.as_secs(),
        );
        if p <= 0.0 {
            return None;
        }
        let id = Subject::Text(domain).record_id();
        let tick = self.next_tick();
        if let Some(history) = self.domains.get_mut(id, tick) {
            history.last_seen = now;
            return Some(history.random_until).filter(|u| *u > now);
        }
        // The draw is a pure function of the seed and the domain: only a domain it lists
        // needs remembering (for when its listing ends).
        if !lists::draw(seed, "domain", domain.as_bytes(), p) {
            return None;
        }
        let until = now + duration;
        self.make_room(1, now);
        let history = DomainHistory {
            last_seen: now,
            random_until: until,
        };
        self.domains.insert(id, history, tick);
        Some(until)
    }

    /// Forgets keys, least recently used first, until `incoming` more fit under the cap.
    fn make_room(&mut self, incoming: usize, now: u64) {
        while self.tracked_keys() + incoming > self.memory.max_tracked_keys {
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
        let complaint_window = self.reputation.complaint_window.as_secs();
        let counter_stays = |c: &Counter| c.blocked_at(now).map(|b| b.until);
        let ip_stays = |h: &IpHistory| h.stays_until(now, complaint_window);
        let domain_stays = |h: &DomainHistory| Some(h.random_until).filter(|u| *u > now);
        if now >= self.release_at {
            self.release_at = [
                self.counters.release(counter_stays),
                self.ips.release(ip_stays),
                self.domains.release(domain_stays),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(u64::MAX);
        }
        loop {
            let oldest = [
                self.counters.oldest(),
                self.ips.oldest(),
                self.domains.oldest(),
                self.bulk.oldest(),
            ];
            let Some(which) = (0..oldest.len())
                .filter(|i| oldest[*i].is_some())
                .min_by_key(|i| oldest[*i])
            else {
                return false;
            };
            let kept = match which {
                0 => kept(self.counters.evict_oldest(counter_stays)),
                1 => kept(self.ips.evict_oldest(ip_stays)),
                2 => kept(self.domains.evict_oldest(domain_stays)),
                _ => {
                    if let Some(Oldest::Evicted(bulk)) = self.bulk.evict_oldest(|_| None) {
                        self.bulk_recipients -= bulk.recipients.len();
                    }
                    None
                }
            };
            match kept {
                Some(until) => self.release_at = self.release_at.min(until),
                None => {
                    self.evictions += 1;
                    return true;
                }
            }
        }
    }

    /// Forgets idle state; runs at most every ten virtual minutes.
    fn sweep(&mut self, now: u64) {
        if now < self.last_sweep + SWEEP_EVERY {
            return;
        }
        self.last_sweep = now;
        let idle = self.memory.idle_counters.as_secs();
        // A counter goes only once its windows and its block are over, whatever
        // `idle_counters` says: forgetting it earlier would reset a quota.
        self.counters
            .retain(|c| c.matters(now) || now < c.last_seen + idle);
        let idle_ips = self.memory.idle_ips.as_secs();
        let window = self.reputation.complaint_window.as_secs();
        let active = &self.active;
        self.ips.retain(|h| {
            h.complaints.retain(|t| *t + window > now);
            active.contains_key(&h.ip) || now < h.last_seen + idle_ips
        });
        self.domains.retain(|h| now < h.last_seen + idle);
        let bulk = self.content.bulk_window.as_secs().max(1);
        self.bulk.retain(|b| now < b.last_seen + bulk);
        self.bulk_recipients = self.bulk.values().map(|b| b.recipients.len()).sum();
        self.ip_lists.retain(|l| l.active(now));
        self.sender_lists.retain(|l| l.active(now));
        self.domain_lists.retain(|l| l.active(now));
    }

    /// How many complaints about an IP can matter: enough to take its reputation to 0.
    /// Older ones change nothing, neither the reputation nor when it rises again, so
    /// they are not kept.
    fn complaints_kept(&self) -> usize {
        let (initial, penalty) = (self.reputation.initial, self.reputation.complaint_penalty);
        if initial == 0 || penalty == 0 {
            return 0;
        }
        usize::try_from((initial - 1) / penalty + 1).unwrap_or(usize::MAX)
    }

    fn add_complaint(&mut self, ip: IpAddr, now: u64) {
        self.see_ip(ip, now);
        let (kept, window) = (
            self.complaints_kept(),
            self.reputation.complaint_window.as_secs(),
        );
        let tick = self.next_tick();
        if let Some(h) = self.ips.get_mut(Subject::Ip(ip).record_id(), tick) {
            h.complaints.retain(|t| *t + window > now);
            h.complaints.push(now);
            while h.complaints.len() > kept {
                let oldest = (0..h.complaints.len()).min_by_key(|i| h.complaints[*i]);
                if let Some(i) = oldest {
                    h.complaints.remove(i);
                }
            }
        }
    }

    fn reputation_at(&self, ip: IpAddr, now: u64) -> u64 {
        let window = self.reputation.complaint_window.as_secs();
        let complaints = self.ip_history(ip).map_or(0, |h| {
            h.complaints.iter().filter(|t| **t + window > now).count()
        });
        self.reputation.initial.saturating_sub(
            self.reputation
                .complaint_penalty
                .saturating_mul(complaints as u64),
        )
    }

    /// When the reputation of `ip`, zero at `now`, is above zero again if no complaint
    /// comes in the meantime: when enough of its complaints have aged out. `None` when
    /// it never will (a zero initial reputation, or complaints that cost nothing).
    fn reputation_restored_at(&self, ip: IpAddr, now: u64) -> Option<u64> {
        let (initial, penalty) = (self.reputation.initial, self.reputation.complaint_penalty);
        if initial == 0 || penalty == 0 {
            return None;
        }
        let window = self.reputation.complaint_window.as_secs();
        let mut times: Vec<u64> = self
            .ip_history(ip)?
            .complaints
            .iter()
            .copied()
            .filter(|t| *t + window > now)
            .collect();
        times.sort_unstable();
        // Reputation is above zero with at most `kept` complaints counting.
        let kept = usize::try_from((initial - 1) / penalty).unwrap_or(usize::MAX);
        let must_age = times.len().checked_sub(kept)?;
        let last = times.get(must_age.checked_sub(1)?)?;
        Some(last + window)
    }

    // ---- control and inspection ------------------------------------------------------

    /// Blacklists an IP or CIDR range, until `until` or for good.
    pub fn blacklist_ip(&mut self, net: IpNet, until: Option<SystemTime>) {
        self.ip_lists.push(Listed {
            value: net,
            until: until.map(secs),
            source: "api",
        });
    }

    /// Lifts every listing of exactly `net`, its random listing and its complaints.
    pub fn unblacklist_ip(&mut self, net: IpNet) {
        self.ip_lists.retain(|l| l.value != net);
        for h in self.ips.values_mut() {
            if net.contains(h.ip) {
                h.random_until = 0;
                h.complaints.clear();
            }
        }
    }

    /// Blacklists a sender address (with `@`) or a sender domain.
    pub fn blacklist_sender(&mut self, sender: &str, until: Option<SystemTime>) {
        let entry = Listed {
            value: sender.to_lowercase(),
            until: until.map(secs),
            source: "api",
        };
        if sender.contains('@') {
            self.sender_lists.push(entry);
        } else {
            self.domain_lists.push(entry);
        }
    }

    /// Lifts the listings of a sender address or domain, random ones included.
    pub fn unblacklist_sender(&mut self, sender: &str) {
        let sender = sender.to_lowercase();
        self.sender_lists.retain(|l| l.value != sender);
        self.domain_lists.retain(|l| l.value != sender);
        let tick = self.next_tick();
        if let Some(h) = self
            .domains
            .get_mut(Subject::Text(&sender).record_id(), tick)
        {
            h.random_until = 0;
        }
    }

    /// `recipient` whitelists a sender address or domain: its mail to them is accepted
    /// despite blacklists, until a complaint about that sender.
    pub fn whitelist(&mut self, recipient: &str, sender: &str) {
        self.whitelist
            .insert((recipient.to_lowercase(), sender.to_lowercase()));
    }

    /// A QQ user marks mail from `ip` as spam. With a `sender`, the complaint also ends
    /// every whitelisting of that sender and of its domain.
    pub fn complain(&mut self, ip: IpAddr, sender: Option<&str>, now: SystemTime) {
        self.complaint(ip, sender, secs(now));
    }

    fn complaint(&mut self, ip: IpAddr, sender: Option<&str>, now: u64) {
        self.add_complaint(ip, now);
        if let Some(sender) = sender {
            let sender = sender.to_lowercase();
            let domain = domain_of(&sender).to_owned();
            self.whitelist.retain(|(_, s)| *s != sender && *s != domain);
        }
    }

    /// `recipient` adds a sender address or domain to their personal blacklist.
    pub fn block_for_recipient(&mut self, recipient: &str, sender: &str) {
        self.personal
            .entry(recipient.to_lowercase())
            .or_default()
            .insert(sender.to_lowercase());
    }

    /// Records that QQ user `address` sent mail to `ip`, so bounces from it are expected.
    pub fn record_outbound(&mut self, address: &str, ip: IpAddr) {
        self.outbound.insert((address.to_lowercase(), ip));
    }

    /// Sets (or with `None` removes) the limit of one tier of a quota. The tier keeps
    /// its block time, or gets the default block of that quota's tier when it had none.
    pub fn set_limit(&mut self, quota: QuotaName, window: Window, limit: Option<u64>) {
        let defaults = Quotas::default();
        let default = quota_of(&defaults, quota).tier(window).map(|t| t.block);
        let tier = self.quota_mut(quota).tier_mut(window);
        *tier = limit.map(|limit| crate::config::Tier {
            limit,
            block: tier
                .map(|t| t.block)
                .or(default)
                .unwrap_or(crate::config::Block::UntilMidnight),
        });
    }

    /// Switches a quota on or off.
    pub fn set_enabled(&mut self, quota: QuotaName, enabled: bool) {
        self.quota_mut(quota).enabled = enabled;
    }

    /// Forgets every counter and block (not lists, complaints or IP ages).
    pub fn reset_counters(&mut self) {
        self.counters.clear();
        self.bulk.clear();
        self.bulk_recipients = 0;
    }

    /// An IP's reputation now (0 means blacklisted).
    pub fn reputation(&self, ip: IpAddr, now: SystemTime) -> u64 {
        self.reputation_at(ip, secs(now))
    }

    /// The blocks in force at `now`.
    pub fn blocks(&self, now: SystemTime) -> Vec<BlockInfo> {
        let now = secs(now);
        let mut blocks: Vec<BlockInfo> = self
            .counters
            .values()
            .filter_map(|c| c.blocked_at(now))
            .map(|b| BlockInfo {
                quota: b.quota,
                key: b.label.to_string(),
                window: Some(b.window),
                until: UNIX_EPOCH + Duration::from_secs(b.until),
                refused: b.refused,
            })
            .collect();
        blocks.sort_by(|a, b| (a.until, &a.key).cmp(&(b.until, &b.key)));
        blocks
    }

    /// How many keys the policy remembers, as `memory.max_tracked_keys` counts them:
    /// quota counters, IP histories, randomly listed domains, message bodies of bulk
    /// detection and the recipients remembered for them.
    pub fn tracked_keys(&self) -> usize {
        self.counters.len()
            + self.ips.len()
            + self.domains.len()
            + self.bulk.len()
            + self.bulk_recipients
    }

    /// How many keys were forgotten to stay under `memory.max_tracked_keys` since the
    /// policy was made (keys forgotten after idling are not counted).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }
}

#[cfg(test)]
mod tests;
