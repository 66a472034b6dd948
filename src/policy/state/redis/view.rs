//! What a stage may read, in one round trip at its start, kept for the rest of it.
//!
//! The policy announces a stage with what its rules may ask about (the client IP, the
//! sender, the recipients decided, the body's fingerprint); the first question of the
//! stage sends one pipeline: the writes held back since the last call, then every read
//! the stage's rules may make: the IP's API listings, lifted config listings, record
//! (first sight, random listing), complaints and the blocks of its two quotas; whether
//! any whitelist exists or names the sender; the sender's and its domain's API
//! listings, lifts and random listing; the recipients' personal blacklists or outbound
//! records where those are answered at this stage; the counters a quota check of the
//! stage reads; the body's recipients in its bulk window; and at connect the lease on
//! the connection. The rules then ask the view. A question the view cannot answer (a
//! whitelist of one recipient, asked only for a blacklisted client) is a round trip of
//! its own, as without a view.

use std::net::IpAddr;

use redis::{FromRedisValue, RedisResult, Value};

use super::Redis;
use super::packed::Packed;
use super::plan::{Ahead, Layout, Plan, Reads, Unclaimed};
use super::quotas::{Mode, signature};
use crate::policy::quota::Subject;
use crate::policy::state::{self, BlockOf, Check, QuotaKey};
use crate::units::{QuotaName, Stage, Window};

/// One IP's state, as read at one moment of a stage.
#[derive(Debug, Clone, Default)]
pub(super) struct IpView {
    /// The API's listings of IPs and ranges: (net, end; 0 for good).
    pub api_nets: Vec<(String, u64)>,
    /// The config's listings lifted through the API.
    pub lifted: Vec<String>,
    pub first: Option<u64>,
    /// When its random listing ends (0: none).
    pub drawn: Option<u64>,
    pub complaints: Vec<u64>,
    /// Whether the listings and complaints were read (the record always is).
    listing: bool,
    /// (end, refusals) of the blocks of `ip_messages` and `ip_connections`, when read;
    /// `None` too once a quota script of the stage may have changed them.
    blocks: Option<[(Option<u64>, Option<u64>); 2]>,
}

impl IpView {
    /// The block of `key` at `now`, when the view holds that key.
    pub fn block_of(&self, key: QuotaKey<'_>, now: u64) -> Option<Option<BlockOf>> {
        let slot = match key.name {
            QuotaName::IpMessages => 0,
            QuotaName::IpConnections => 1,
            _ => return None,
        };
        let (until, refused) = self.blocks?[slot];
        Some(until.filter(|u| *u > now).map(|until| BlockOf {
            until,
            refused: refused.unwrap_or(0),
        }))
    }
}

/// A quota counter as read: its block's end, and (window number, count) per window.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counter {
    until: Option<u64>,
    windows: [(Option<u64>, Option<u64>); 3],
}

impl Counter {
    fn count(&self, window: Window, now: u64) -> u64 {
        match self.windows[window as usize] {
            (Some(index), count) if index == window.index(now) => count.unwrap_or(0),
            _ => 0,
        }
    }

    /// Whether one more event fits `check` at `now`, as the quota script decides it.
    pub fn fits(&self, check: &Check<'_>, now: u64) -> bool {
        if self.until.is_some_and(|u| u > now) {
            return false;
        }
        let tiers = Window::ALL.into_iter().all(|window| {
            check
                .quota
                .tier(window)
                .is_none_or(|tier| self.count(window, now) < tier.limit)
        });
        tiers
            && check
                .extra
                .is_none_or(|(window, limit)| self.count(window, now) < limit)
    }
}

/// The sender's and its domain's listings, as read.
#[derive(Debug, Clone, Default)]
pub(super) struct SenderView {
    /// The API's listings of the sender and of its domain: end, 0 for good.
    pub api: (Option<u64>, Option<u64>),
    /// Whether the config's listing of the sender, of its domain, was lifted.
    pub lifted: (bool, bool),
    /// The end of the domain's random listing, when it has a record.
    pub drawn: Option<u64>,
}

