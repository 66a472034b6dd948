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
//! 1. the protocol's own: address syntax, SIZE, recipients per
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

//!
//! # State
//!
//! The rules live here; what they remember lives in owners with one job each (lists,
//! quota counters, IP records, bulk fingerprints: see the `state` module), which the
//! rules call in their fixed order. The owners are interfaces with an in-memory store
//! behind them or, with `[state] backend = "redis"`, a Redis that several replicas share
//! (a stage whose store cannot be reached is answered `451`, `state_unavailable`).

mod auth;
mod checks;
mod content;
mod decision;
mod hash;
mod lists;
mod lru;
pub(crate) mod mailbox;
mod quota;
mod rules;
mod state;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::clock::unix_secs;
use crate::config::{
    Blacklist, Block, Config, ConfigError, Content, Quota, Quotas, Reputation, Tier,
};
use crate::reply::ReplyKind;
use crate::units::{IpNet, QuotaName, Stage, Window};

use auth::{AuthRules, Disposition};
pub use checks::{AuthReport, AuthResult, DkimCheck, DmarcCheck, DmarcPolicy, SpfCheck};
pub use decision::{BlockInfo, Connect, Decision, Facts, Verdict};
use mailbox::Address;

use quota::Subject;
#[cfg(feature = "redis")]
pub(crate) use state::SharedClock;
use state::{Ahead, Check, Health, QuotaKey, Store};
pub(crate) use state::{Fetch, Fetched};

/// QQ's rules about senders, and what it remembers about them.
#[derive(Debug)]
pub struct Policy {
    mailboxes: mailbox::Directory,
    max_message_size: u64,
    max_recipients: usize,
    stages: crate::config::Stages,
    quotas: Quotas,
    blacklist: Blacklist,
    reputation: Reputation,
    content: Content,
    auth: AuthRules,
    /// What the policy remembers about clients.
    state: Box<dyn Store>,
    /// The health of a store that can fail (shared by replicas); `None` in memory.
    health: Option<Arc<Health>>,
}

