//! The compact form of an event in the log, and the way back to an [`Event`].
//!
//! A record is a few bytes: the time as a zigzag varint of nanoseconds from its chunk's
//! first record, the session and transaction as varints, the client as an id into a
//! table of addresses, a one-byte tag for the kind, then the kind's fields: enums as one
//! byte, numbers as varints, texts with a length prefix or, for short texts seen before
//! (a command line, a reply, a decision's detail), an id into a table of texts. Nothing
//! is formatted until someone reads the event, and recording one from borrowed data
//! allocates nothing once its texts are in the table.
//!
//! The sequence number is not stored: the log holds consecutive ones, so a record's is
//! its position. [`Reader`](super::decode::Reader) reads a record back.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::tally::{Counted, FastMap};
use crate::chaos::FaultKind;
use crate::event::{CloseReason, Command, EventKind, Param, Verb};
use crate::policy::{AuthReport, AuthResult, Decision, DmarcPolicy, SpfCheck, Verdict};
use crate::reply::ReplyKind;

/// A command as its event records it, borrowed from the line it was read from.
pub(crate) struct CommandRef<'a> {
    /// The command word.
    pub(crate) verb: Verb,
    /// The line, as [`Command::line`] holds it.
    pub(crate) line: Cow<'a, str>,
    /// As [`Command::address`].
    pub(crate) address: Option<Cow<'a, str>>,
    /// As [`Command::host`].
    pub(crate) host: Option<&'a str>,
    /// As [`Command::params`].
    pub(crate) params: ParamsRef<'a>,
}

impl<'a> CommandRef<'a> {
    fn of(command: &'a Command) -> Self {
        Self {
            verb: command.verb,
            line: Cow::Borrowed(&command.line),
            address: command.address.as_deref().map(Cow::Borrowed),
            host: command.host.as_deref(),
            params: ParamsRef::Parsed(&command.params),
        }
    }
}