/// What a stage read.
#[derive(Debug, Default)]
pub(super) struct View {
    call: u64,
    pub ip: Option<IpAddr>,
    pub ip_view: IpView,
    /// Whether any whitelist exists, when read.
    pub whitelists: Option<bool>,
    /// Whether a whitelist names the sender or its domain, when read.
    pub named: Option<bool>,
    /// The sender and its domain the view was read for, and what was read about them.
    pub sender: Option<(String, String, SenderView)>,
    /// (recipient, whether their personal blacklist holds the sender or its domain).
    pub personal: Vec<(String, bool)>,
    /// (recipient, whether they mailed the client IP).
    pub mailed: Vec<(String, bool)>,
    /// Counters by name and hash of the subject; emptied once a quota script of the
    /// stage may have changed them.
    pub counters: Vec<(QuotaName, u64, Counter)>,
    /// (fingerprint, window, recipients with the message's) of bulk detection.
    pub bulk: Option<(u64, u64, usize)>,
    /// The connection's lease: its id and the leases open with it.
    pub lease: Option<(String, u64)>,
    /// The reply of the quota script sent ahead.
    pub ahead: Option<Unclaimed>,
    /// The message's recipients added to its body's in the stage's round trip, before the
    /// rules accepted it: (fingerprint, window, the recipients that were new). The
    /// message's acceptance claims them; otherwise the new ones are taken out again.
    pub added: Option<(u64, u64, Vec<String>)>,
}

/// The replies of a pipeline, taken in order.
pub(super) struct Replies(std::vec::IntoIter<Value>);

impl Replies {
    fn next<T: FromRedisValue>(&mut self) -> RedisResult<T> {
        let value = self.0.next().unwrap_or(Value::Nil);
        Ok(redis::from_redis_value(value)?)
    }

    /// The next reply, an `HMGET`'s, as numbers: `None` for a field not set (or not
    /// replied), as `Vec<Option<u64>>` reads it, without the vector.
    fn fields<const N: usize>(&mut self) -> RedisResult<[Option<u64>; N]> {
        let mut fields = [None; N];
        match self.0.next().unwrap_or(Value::Nil) {
            Value::Array(items) => {
                for (field, item) in fields.iter_mut().zip(&items) {
                    *field = match item {
                        Value::Nil => None,
                        item => Some(u64::from_redis_value_ref(item)?),
                    };
                }
            }
            Value::Nil => {}
            // Anything else is the error `Vec<Option<u64>>` would give.
            other => {
                redis::from_redis_value::<Vec<Option<u64>>>(other)?;
            }
        }
        Ok(fields)
    }
}

/// Fields of a quota counter read for a check: block end, window numbers and counts.
const COUNTER_FIELDS: [&str; 7] = ["bu", "im", "cm", "ih", "ch", "id", "cd"];

impl Redis {
    /// The stage `ahead` begins: what it may read is read at its first question.
    pub(super) fn plan(&self, ahead: &state::Ahead<'_>) {
        // A view read for this call before it was announced (the warm-up's first sight)
        // gives way to the stage's.
        self.forget_view();
        *self.plan.borrow_mut() = Some(self.plan_of(ahead, self.health.stage()));
    }

    /// What the stage `ahead` announces may be asked, for the call `call`.
    pub(super) fn plan_of(&self, ahead: &state::Ahead<'_>, call: u64) -> Plan {
        let from = ahead.from.filter(|f| !f.is_empty()).map(|f| {
            let f = f.to_lowercase();
            let domain = f.rsplit_once('@').map_or("", |(_, d)| d).to_owned();
            (f, domain)
        });
        let mut rcpts: Vec<String> = Vec::new();
        let decided = match (ahead.stage, ahead.rcpt) {
            (Stage::Rcpt, Some(rcpt)) => std::slice::from_ref(&rcpt).to_vec(),
            (Stage::EndOfData, _) => ahead.rcpts.iter().map(String::as_str).collect(),
            _ => Vec::new(),
        };
        for r in decided {
            let r = r.to_lowercase();
            if !rcpts.contains(&r) {
                rcpts.push(r);
            }
        }
        Plan {
            call,
            stage: ahead.stage,
            ip: ahead.ip,
            from,
            null_sender: ahead.from == Some(""),
            rcpts,
            print: ahead.print,
            now: ahead.now,
            counters: ahead
                .reads
                .iter()
                .map(|k| (k.name, k.subject.id(k.name), self.counter_key(*k)))
                .collect(),
            ahead: self.quota_ahead(ahead),
        }
    }

