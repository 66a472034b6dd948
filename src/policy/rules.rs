//! The rules, in the order they are tried: protocol, personal lists and backscatter,
//! blacklists and whitelists, quotas and the warm-up, content. They read and change what
//! is remembered only through the owners of `state`.

use std::borrow::Cow;
use std::net::IpAddr;

use super::quota::Subject;
use super::state::{Check, IpListedBy, Listing, QuotaKey, SenderListedBy};
use super::{
    Address, Decision, Facts, Policy, contains_address, content, domain_of, mailbox, quota_of,
};
use crate::config::{Quota, Quotas};
use crate::reply::ReplyKind;
use crate::units::{QuotaName, Stage, Window};

impl Policy {
    pub(super) fn mail_syntax(&self, facts: &Facts<'_>) -> Option<Decision> {
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

    pub(super) fn rcpt_basics(&self, facts: &Facts<'_>) -> Option<Decision> {
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
    pub(super) fn personal_and_backscatter(
        &self,
        stage: Stage,
        facts: &Facts<'_>,
    ) -> Option<Decision> {
        // Neither check answers at this stage: nothing to look up, nothing to lower-case.
        let personal = self.stages.rejected_by_recipients == stage;
        let backscatter = self.content.backscatter && self.stages.bounce_attack == stage;
        if !personal && !backscatter {
            return None;
        }
        let rcpt = facts.rcpt?.to_lowercase();
        let from = facts.from.unwrap_or("").to_lowercase();
        if personal && !from.is_empty() && self.state.blocked_by(&rcpt, &from, domain_of(&from)) {
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
        if backscatter
            && from.is_empty()
            && mailbox::QQ_DOMAINS.contains(&domain_of(&rcpt))
            && !self.state.mailed(&rcpt, facts.ip)
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
        let domain = domain_of(&from);
        let allows = |rcpt: &str| self.state.whitelists(&rcpt.to_lowercase(), &from, domain);
        match facts.rcpt {
            Some(rcpt) => allows(rcpt),
            None => !facts.rcpts.is_empty() && facts.rcpts.iter().all(|r| allows(r)),
        }
    }

    /// Whether some recipient's whitelist may let this client's mail through: before
    /// MAIL, any whitelist at all; from MAIL on, one that names the sender or its domain.
    fn whitelist_may_apply(&self, stage: Stage, facts: &Facts<'_>) -> bool {
        if stage < Stage::Mail {
            return self.state.whitelisted_anywhere(None);
        }
        let Some(from) = facts.from.filter(|f| !f.is_empty()) else {
            return false;
        };
        let from = from.to_lowercase();
        self.state
            .whitelisted_anywhere(Some((&from, domain_of(&from))))
    }

    /// Whether a blacklisting configured for stage `configured` is answered at `stage`.
    ///
    /// Whitelists are per recipient, so when one may apply the listing is answered at
    /// RCPT, one recipient at a time: a listing configured before RCPT waits for it (and
    /// is then always answered there), and one configured after it is answered there too
    /// for the recipients who did not whitelist the sender, so that one transaction can
    /// deliver to those who did.
    /// `may_whitelist` is asked only when the answer depends on it (a lookup in a
    /// shared store is a round trip).
    fn answers(configured: Stage, stage: Stage, may_whitelist: impl Fn() -> bool) -> bool {
        if configured < Stage::Rcpt {
            stage == Stage::Rcpt || (stage == configured && !may_whitelist())
        } else {
            stage == configured || (stage == Stage::Rcpt && may_whitelist())
        }
    }

    /// The blacklisting of the client or the sender answered at `stage`, unless the
    /// recipients whitelisted the sender.
    pub(super) fn blacklisted(
        &mut self,
        stage: Stage,
        facts: &Facts<'_>,
        now: u64,
    ) -> Option<Decision> {
        let may = std::cell::OnceCell::new();
        let may_whitelist = || *may.get_or_init(|| self.whitelist_may_apply(stage, facts));
        if Self::answers(self.blacklist.ip_stage, stage, may_whitelist)
            && let Some(d) = self.ip_blacklisted(stage, facts, now)
        {
            return Some(d);
        }
        if !Self::answers(self.blacklist.sender_stage, stage, may_whitelist) {
            return None;
        }
        let from = facts.from.filter(|f| !f.is_empty())?.to_lowercase();
        let domain = domain_of(&from);
        let listing = self.state.sender_listing(&from, domain, now)?;
        let (rule, key, source) = match listing.by {
            SenderListedBy::Sender(source) => (
                "blacklist.sender",
                format!("sender:{from}"),
                source.to_string(),
            ),
            SenderListedBy::Domain(source) => (
                "blacklist.domain",
                format!("domain:{domain}"),
                source.to_string(),
            ),
            SenderListedBy::Draw => (
                "blacklist.domain.random",
                format!("domain:{domain}"),
                "seed".to_owned(),
            ),
        };
        if self.whitelisted(facts) {
            return None;
        }
        let d = Decision::reject(
            stage,
            self.blacklist.sender_reply,
            rule,
            format!("listed ({source})"),
        )
        .keyed(key);
        Some(match listing.until {
            Some(u) => d.until(u),
            None => d,
        })
    }

    /// The IP's blacklisting, unless the recipients whitelisted the sender. The caller
    /// decides whether it is answered at `stage`.
    fn ip_blacklisted(&self, stage: Stage, facts: &Facts<'_>, now: u64) -> Option<Decision> {
        let ip = facts.ip;
        let (rule, detail, until) = match self.state.ip_listing(ip, now) {
            Some(Listing {
                by: IpListedBy::Net(net, source),
                until,
            }) => (
                "blacklist.ip",
                format!("{ip} is in {net} ({source})"),
                until,
            ),
            Some(Listing {
                by: IpListedBy::Draw,
                until,
            }) => (
                "blacklist.ip.random",
                format!("{ip} drew a random listing"),
                until,
            ),
            None if self.reputation_at(ip, now) == 0 => (
                "blacklist.ip.reputation",
                format!("{ip} has reputation 0 after complaints"),
                self.reputation_restored_at(ip, now),
            ),
            None => return None,
        };
        if self.whitelisted(facts) {
            return None;
        }
        let d = Decision::reject(stage, self.blacklist.ip_reply, rule, detail)
            .keyed(format!("ip:{ip}"));
        Some(match until {
            Some(u) => d.until(u),
            None => d,
        })
    }

    /// `Connection denied` for an IP that keeps coming while blocked.
    pub(super) fn denied(&self, ip: IpAddr, now: u64) -> Option<Decision> {
        let after = self.quotas.deny_after;
        if after == 0 {
            return None;
        }
        [QuotaName::IpMessages, QuotaName::IpConnections]
            .into_iter()
            .filter_map(|name| {
                let key = QuotaKey {
                    name,
                    subject: Subject::Ip(ip),
                };
                self.state.block_of(key, now)
            })
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

    /// The message quotas of a transaction: its IP, sender domain and address, and its
    /// recipients (the one being decided, or all of them when `all`), each once.
    pub(super) fn message_keys<'f>(
        &self,
        facts: &Facts<'f>,
        all: bool,
        at: impl Fn(&Quota) -> bool,
        ip: bool,
    ) -> Vec<QuotaKey<'f>> {
        let key = |name, subject| QuotaKey { name, subject };
        let mut keys = Vec::with_capacity(4);
        if ip {
            keys.push(key(QuotaName::IpMessages, Subject::Ip(facts.ip)));
        }
        if let Some(from) = facts.from.filter(|f| !f.is_empty()) {
            if at(&self.quotas.domain) {
                keys.push(key(QuotaName::Domain, Subject::Text(domain_of(from))));
            }
            if at(&self.quotas.sender) {
                keys.push(key(QuotaName::Sender, Subject::Text(from)));
            }
        }
        if at(&self.quotas.recipient) {
            match facts.rcpt {
                // A recipient named twice in one transaction gets the message once.
                Some(r) if !all => {
                    if !contains_address(facts.rcpts, r) {
                        keys.push(key(QuotaName::Recipient, Subject::Text(r)));
                    }
                }
                _ => {
                    for (i, r) in facts.rcpts.iter().enumerate() {
                        if !contains_address(&facts.rcpts[..i], r) {
                            keys.push(key(QuotaName::Recipient, Subject::Text(r)));
                        }
                    }
                }
            }
        }
        keys
    }

    /// Checks the message quotas answered at `stage` (or all of them when `all`), with
    /// the warm-up allowance of a new IP; with `reserved`, counts those keys when every
    /// check fits, in the same step (a shared store: see `QuotaCounters::reserve`).
    pub(super) fn message_quotas(
        &mut self,
        stage: Stage,
        facts: &Facts<'_>,
        now: u64,
        all: bool,
        reserved: Option<&[QuotaKey<'_>]>,
    ) -> Option<Decision> {
        let (keys, ip) = self.quota_keys(stage, facts, all);
        if keys.is_empty() {
            if let Some(reserved) = reserved {
                self.state.reserve(&[], reserved, now);
            }
            return None;
        }
        let allowance = if ip {
            self.warmup_allowance(facts.ip, now)
        } else {
            None
        };
        let off = self.quota_off();
        let checks = Self::quota_checks(&self.quotas, &keys, allowance, &off);
        let (i, breach) = match reserved {
            Some(reserved) => self.state.reserve(&checks, reserved, now),
            None => self.state.check(&checks, false, now),
        }?;
        let key = keys[i];
        let name = key.name;
        let (rule, detail) = match (breach.extra, breach.already) {
            (true, false) => {
                let day = allowance.map_or(0, |(day, _)| day);
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
        let label = format!("{}:{}", name.key_prefix(), key.subject.label());
        Some(
            Decision::reject(stage, quota_of(&self.quotas, name).reply, rule, detail)
                .keyed(label)
                .breach(&breach),
        )
    }

    /// The keys of the message quotas checked at `stage` (or all of them when `all`), and
    /// whether the IP's is among them (for its own quota or the warm-up).
    pub(super) fn quota_keys<'f>(
        &self,
        stage: Stage,
        facts: &Facts<'f>,
        all: bool,
    ) -> (Vec<QuotaKey<'f>>, bool) {
        let at = |q: &Quota| q.enabled && (all || q.stage == stage);
        let warmup = self.reputation.warmup && (all || self.quotas.ip_messages.stage == stage);
        let ip = at(&self.quotas.ip_messages) || warmup;
        (self.message_keys(facts, all, at, ip), ip)
    }

    /// The quota of a key whose quota is switched off: only the warm-up allowance.
    pub(super) fn quota_off(&self) -> Quota {
        Quota {
            minute: None,
            hour: None,
            day: None,
            ..self.quotas.ip_messages.clone()
        }
    }

    /// The checks of `keys`, with the warm-up `allowance` on the IP's.
    pub(super) fn quota_checks<'q>(
        quotas: &'q Quotas,
        keys: &[QuotaKey<'q>],
        allowance: Option<(u32, u64)>,
        off: &'q Quota,
    ) -> Vec<Check<'q>> {
        keys.iter()
            .map(|key| {
                let quota = quota_of(quotas, key.name);
                let extra = match key.name {
                    QuotaName::IpMessages => allowance.map(|(_, a)| (Window::Day, a)),
                    _ => None,
                };
                Check {
                    key: *key,
                    quota: if quota.enabled { quota } else { off },
                    extra,
                }
            })
            .collect()
    }

    /// (day of age, allowance) for an IP still warming up.
    pub(super) fn warmup_allowance(&self, ip: IpAddr, now: u64) -> Option<(u32, u64)> {
        if !self.reputation.warmup {
            return None;
        }
        let first = self.state.first_seen(ip)?;
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

    /// Spam phrases and bulk detection; a rule that fires counts as a complaint when the
    /// config says so.
    pub(super) fn content_rules(
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
            let would = self.state.recipients_with(print, facts.rcpts, now) as u64;
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

    /// Counts an accepted message, unless its quotas `reserved` its place already.
    pub(super) fn commit(
        &mut self,
        facts: &Facts<'_>,
        reserved: Option<&[QuotaKey<'_>]>,
        print: Option<u64>,
        now: u64,
    ) {
        if reserved.is_none() {
            let keys = self.message_keys(facts, true, |_| true, true);
            self.state.count(&keys, now);
        }
        if let Some(print) = print {
            self.state.add_recipients(print, facts.rcpts, now);
        }
    }

    /// A complaint about `ip`, which with a `sender` ends that sender's whitelistings.
    pub(super) fn complaint(&mut self, ip: IpAddr, sender: Option<&str>, now: u64) {
        self.state.complain(ip, now);
        if let Some(sender) = sender {
            let sender = sender.to_lowercase();
            self.state.end_whitelistings(&sender, domain_of(&sender));
        }
    }

    /// The reputation of `ip` at `now`.
    pub(super) fn reputation_at(&self, ip: IpAddr, now: u64) -> u64 {
        let complaints = self.state.complaints(ip, now).len();
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
        let mut times = self.state.complaints(ip, now);
        times.sort_unstable();
        // Reputation is above zero with at most `kept` complaints counting.
        let kept = usize::try_from((initial - 1) / penalty).unwrap_or(usize::MAX);
        let must_age = times.len().checked_sub(kept)?;
        let last = times.get(must_age.checked_sub(1)?)?;
        Some(last + self.reputation.complaint_window.as_secs())
    }
}