fn secs(t: SystemTime) -> u64 {
    unix_secs(t)
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

/// The refusal of a stage while the shared state cannot be reached: try again later.
fn unavailable(stage: Stage) -> Decision {
    Decision::reject(
        stage,
        ReplyKind::StateUnavailable,
        "state.unavailable",
        "the shared policy state cannot be reached".to_owned(),
    )
}

/// Whether `list` holds `address`, ignoring case.
pub(crate) fn contains_address(list: &[String], address: &str) -> bool {
    list.iter().any(|a| a.eq_ignore_ascii_case(address))
}

impl Policy {
    /// The rules `config` describes, with nothing remembered yet.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] when the config does not pass [`Config::check`].
    pub fn new(config: &Config) -> Result<Self, ConfigError> {
        config.check()?;
        let (state, health) = state::open(config)?;
        Ok(Self {
            mailboxes: mailbox::Directory::new(&config.mailboxes),
            max_message_size: config.limits.max_message_size,
            max_recipients: config.limits.max_recipients,
            stages: config.stages.clone(),
            quotas: config.quotas.clone(),
            blacklist: config.blacklist.clone(),
            reputation: config.reputation.clone(),
            content: config.content.clone(),
            auth: AuthRules::new(&config.auth, config.seed),
            state,
            health,
        })
    }

    // ---- the stages ------------------------------------------------------------------

    /// A client connects: counts the connection, draws random blacklisting for a new IP,
    /// and decides whether to greet it.
    pub fn connect(&mut self, ip: IpAddr, now: SystemTime) -> Connect {
        self.connect_fetched(ip, now, None)
    }

    /// [`connect`](Self::connect), with the stage's round trip to a shared store made
    /// already (see [`prepare`](Self::prepare)).
    pub(crate) fn connect_fetched(
        &mut self,
        ip: IpAddr,
        now: SystemTime,
        fetched: Option<Fetched>,
    ) -> Connect {
        self.begin();
        // The connection attempt is counted in the stage's one round trip.
        self.announce(Stage::Connect, &Facts::new(ip), secs(now), None, fetched);
        let connect = self.connect_at(ip, secs(now));
        if self.state_failed() {
            return Connect {
                decision: unavailable(Stage::Connect),
                deferred: Vec::new(),
            };
        }
        connect
    }

    fn connect_at(&mut self, ip: IpAddr, now: u64) -> Connect {
        self.state.sweep(now);
        self.state.see(ip, now);
        let mut deferred = Vec::new();

        let open = self.state.connected(ip);
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

        let q = &self.quotas.ip_connections;
        if q.enabled {
            let key = QuotaKey {
                name: QuotaName::IpConnections,
                subject: Subject::Ip(ip),
            };
            let check = Check {
                key,
                quota: q,
                extra: None,
            };
            if let Some((_, breach)) = self.state.check(&[check], true, now) {
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
        self.begin();
        self.state.disconnected(ip);
    }

    /// Decides HELO, MAIL, RCPT or DATA. (The end of data is [`end_of_data`](Self::end_of_data).)
    pub fn check(&mut self, stage: Stage, facts: &Facts<'_>, now: SystemTime) -> Decision {
        self.check_fetched(stage, facts, now, None)
    }

    /// [`check`](Self::check), with the stage's round trip to a shared store made
    /// already (see [`prepare`](Self::prepare)).
    pub(crate) fn check_fetched(
        &mut self,
        stage: Stage,
        facts: &Facts<'_>,
        now: SystemTime,
        fetched: Option<Fetched>,
    ) -> Decision {
        self.begin();
        self.announce(stage, facts, secs(now), None, fetched);
        let decision = self.check_at(stage, facts, secs(now));
        self.or_unavailable(stage, decision)
    }

    fn check_at(&mut self, stage: Stage, facts: &Facts<'_>, now: u64) -> Decision {
        self.state.see(facts.ip, now);
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
        if let Some(d) = self.message_quotas(stage, facts, now, false, None) {
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
        self.end_of_data_fetched(facts, now, None)
    }

    /// [`end_of_data`](Self::end_of_data), with the stage's round trip to a shared store
    /// made already (see [`prepare`](Self::prepare)).
    pub(crate) fn end_of_data_fetched(
        &mut self,
        facts: &Facts<'_>,
        now: SystemTime,
        fetched: Option<Fetched>,
    ) -> Decision {
        self.begin();
        // The fingerprint the stage's round trip was planned with, else made now.
        let print = self.health.is_some().then(|| match &fetched {
            Some(fetched) => fetched.print(),
            None => self.print(facts),
        });
        if let Some(print) = print {
            self.announce(Stage::EndOfData, facts, secs(now), print, fetched);
        }
        let decision = self.end_of_data_at(facts, print, secs(now));
        self.or_unavailable(Stage::EndOfData, decision)
    }

    /// The round trip to a shared store that `stage` needs, planned now to be sent
    /// without the policy's lock and handed back to the stage's call (`check_fetched`,
    /// `end_of_data_fetched`, `connect_fetched`) with the same `facts` and `now`; `None`
    /// in memory, or when the stage's rules ask the store nothing.
    pub(crate) fn prepare(
        &mut self,
        stage: Stage,
        facts: &Facts<'_>,
        now: SystemTime,
    ) -> Option<Fetch> {
        // A call of its own: what an earlier call planned is not read for it.
        self.health.as_ref()?.begin();
        // Every stage sees the client first; the sighting is written ahead of the
        // stage's reads, which then see its record.
        self.state.see(facts.ip, secs(now));
        let print = if stage == Stage::EndOfData {
            self.print(facts)
        } else {
            None
        };
        let fetch = self.with_ahead(stage, facts, secs(now), print, |ahead| {
            self.state.prepare(ahead)
        });
        // A store that failed while the stage was planned (reading an IP's first sight)
        // is asked again by the stage itself, which answers the failure.
        fetch.filter(|_| !self.state_failed())
    }

    /// A shared store hears what `stage` may ask (nothing to do in memory): the
    /// round trip `fetched` brought, or the stage announced, to be read at its first
    /// question.
    fn announce(
        &self,
        stage: Stage,
        facts: &Facts<'_>,
        now: u64,
        print: Option<u64>,
        fetched: Option<Fetched>,
    ) {
        if self.health.is_none() {
            return;
        }
        match fetched {
            Some(fetched) => self.state.install(fetched),
            None => self.with_ahead(stage, facts, now, print, |ahead| self.state.ahead(ahead)),
        }
    }

    /// `f` of what the rules of `stage` may ask a shared store: at connect, the
    /// connection attempt's quota check (counted either way); at the end of data, the
    /// body's recipients and the message's checks, with its place in its quotas
    /// reserved as the rules will ask (the checks of `message_quotas` at the end of data
    /// and the keys it counts); from HELO to DATA, the counters its checks read.
    fn with_ahead<T>(
        &self,
        stage: Stage,
        facts: &Facts<'_>,
        now: u64,
        print: Option<u64>,
        f: impl FnOnce(&Ahead<'_>) -> T,
    ) -> T {
        match stage {
            Stage::Connect => {
                let q = &self.quotas.ip_connections;
                let check = Check {
                    key: QuotaKey {
                        name: QuotaName::IpConnections,
                        subject: Subject::Ip(facts.ip),
                    },
                    quota: q,
                    extra: None,
                };
                let counts = if q.enabled {
                    std::slice::from_ref(&check)
                } else {
                    &[]
                };
                f(&Ahead {
                    counts,
                    ..Self::ahead(stage, facts, now)
                })
            }
            Stage::EndOfData => {
                let (keys, ip) = self.quota_keys(stage, facts, true);
                let allowance = if ip && !keys.is_empty() {
                    self.warmup_allowance(facts.ip, now)
                } else {
                    None
                };
                let off = self.quota_off();
                let checks = Self::quota_checks(&self.quotas, &keys, allowance, &off);
                let reserved = self.message_keys(facts, true, |_| true, true);
                f(&Ahead {
                    print,
                    counts: &checks,
                    reserves: Some(&reserved),
                    ..Self::ahead(stage, facts, now)
                })
            }
            _ => {
                let (keys, _) = self.quota_keys(stage, facts, false);
                f(&Ahead {
                    reads: &keys,
                    ..Self::ahead(stage, facts, now)
                })
            }
        }
    }

    /// The body's fingerprint, when bulk detection is on.
    fn print(&self, facts: &Facts<'_>) -> Option<u64> {
        facts
            .message
            .filter(|_| self.content.bulk_recipients > 0)
            .map(content::fingerprint)
    }

    /// What the rules of `stage` may ask a shared store about, counting nothing.
    fn ahead<'a>(stage: Stage, facts: &Facts<'a>, now: u64) -> Ahead<'a> {
        Ahead {
            stage,
            ip: facts.ip,
            from: facts.from,
            rcpt: facts.rcpt,
            rcpts: facts.rcpts,
            print: None,
            counts: &[],
            reserves: None,
            reads: &[],
            now,
        }
    }

    fn end_of_data_at(
        &mut self,
        facts: &Facts<'_>,
        print: Option<Option<u64>>,
        now: u64,
    ) -> Decision {
        const STAGE: Stage = Stage::EndOfData;
        self.state.see(facts.ip, now);
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
        // A shared store counts the message in the same step (replicas share no lock),
        // and gives it back if a content rule refuses it.
        let reserved = self
            .health
            .is_some()
            .then(|| self.message_keys(facts, true, |_| true, true));
        if let Some(d) = self.message_quotas(STAGE, facts, now, true, reserved.as_deref()) {
            return d;
        }
        let print = print.unwrap_or_else(|| self.print(facts));
        if let Some(d) = self.content_rules(facts, print, now) {
            if let Some(keys) = &reserved {
                self.state.cancel(keys, now);
            }
            return d;
        }
        self.commit(facts, reserved.as_deref(), print, now);
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

    /// Whether the policy's state is in a shared store, whose stages make round trips.
    pub(crate) fn shared(&self) -> bool {
        self.health.is_some()
    }

    /// A call begins: a shared store's earlier failures are over.
    fn begin(&self) {
        if let Some(health) = &self.health {
            health.begin();
        }
    }

    /// Whether the shared store failed during this call.
    fn state_failed(&self) -> bool {
        self.health.as_ref().is_some_and(|h| h.failed())
    }

    /// `decision`, or `451` when the shared store failed while it was made.
    fn or_unavailable(&self, stage: Stage, decision: Decision) -> Decision {
        if self.state_failed() {
            unavailable(stage)
        } else {
            decision
        }
    }

    /// How many calls to a shared store (Redis) failed since the policy was made; 0 in
    /// memory.
    pub fn state_errors(&self) -> u64 {
        self.health.as_ref().map_or(0, |h| h.errors())
    }

    /// Forgets what a shared store (Redis) holds for every replica, so that this policy,
    /// made afresh from a config, starts afresh there too (the clock's offset excepted);
    /// nothing to do in memory.
    pub(crate) fn forget_shared(&mut self) {
        self.begin();
        self.state.clear_all();
    }

    /// Whether the last call of the policy could not reach its shared store (Redis), so
    /// that what it was to change did not change; always false in memory.
    pub fn state_unreachable(&self) -> bool {
        self.state_failed()
    }

    /// How many round trips to a shared store (Redis) the policy made; 0 in memory.
    pub fn state_calls(&self) -> u64 {
        self.health.as_ref().map_or(0, |h| h.calls())
    }

    /// [`state_calls`](Self::state_calls) by what they were made for: each SMTP stage,
    /// `close`, `api`, and `background` (writes held back, sent alone when no call
    /// carried them); empty in memory.
    pub fn state_calls_by_stage(&self) -> Vec<(&'static str, u64)> {
        self.health
            .as_ref()
            .map_or_else(Vec::new, |h| h.calls_by_phase())
    }

    // ---- control and inspection ------------------------------------------------------

    /// Blacklists an IP or CIDR range, until `until` or for good.
    pub fn blacklist_ip(&mut self, net: IpNet, until: Option<SystemTime>) {
        self.begin();
        self.state.list_ip(net, until.map(secs));
    }

    /// Lifts every listing of exactly `net`, its random listing and its complaints.
    pub fn unblacklist_ip(&mut self, net: IpNet) {
        self.begin();
        self.state.unlist_ip(net);
        self.state.forgive(net);
    }

    /// Blacklists a sender address (with `@`) or a sender domain.
    pub fn blacklist_sender(&mut self, sender: &str, until: Option<SystemTime>) {
        self.begin();
        self.state
            .list_sender(&sender.to_lowercase(), until.map(secs));
    }

    /// Lifts the listings of a sender address or domain, random ones included.
    pub fn unblacklist_sender(&mut self, sender: &str) {
        self.begin();
        self.state.unlist_sender(&sender.to_lowercase());
    }

    /// `recipient` whitelists a sender address or domain: its mail to them is accepted
    /// despite blacklists, until a complaint about that sender.
    pub fn whitelist(&mut self, recipient: &str, sender: &str) {
        self.begin();
        self.state
            .whitelist(&recipient.to_lowercase(), &sender.to_lowercase());
    }

    /// A QQ user marks mail from `ip` as spam. With a `sender`, the complaint also ends
    /// every whitelisting of that sender and of its domain.
    pub fn complain(&mut self, ip: IpAddr, sender: Option<&str>, now: SystemTime) {
        self.begin();
        self.complaint(ip, sender, secs(now));
    }

    /// `recipient` adds a sender address or domain to their personal blacklist.
    pub fn block_for_recipient(&mut self, recipient: &str, sender: &str) {
        self.begin();
        self.state
            .block_sender(&recipient.to_lowercase(), &sender.to_lowercase());
    }

    /// Records that QQ user `address` sent mail to `ip`, so bounces from it are expected.
    pub fn record_outbound(&mut self, address: &str, ip: IpAddr) {
        self.begin();
        self.state.record_outbound(&address.to_lowercase(), ip);
    }

    /// Sets (or with `None` removes) the limit of one tier of a quota. The tier keeps
    /// its block time, or gets the default block of that quota's tier when it had none.
    pub fn set_limit(&mut self, quota: QuotaName, window: Window, limit: Option<u64>) {
        self.begin();
        let defaults = Quotas::default();
        let default = quota_of(&defaults, quota).tier(window).map(|t| t.block);
        let tier = self.quota_mut(quota).tier_mut(window);
        *tier = limit.map(|limit| Tier {
            limit,
            block: tier
                .map(|t| t.block)
                .or(default)
                .unwrap_or(Block::UntilMidnight),
        });
    }

    /// The quotas in force: the config's, with the changes made since
    /// ([`set_limit`](Self::set_limit), [`set_enabled`](Self::set_enabled)).
    pub fn quotas(&self) -> &Quotas {
        &self.quotas
    }

    /// Switches a quota on or off.
    pub fn set_enabled(&mut self, quota: QuotaName, enabled: bool) {
        self.begin();
        self.quota_mut(quota).enabled = enabled;
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

    /// Forgets every counter and block (not lists, complaints or IP ages).
    pub fn reset_counters(&mut self) {
        self.begin();
        self.state.clear_counters();
        self.state.clear_prints();
    }

    /// An IP's reputation now (0 means blacklisted).
    pub fn reputation(&self, ip: IpAddr, now: SystemTime) -> u64 {
        self.begin();
        self.reputation_at(ip, secs(now))
    }

    /// The blocks in force at `now`.
    pub fn blocks(&self, now: SystemTime) -> Vec<BlockInfo> {
        self.begin();
        let mut blocks = self.state.blocks(secs(now));
        blocks.sort_by(|a, b| (a.until, &a.key).cmp(&(b.until, &b.key)));
        blocks
    }

    /// How many keys the policy remembers, as `memory.max_tracked_keys` counts them:
    /// quota counters, IP histories, randomly listed domains, message bodies of bulk
    /// detection and the recipients remembered for them.
    pub fn tracked_keys(&self) -> usize {
        self.state.tracked_keys()
    }

    /// How many keys were forgotten to stay under `memory.max_tracked_keys` since the
    /// policy was made (keys forgotten after idling are not counted).
    pub fn evictions(&self) -> u64 {
        self.state.evictions()
    }
}

#[cfg(test)]
mod tests;