    /// The quota script the stage's rules will call if they come to it.
    fn quota_ahead(&self, ahead: &state::Ahead<'_>) -> Option<Ahead> {
        // What it counts, among its keys (the set of blocks, the checks', the others'):
        // a reservation counts the others, a count the checks.
        let (mode, others, counted) = match ahead.reserves {
            Some(keys) => (Mode::Reserve, keys, 1 + ahead.counts.len()..),
            None if !ahead.counts.is_empty() => (Mode::CountChecked, &[][..], 1..),
            None => return None,
        };
        let keys = self.quota_keys(ahead.counts, others);
        let mut call = Packed::with_capacity(512);
        self.quota_call(
            &mut call.command("EVALSHA"),
            &keys,
            mode,
            ahead.counts,
            ahead.now,
        );
        Some(Ahead {
            signature: signature(ahead.counts, mode, others, ahead.now),
            call,
            counted: keys[counted].to_vec(),
            now: ahead.now,
            always: matches!(mode, Mode::CountChecked),
        })
    }

    /// The reply of the quota script sent ahead, when `signature` is its call's; the
    /// store reads the stage first if it has not yet. A script sent ahead that is not
    /// that call gives back what it counted.
    pub(super) fn claim(&self, signature: &[u64]) -> Option<Value> {
        self.staged(|_| Some(()));
        let call = self.health.stage();
        let unclaimed = self
            .view
            .borrow_mut()
            .as_mut()
            .filter(|v| v.call == call)
            .and_then(|v| v.ahead.take())?;
        if unclaimed.ahead.signature == signature {
            return Some(unclaimed.reply);
        }
        self.give_back(unclaimed);
        None
    }

    /// A quota script sent ahead whose reply no rule claimed: what it counted is given
    /// back with the next call.
    fn give_back(&self, unclaimed: Unclaimed) {
        let fit = matches!(&unclaimed.reply, Value::Array(found) if found.is_empty());
        if unclaimed.ahead.always || fit {
            let Ahead { counted, now, .. } = unclaimed.ahead;
            let mut keys = vec![self.key(format_args!("blocks"))];
            keys.extend(counted);
            let mut cancel = redis::cmd("EVALSHA");
            self.quota_call(&mut cancel, &keys, Mode::Cancel, &[], now);
            self.hold_once(cancel);
        }
    }

    /// The view of this stage, read now if it was planned and not yet read; `f` of it.
    pub(super) fn staged<T>(&self, f: impl FnOnce(&View) -> Option<T>) -> Option<T> {
        let call = self.health.stage();
        let fresh = self.view.borrow().as_ref().is_some_and(|v| v.call == call);
        if !fresh {
            let plan = self.plan.borrow_mut().take().filter(|p| p.call == call)?;
            let view = self.fetch(plan)?;
            self.forget_view();
            *self.view.borrow_mut() = Some(view);
        }
        self.view.borrow().as_ref().and_then(f)
    }

    /// Reads what `plan` may ask about, with the writes held back, in one round trip.
    fn fetch(&self, mut plan: Plan) -> Option<View> {
        let mut layout = None;
        let replies = self.exchange("stage", |p| layout = Some(self.request(&mut plan, p)))?;
        self.read(&plan, layout?, replies)
    }

    /// What the rules of the stage `plan` is for may read beside the IP's record, as
    /// the config places them: the IP's listings where they are answered, the sender's
    /// likewise, whether whitelists apply there, the blocks that deny a connection, the
    /// recipients' lists where those are answered. (A whitelist that names the sender
    /// makes a later stage answer listings too: that stage then reads them with a round
    /// trip of its own.)
    fn reads(&self, plan: &Plan) -> Reads {
        let stage = plan.stage;
        let at = |configured: Stage| {
            stage == configured || (stage == Stage::Rcpt && configured < Stage::Rcpt)
        };
        let from = plan.from.is_some();
        let listing = at(self.list_stages.0);
        let sender = from && at(self.list_stages.1);
        Reads {
            listing,
            blocks: stage == Stage::Connect,
            whitelists: listing && stage < Stage::Mail,
            named: from && (stage == Stage::Rcpt || (stage >= Stage::Mail && (listing || sender))),
            sender,
            personal: from && self.stages.rejected_by_recipients == stage,
            bounce: plan.null_sender && self.backscatter && self.stages.bounce_attack == stage,
        }
    }

    /// Whether the rules of the stage `plan` is for may ask about anything but the IP's
    /// record (which no rule asks for alone), without making the reads.
    pub(super) fn asks(&self, plan: &Plan) -> bool {
        let r = self.reads(plan);
        r.listing
            || r.blocks
            || r.named
            || r.sender
            || r.personal
            || r.bounce
            || !plan.counters.is_empty()
            || plan.print.is_some()
            || plan.ahead.is_some()
    }