/// The ESMTP parameters of a command.
pub(crate) enum ParamsRef<'a> {
    /// Already read.
    Parsed(&'a [Param]),
    /// The words after the path of a MAIL or RCPT line, each read as a [`Param`] when it
    /// is stored: `NAME` upper-cased, `=value` as given, invalid UTF-8 replaced.
    Words(&'a [u8]),
}

/// An event kind as it is recorded, borrowed where its recorder holds the parts.
pub(crate) enum EventRef<'a> {
    /// An event kind built to be recorded.
    Kind(&'a EventKind),
    /// A command, borrowed from its line.
    Command(CommandRef<'a>),
    /// A reply, borrowed from the buffer it was rendered into.
    Reply {
        /// As [`Reply::kind`].
        kind: ReplyKind,
        /// As [`Reply::code`].
        code: u16,
        /// As [`Reply::text`].
        text: &'a str,
    },
    /// [`EventKind::Spf`], borrowed from the transaction's check.
    Spf(&'a SpfCheck),
    /// [`EventKind::Authenticated`], borrowed from the report the message keeps.
    Authenticated(&'a AuthReport),
}

impl EventRef<'_> {
    /// What the store's counts take from the event.
    pub(super) fn counted(&self) -> Counted<'_> {
        match self {
            Self::Kind(EventKind::Command(command)) if command.verb == Verb::Mail => command
                .address
                .as_deref()
                .map_or(Counted::Other, Counted::Sender),
            Self::Command(command) if command.verb == Verb::Mail => command
                .address
                .as_deref()
                .map_or(Counted::Other, Counted::Sender),
            Self::Kind(EventKind::Reply(reply)) => Counted::Reply {
                kind: reply.kind,
                code: reply.code,
            },
            &Self::Reply { kind, code, .. } => Counted::Reply { kind, code },
            Self::Kind(EventKind::Decision(decision)) => Counted::Decision {
                stage: decision.stage,
                accepted: decision.is_accept(),
            },
            Self::Kind(EventKind::Closed { .. }) => Counted::Closed,
            Self::Kind(_) | Self::Command(_) | Self::Spf(_) | Self::Authenticated(_) => {
                Counted::Other
            }
        }
    }
}

/// Texts no longer than this may go into the table of texts.
const SHORT_TEXT: usize = 256;
/// The most texts, and client addresses, the tables hold.
const TABLE_ENTRIES: usize = 4096;
/// The most bytes of text the table holds, whatever the cap on the log.
const TABLE_BYTES: usize = 256 * 1024;

/// The texts and client addresses records refer to by id. They fill up as new ones come
/// and are emptied only with the log: once full, new texts are written in the records.
pub(super) struct Tables {
    texts: Vec<Arc<str>>,
    text_ids: FastMap<Arc<str>, u32>,
    text_bytes: usize,
    /// The bytes of text the table may hold: a quarter of the log's byte cap, at most
    /// [`TABLE_BYTES`].
    text_room: usize,
    /// Ids of texts met lately (plus one; 0 for none), by a cheap fingerprint: a text met
    /// again is found with one comparison, without hashing it.
    recent: [u32; RECENT],
    ips: Vec<IpAddr>,
    ip_ids: FastMap<IpAddr, u32>,
    /// The address met last and its id: a session's events come from one.
    last_ip: Option<(IpAddr, u32)>,
}

/// Slots of [`Tables::recent`].
const RECENT: usize = 256;

/// A slot of [`Tables::recent`] for a text that is not empty: from its length and three
/// of its bytes.
fn fingerprint(text: &[u8]) -> usize {
    let n = text.len();
    let mix = (n as u32).wrapping_mul(0x9e37_79b9)
        ^ u32::from(text[0]).wrapping_mul(0x85eb_ca6b)
        ^ u32::from(text[n / 2]).wrapping_mul(0xc2b2_ae35)
        ^ u32::from(text[n - 1]).wrapping_mul(0x27d4_eb2f);
    (mix >> 24) as usize % RECENT
}

impl Tables {
    /// The address of id `i`.
    pub(super) fn ip(&self, i: usize) -> Option<IpAddr> {
        self.ips.get(i).copied()
    }

    /// The text of id `i`.
    pub(super) fn text(&self, i: usize) -> Option<&str> {
        self.texts.get(i).map(|text| &**text)
    }

    pub(super) fn new(max_event_bytes: usize) -> Self {
        Self {
            texts: Vec::new(),
            text_ids: FastMap::default(),
            text_bytes: 0,
            text_room: (max_event_bytes / 4).min(TABLE_BYTES),
            recent: [0; RECENT],
            ips: Vec::new(),
            ip_ids: FastMap::default(),
            last_ip: None,
        }
    }

    fn text_id(&mut self, text: &str) -> Option<u32> {
        if text.is_empty() || text.len() > SHORT_TEXT {
            return None;
        }
        let slot = fingerprint(text.as_bytes());
        let recent = self.recent[slot];
        if recent > 0
            && self
                .texts
                .get(recent as usize - 1)
                .is_some_and(|t| **t == *text)
        {
            return Some(recent - 1);
        }
        if let Some(&id) = self.text_ids.get(text) {
            self.recent[slot] = id + 1;
            return Some(id);
        }
        if self.texts.len() >= TABLE_ENTRIES || self.text_bytes + text.len() > self.text_room {
            return None;
        }
        let id = u32::try_from(self.texts.len()).ok()?;
        let text: Arc<str> = Arc::from(text);
        self.text_bytes += text.len();
        self.texts.push(text.clone());
        self.text_ids.insert(text, id);
        self.recent[slot] = id + 1;
        Some(id)
    }

    fn ip_id(&mut self, ip: IpAddr) -> Option<u32> {
        if let Some((last, id)) = self.last_ip
            && last == ip
        {
            return Some(id);
        }
        if let Some(&id) = self.ip_ids.get(&ip) {
            self.last_ip = Some((ip, id));
            return Some(id);
        }
        if self.ips.len() >= TABLE_ENTRIES {
            return None;
        }
        let id = u32::try_from(self.ips.len()).ok()?;
        self.ips.push(ip);
        self.ip_ids.insert(ip, id);
        self.last_ip = Some((ip, id));
        Some(id)
    }
}

/// Nanoseconds from the Unix epoch, negative before it.
pub(super) fn nanos(at: SystemTime) -> i128 {
    match at.duration_since(UNIX_EPOCH) {
        Ok(after) => after.as_nanos() as i128,
        Err(before) => -(before.duration().as_nanos() as i128),
    }
}

pub(super) fn time_of(nanos: i128) -> Option<SystemTime> {
    let whole = |n: u128| {
        Some(Duration::new(
            u64::try_from(n / 1_000_000_000).ok()?,
            u32::try_from(n % 1_000_000_000).ok()?,
        ))
    };
    if nanos >= 0 {
        UNIX_EPOCH.checked_add(whole(nanos.unsigned_abs())?)
    } else {
        UNIX_EPOCH.checked_sub(whole(nanos.unsigned_abs())?)
    }
}

fn zigzag(n: i128) -> u128 {
    ((n << 1) ^ (n >> 127)) as u128
}

pub(super) fn unzigzag(n: u128) -> i128 {
    ((n >> 1) as i128) ^ -((n & 1) as i128)
}

// Fieldless enums are stored as their index: `as u8` writes it, these lists read it
// back (a test checks that each list is in declaration order).
pub(super) const VERBS: [Verb; 16] = [
    Verb::Helo,
    Verb::Ehlo,
    Verb::Lhlo,
    Verb::Mail,
    Verb::Rcpt,
    Verb::Data,
    Verb::Bdat,
    Verb::Rset,
    Verb::Noop,
    Verb::Quit,
    Verb::Vrfy,
    Verb::Expn,
    Verb::Help,
    Verb::Starttls,
    Verb::Auth,
    Verb::Other,
];
pub(super) const FAULTS: [FaultKind; 8] = [
    FaultKind::Tarpit,
    FaultKind::SlowLink,
    FaultKind::Close,
    FaultKind::Unavailable,
    FaultKind::Reset,
    FaultKind::Stall,
    FaultKind::TlsFailure,
    FaultKind::Greylist,
];
pub(super) const CLOSES: [CloseReason; 19] = [
    CloseReason::Quit,
    CloseReason::ClientClosed,
    CloseReason::ReadFailed,
    CloseReason::WriteFailed,
    CloseReason::RefusedAtConnect,
    CloseReason::TooManyConnections,
    CloseReason::TooManyCommands,
    CloseReason::TlsFailed,
    CloseReason::TlsTimeout,
    CloseReason::SessionTimeout,
    CloseReason::IdleTimeout,
    CloseReason::CommandTimeout,
    CloseReason::DataRateTooLow,
    CloseReason::ShuttingDown,
    CloseReason::FaultClose,
    CloseReason::FaultStall,
    CloseReason::FaultReset,
    CloseReason::FaultUnavailable,
    CloseReason::FaultTlsFailure,
];
pub(super) const RESULTS: [AuthResult; 7] = [
    AuthResult::Pass,
    AuthResult::Fail,
    AuthResult::SoftFail,
    AuthResult::Neutral,
    AuthResult::None,
    AuthResult::TempError,
    AuthResult::PermError,
];
pub(super) const POLICIES: [DmarcPolicy; 3] = [
    DmarcPolicy::None,
    DmarcPolicy::Quarantine,
    DmarcPolicy::Reject,
];

pub(super) const CONNECTED: u8 = 0;
pub(super) const COMMAND: u8 = 1;
pub(super) const REPLY: u8 = 2;
pub(super) const DECISION: u8 = 3;
pub(super) const TLS_STARTED: u8 = 4;
pub(super) const TLS_FAILED: u8 = 5;
pub(super) const DISCARDED: u8 = 6;
pub(super) const SPF: u8 = 7;
pub(super) const AUTHENTICATED: u8 = 8;
pub(super) const FAULT: u8 = 9;
pub(super) const ACCEPTED: u8 = 10;
pub(super) const CLOSED: u8 = 11;

/// The fields of a record other than its kind.
pub(super) struct Header {
    pub(super) at: SystemTime,
    pub(super) session: u64,
    pub(super) transaction: Option<u32>,
    pub(super) client: IpAddr,
}

/// Writes one record at the end of `out`.
pub(super) struct Writer<'a> {
    pub(super) out: &'a mut Vec<u8>,
    pub(super) tables: &'a mut Tables,
}

impl Writer<'_> {
    /// Writes the record of `entry`; `base` is its chunk's time, in [`nanos`].
    pub(super) fn record(&mut self, header: &Header, base: i128, entry: &EventRef<'_>) {
        self.varint(zigzag(nanos(header.at) - base));
        self.varint(header.session.into());
        self.varint(header.transaction.map_or(0, |t| u128::from(t) + 1));
        match self.tables.ip_id(header.client) {
            Some(id) => self.varint(u128::from(id) + 2),
            None => self.ip(header.client),
        }
        match entry {
            EventRef::Kind(kind) => self.kind(kind),
            EventRef::Command(command) => self.command(command),
            &EventRef::Reply { kind, code, text } => self.reply(kind, code, text),
            EventRef::Spf(spf) => {
                self.byte(SPF);
                self.spf(spf);
            }
            EventRef::Authenticated(report) => self.report(report),
        }
    }

    fn byte(&mut self, b: u8) {
        self.out.push(b);
    }

    #[inline]
    fn varint(&mut self, n: u128) {
        // Seven bits a byte, low first, the high bit set on all but the last; in 64-bit
        // arithmetic for the numbers that fit.
        match u64::try_from(n) {
            Ok(mut n) => {
                while n >= 0x80 {
                    self.out.push((n as u8 & 0x7f) | 0x80);
                    n >>= 7;
                }
                self.out.push(n as u8);
            }
            Err(_) => {
                let mut n = n;
                while n >= 0x80 {
                    self.out.push((n as u8 & 0x7f) | 0x80);
                    n >>= 7;
                }
                self.out.push(n as u8);
            }
        }
    }

    fn number(&mut self, n: u64) {
        self.varint(n.into());
    }

    fn optional(&mut self, n: Option<u64>) {
        self.varint(n.map_or(0, |n| u128::from(n) + 1));
    }

    /// An address inline: 0 and four bytes, or 1 and sixteen.
    fn ip(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                self.byte(0);
                self.out.extend_from_slice(&v4.octets());
            }
            IpAddr::V6(v6) => {
                self.byte(1);
                self.out.extend_from_slice(&v6.octets());
            }
        }
    }

    /// A text: twice its id plus one when the table has it, else twice its length and
    /// the bytes; `offset` is added to the first number (1 for an `Option`'s `Some`).
    fn text_after(&mut self, text: &str, offset: u128) {
        match self.tables.text_id(text) {
            Some(id) => self.varint(u128::from(id) * 2 + 1 + offset),
            None => {
                self.varint(text.len() as u128 * 2 + offset);
                self.out.extend_from_slice(text.as_bytes());
            }
        }
    }

    fn text(&mut self, text: &str) {
        self.text_after(text, 0);
    }

    fn optional_text(&mut self, text: Option<&str>) {
        match text {
            Some(text) => self.text_after(text, 1),
            None => self.byte(0),
        }
    }

    fn reply(&mut self, kind: ReplyKind, code: u16, text: &str) {
        self.byte(REPLY);
        self.number(kind as u64);
        self.number(code.into());
        self.text(text);
    }

    fn command(&mut self, command: &CommandRef<'_>) {
        self.byte(COMMAND);
        self.byte(command.verb as u8);
        self.text(&command.line);
        self.optional_text(command.address.as_deref());
        self.optional_text(command.host);
        match command.params {
            ParamsRef::Parsed(params) => {
                self.number(params.len() as u64);
                for param in params {
                    self.text(&param.name);
                    self.optional_text(param.value.as_deref());
                }
            }
            ParamsRef::Words(words) => {
                let words = || {
                    words
                        .split(u8::is_ascii_whitespace)
                        .filter(|w| !w.is_empty())
                };
                self.number(words().count() as u64);
                for word in words() {
                    let word = String::from_utf8_lossy(word);
                    let (name, value) = match word.split_once('=') {
                        Some((name, value)) => (name, Some(value)),
                        None => (&*word, None),
                    };
                    // Upper-cased as it is written, without a copy: ASCII case changes
                    // keep the bytes valid UTF-8 and the length the same.
                    self.varint(name.len() as u128 * 2);
                    self.out
                        .extend(name.bytes().map(|b| b.to_ascii_uppercase()));
                    self.optional_text(value);
                }
            }
        }
    }

    fn decision(&mut self, decision: &Decision) {
        self.byte(DECISION);
        self.byte(decision.stage as u8);
        match decision.verdict {
            Verdict::Accept => self.byte(0),
            Verdict::Reject(kind) => {
                self.byte(1);
                self.number(kind as u64);
            }
            Verdict::Disconnect(kind) => {
                self.byte(2);
                self.number(kind as u64);
            }
            Verdict::Junk => self.byte(3),
        }
        self.text(&decision.rule);
        self.text(&decision.detail);
        self.optional_text(decision.key.as_deref());
        self.optional(decision.counter);
        self.optional(decision.limit);
        self.byte(decision.window.map_or(0, |w| w as u8 + 1));
        match decision.until {
            Some(until) => {
                self.byte(1);
                self.varint(zigzag(nanos(until)));
            }
            None => self.byte(0),
        }
    }

    fn spf(&mut self, spf: &SpfCheck) {
        self.byte(spf.result as u8);
        self.text(&spf.domain);
        self.text(&spf.reason);
    }

    fn report(&mut self, report: &AuthReport) {
        self.byte(AUTHENTICATED);
        self.spf(&report.spf);
        self.number(report.dkim.len() as u64);
        for dkim in &report.dkim {
            self.byte(dkim.result as u8);
            self.text(&dkim.domain);
            self.text(&dkim.selector);
            self.text(&dkim.algorithm);
            self.text(&dkim.reason);
        }
        let dmarc = &report.dmarc;
        self.byte(dmarc.result as u8);
        self.text(&dmarc.domain);
        self.byte(dmarc.policy.map_or(0, |p| p as u8 + 1));
        self.byte(dmarc.pct);
        self.byte(u8::from(dmarc.spf_aligned) | u8::from(dmarc.dkim_aligned) << 1);
        self.text(&dmarc.reason);
    }

    fn kind(&mut self, kind: &EventKind) {
        match kind {
            EventKind::Connected { local, mx } => {
                self.byte(CONNECTED);
                self.ip(local.ip());
                self.number(local.port().into());
                if let SocketAddr::V6(v6) = local {
                    self.number(v6.flowinfo().into());
                    self.number(v6.scope_id().into());
                }
                self.text(mx);
            }
            EventKind::Command(command) => self.command(&CommandRef::of(command)),
            EventKind::Reply(reply) => self.reply(reply.kind, reply.code, &reply.text),
            EventKind::Decision(decision) => self.decision(decision),
            EventKind::TlsStarted => self.byte(TLS_STARTED),
            EventKind::TlsFailed { error } => {
                self.byte(TLS_FAILED);
                self.text(error);
            }
            EventKind::Discarded { bytes } => {
                self.byte(DISCARDED);
                self.number(*bytes as u64);
            }
            EventKind::Spf(spf) => {
                self.byte(SPF);
                self.spf(spf);
            }
            EventKind::Authenticated(report) => self.report(report),
            EventKind::Fault { fault, stage } => {
                self.byte(FAULT);
                self.byte(*fault as u8);
                self.byte(stage.map_or(0, |s| s as u8 + 1));
            }
            EventKind::Accepted { message } => {
                self.byte(ACCEPTED);
                self.number(*message);
            }
            EventKind::Closed { reason } => {
                self.byte(CLOSED);
                self.byte(*reason as u8);
            }
        }
    }
}