    /// The reads of what `plan` may ask about, and where their replies are (the quota
    /// script sent ahead goes from the plan to the layout).
    pub(super) fn request(&self, plan: &mut Plan, p: &mut Packed) -> Layout {
        let ip = plan.ip;
        let lease_id = (plan.stage == Stage::Connect).then(|| self.lease_id());
        if let Some(id) = &lease_id {
            p.command("EVALSHA")
                .arg(self.scripts.lease.get_hash())
                .arg(1)
                .arg(self.lease_key(ip))
                .arg(id)
                .arg(self.lease_ms.max(1));
        }
        let reads = self.reads(plan);
        self.ip_reads(p, ip, reads.listing, reads.blocks);
        if reads.whitelists {
            p.command("EXISTS").arg(self.key(format_args!("wl-any")));
        }
        if let Some((from, domain)) = plan.from.as_ref().filter(|_| reads.named) {
            p.command("EXISTS")
                .arg(self.key(format_args!("wl:{from}")))
                .arg(self.key(format_args!("wl:{domain}")));
        }
        if let Some((from, domain)) = plan.from.as_ref().filter(|_| reads.sender) {
            self.sender_reads(p, from, domain);
        }
        if let Some((from, domain)) = plan.from.as_ref().filter(|_| reads.personal) {
            for rcpt in &plan.rcpts {
                let key = self.key(format_args!("pb:{rcpt}"));
                for value in [from, domain] {
                    p.command("SISMEMBER").arg(&key).arg(value);
                }
            }
        }
        if reads.bounce {
            for rcpt in &plan.rcpts {
                p.command("SISMEMBER")
                    .arg(self.key(format_args!("out:{rcpt}")))
                    .arg(ip.to_string());
            }
        }
        for (_, _, key) in &plan.counters {
            p.command("HMGET").arg(key).arg(&COUNTER_FIELDS);
        }
        let bulk = plan.print.inspect(|&print| {
            let key = self.bulk_key(print, plan.now);
            p.command("SCARD").arg(&key);
            for rcpt in &plan.rcpts {
                p.command("SISMEMBER").arg(&key).arg(rcpt);
            }
        });
        let ahead = plan.ahead.take();
        if let Some(ahead) = &ahead {
            p.append(&ahead.call);
        }
        // The recipients are added now, so that a replica that takes the body's next
        // message after this one is answered counts them.
        let add = bulk.filter(|_| !plan.rcpts.is_empty()).inspect(|&print| {
            let key = self.bulk_key(print, plan.now);
            p.command("SADD").arg(&key).arg(&plan.rcpts);
            p.command("EXPIRE").arg(&key).arg(self.bulk_window + 60);
        });
        Layout {
            lease_id,
            reads,
            bulk,
            ahead,
            add,
        }
    }

    /// The view `replies` (to [`request`](Self::request)'s reads, as `layout` places
    /// them) make for `plan`; `None` when they cannot be read (the call then failed).
    pub(super) fn read(&self, plan: &Plan, layout: Layout, replies: Vec<Value>) -> Option<View> {
        let ip = plan.ip;
        let read = || -> RedisResult<View> {
            let mut r = Replies(replies.into_iter());
            let lease = match layout.lease_id {
                Some(id) => Some((id, r.next::<u64>()?)),
                None => None,
            };
            let ip_view = Self::ip_replies(&mut r, layout.reads.listing, layout.reads.blocks)?;
            self.remember_first(ip, ip_view.first);
            let whitelists = match layout.reads.whitelists {
                true => Some(r.next::<u64>()? > 0),
                false => None,
            };
            let named = match layout.reads.named {
                true => Some(r.next::<u64>()? > 0),
                false => None,
            };
            let sender = match plan.from.as_ref().filter(|_| layout.reads.sender) {
                Some((from, domain)) => {
                    let read = self.sender_replies(from, domain, &mut r)?;
                    Some((from.clone(), domain.clone(), read))
                }
                None => None,
            };
            let mut view = View {
                call: plan.call,
                ip: Some(ip),
                ip_view,
                whitelists,
                named,
                sender,
                lease,
                ..View::default()
            };
            if layout.reads.personal {
                for rcpt in &plan.rcpts {
                    let (a, b): (bool, bool) = (r.next()?, r.next()?);
                    view.personal.push((rcpt.clone(), a || b));
                }
            }
            if layout.reads.bounce {
                for rcpt in &plan.rcpts {
                    view.mailed.push((rcpt.clone(), r.next()?));
                }
            }
            for (name, id, _) in &plan.counters {
                let [until, minute, in_minute, hour, in_hour, day, in_day] = r.fields()?;
                let counter = Counter {
                    until,
                    windows: [(minute, in_minute), (hour, in_hour), (day, in_day)],
                };
                view.counters.push((*name, *id, counter));
            }
            let window = plan.now / self.bulk_window;
            let mut new = Vec::new();
            if let Some(print) = layout.bulk {
                let mut n: usize = r.next()?;
                for rcpt in &plan.rcpts {
                    if !r.next::<bool>()? {
                        n += 1;
                        new.push(rcpt.clone());
                    }
                }
                view.bulk = Some((print, window, n));
            }
            if let Some(ahead) = layout.ahead {
                let reply = r.0.next().unwrap_or(Value::Nil);
                view.ahead = Some(Unclaimed { ahead, reply });
            }
            if let Some(print) = layout.add {
                view.added = Some((print, window, new));
            }
            Ok(view)
        };
        match read() {
            Ok(view) => Some(view),
            Err(e) => {
                self.failed("stage", &e);
                None
            }
        }
    }

    /// The reads of what is known about `ip`: its record, with its listings and
    /// complaints, with the blocks of its quotas.
    fn ip_reads(&self, p: &mut Packed, ip: IpAddr, listing: bool, blocks: bool) {
        p.command("HMGET")
            .arg(self.ip_key(ip))
            .arg("first")
            .arg("ru");
        if listing {
            p.command("HGETALL").arg(self.key(format_args!("bl:ip")));
            p.command("SMEMBERS")
                .arg(self.key(format_args!("lifted:ip")));
            p.command("LRANGE")
                .arg(self.complaints_key(ip))
                .arg(0)
                .arg(-1);
        }
        if blocks {
            for name in [QuotaName::IpMessages, QuotaName::IpConnections] {
                let key = self.counter_key(QuotaKey {
                    name,
                    subject: Subject::Ip(ip),
                });
                p.command("HMGET").arg(key).arg("bu").arg("br");
            }
        }
    }

    fn ip_replies(r: &mut Replies, listing: bool, blocks: bool) -> RedisResult<IpView> {
        let [first, drawn] = r.fields()?;
        let mut view = IpView {
            first,
            drawn,
            listing,
            ..IpView::default()
        };
        if listing {
            view.api_nets = r.next()?;
            view.lifted = r.next()?;
            view.complaints = r.next()?;
        }
        if blocks {
            let ([m_until, m_refused], [c_until, c_refused]) = (r.fields()?, r.fields()?);
            view.blocks = Some([(m_until, m_refused), (c_until, c_refused)]);
        }
        Ok(view)
    }

    /// The reads of a sender's and its domain's listings: the API's, the config's
    /// lifted (for those the config lists), the domain's random listing (when domains
    /// are drawn).
    fn sender_reads(&self, p: &mut Packed, from: &str, domain: &str) {
        p.command("HMGET")
            .arg(self.key(format_args!("bl:s")))
            .arg(from)
            .arg(domain);
        for (value, listed) in [
            (from, self.lists.senders.as_slice()),
            (domain, self.lists.domains_listed.as_slice()),
        ] {
            if listed.iter().any(|l| l.value == value) {
                p.command("SISMEMBER")
                    .arg(self.key(format_args!("lifted:s")))
                    .arg(value);
            }
        }
        if self.lists.random_domain.0 > 0.0 {
            p.command("HGET").arg(self.domain_key(domain)).arg("ru");
        }
    }

    pub(super) fn sender_replies(
        &self,
        from: &str,
        domain: &str,
        r: &mut Replies,
    ) -> RedisResult<SenderView> {
        let [from_api, domain_api] = r.fields()?;
        let api = (from_api, domain_api);
        let mut lifted = [false; 2];
        for (i, (value, listed)) in [
            (from, self.lists.senders.as_slice()),
            (domain, self.lists.domains_listed.as_slice()),
        ]
        .into_iter()
        .enumerate()
        {
            if listed.iter().any(|l| l.value == value) {
                lifted[i] = r.next()?;
            }
        }
        let drawn = if self.lists.random_domain.0 > 0.0 {
            r.next()?
        } else {
            None
        };
        Ok(SenderView {
            api,
            lifted: (lifted[0], lifted[1]),
            drawn,
        })
    }

    /// What a sender's listings are, read alone (outside a stage's view).
    pub(super) fn read_sender(&self, from: &str, domain: &str) -> SenderView {
        let read = self
            .exchange("sender_listing", |p| self.sender_reads(p, from, domain))
            .map(|replies| self.sender_replies(from, domain, &mut Replies(replies.into_iter())));
        match read {
            Some(Ok(view)) => view,
            Some(Err(e)) => {
                self.failed("sender_listing", &e);
                SenderView::default()
            }
            None => SenderView::default(),
        }
    }

    /// The view of `ip` in this stage: the stage's, or read now.
    pub(super) fn ip_view(&self, ip: IpAddr) -> IpView {
        let staged =
            self.staged(|v| (v.ip == Some(ip) && v.ip_view.listing).then(|| v.ip_view.clone()));
        if let Some(view) = staged {
            return view;
        }
        let read = self
            .exchange("ip_view", |p| self.ip_reads(p, ip, true, true))
            .map(|replies| Self::ip_replies(&mut Replies(replies.into_iter()), true, true));
        match read {
            Some(Ok(view)) => {
                self.remember_first(ip, view.first);
                let call = self.health.stage();
                let mut slot = self.view.borrow_mut();
                match slot.as_mut().filter(|v| v.call == call) {
                    Some(v) if v.ip.is_none() || v.ip == Some(ip) => {
                        v.ip = Some(ip);
                        v.ip_view = view.clone();
                    }
                    Some(_) => {}
                    None => {
                        *slot = Some(View {
                            call,
                            ip: Some(ip),
                            ip_view: view.clone(),
                            ..View::default()
                        });
                    }
                }
                view
            }
            Some(Err(e)) => {
                self.failed("ip_view", &e);
                IpView::default()
            }
            None => IpView::default(),
        }
    }

    /// Remembers when `ip` was first seen, as just read.
    fn remember_first(&self, ip: IpAddr, first: Option<u64>) {
        let mut firsts = self.firsts.borrow_mut();
        match first {
            Some(first) => {
                if firsts.len() >= super::SEEN_KEPT {
                    firsts.clear();
                }
                firsts.insert(ip, first);
            }
            None => {
                firsts.remove(&ip);
            }
        }
    }

    /// When `ip` was first seen: as the stage read it, else as last read (to announce
    /// the warm-up allowance a stage will check before the stage reads), else read now.
    pub(super) fn first_sight(&self, ip: IpAddr) -> Option<u64> {
        if let Some(first) = self.staged(|v| (v.ip == Some(ip)).then_some(v.ip_view.first)) {
            return first;
        }
        if let Some(first) = self.firsts.borrow().get(&ip) {
            return Some(*first);
        }
        self.ip_view(ip).first
    }

    /// A quota script ran: the counters and blocks read may be out of date.
    pub(super) fn forget_counters(&self) {
        if let Some(view) = self.view.borrow_mut().as_mut() {
            view.counters.clear();
            view.ip_view.blocks = None;
        }
    }

    /// Something was written: the view may be out of date. A quota script sent ahead
    /// and not claimed gives back what it counted.
    pub(super) fn forget_view(&self) {
        let Some(view) = self.view.borrow_mut().take() else {
            return;
        };
        if let Some(unclaimed) = view.ahead {
            self.give_back(unclaimed);
        }
        if let Some((print, window, new)) = view.added.filter(|(_, _, new)| !new.is_empty()) {
            let mut cmd = redis::cmd("SREM");
            cmd.arg(self.bulk_key(print, window * self.bulk_window))
                .arg(new);
            self.hold(cmd);
        }
    }

    /// Whether the stage added `rcpts` to the body `print`'s already, and the message's
    /// acceptance now claims them.
    pub(super) fn claim_added(&self, print: u64, now: u64) -> bool {
        let call = self.health.stage();
        let window = now / self.bulk_window;
        let mut slot = self.view.borrow_mut();
        let Some(view) = slot.as_mut().filter(|v| v.call == call) else {
            return false;
        };
        match view.added.take() {
            Some((p, w, _)) if p == print && w == window => true,
            other => {
                view.added = other;
                false
            }
        }
    }
}
