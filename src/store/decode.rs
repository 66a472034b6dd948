//! The way back from a record of the log ([`codec`](super::codec)) to an [`Event`].

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use super::codec::{
    ACCEPTED, AUTHENTICATED, CLOSED, CLOSES, COMMAND, CONNECTED, DECISION, DISCARDED, FAULT,
    FAULTS, Header, POLICIES, REPLY, RESULTS, SPF, TLS_FAILED, TLS_STARTED, Tables, VERBS, time_of,
    unzigzag,
};
use super::tally::Counted;
use crate::event::{Command, Event, EventKind, Param};
use crate::policy::{AuthReport, Decision, DkimCheck, DmarcCheck, SpfCheck, Verdict};
use crate::reply::{Reply, ReplyKind};
use crate::units::{Stage, Window};

/// Reads one record.
pub(super) struct Reader<'a> {
    pub(super) bytes: &'a [u8],
    pub(super) tables: &'a Tables,
}

impl Reader<'_> {
    /// The event of the record, numbered `seq`; `base` is its chunk's time. `None` only
    /// for bytes the [`Writer`] did not write.
    pub(super) fn event(mut self, seq: u64, base: i128) -> Option<Event> {
        let header = self.header(base)?;
        let kind = self.kind()?;
        Some(Event {
            seq,
            at: header.at,
            session: header.session,
            transaction: header.transaction,
            client: header.client,
            kind,
        })
    }

    /// What the store's counts take from the record, read without copying its texts.
    pub(super) fn counted(mut self, base: i128) -> Option<(IpAddr, Counted<'static>)> {
        let header = self.header(base)?;
        let counted = match self.byte()? {
            REPLY => {
                let kind = self.reply_kind()?;
                let code = u16::try_from(self.varint()?).ok()?;
                Counted::Reply { kind, code }
            }
            DECISION => {
                let stage = pick(&Stage::ALL, self.byte()?)?;
                let accepted = matches!(self.verdict()?, Verdict::Accept | Verdict::Junk);
                Counted::Decision { stage, accepted }
            }
            CLOSED => Counted::Closed,
            _ => Counted::Other,
        };
        Some((header.client, counted))
    }

    fn header(&mut self, base: i128) -> Option<Header> {
        let at = time_of(base.checked_add(unzigzag(self.varint()?))?)?;
        let session = self.number()?;
        let transaction = match self.varint()? {
            0 => None,
            t => Some(u32::try_from(t - 1).ok()?),
        };
        let client = match self.varint()? {
            0 => IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(self.take(4)?).ok()?)),
            1 => IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(self.take(16)?).ok()?)),
            id => self.tables.ip(usize::try_from(id - 2).ok()?)?,
        };
        Some(Header {
            at,
            session,
            transaction,
            client,
        })
    }

    fn take(&mut self, n: usize) -> Option<&[u8]> {
        let (taken, rest) = self.bytes.split_at_checked(n)?;
        self.bytes = rest;
        Some(taken)
    }

    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.bytes.split_first()?;
        self.bytes = rest;
        Some(b)
    }

    fn varint(&mut self) -> Option<u128> {
        let mut n = 0u128;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            if shift >= 128 {
                return None;
            }
            n |= u128::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Some(n);
            }
            shift += 7;
        }
    }

    fn number(&mut self) -> Option<u64> {
        u64::try_from(self.varint()?).ok()
    }

    fn optional(&mut self) -> Option<Option<u64>> {
        match self.varint()? {
            0 => Some(None),
            n => Some(Some(u64::try_from(n - 1).ok()?)),
        }
    }

    fn ip(&mut self) -> Option<IpAddr> {
        match self.byte()? {
            0 => Some(IpAddr::V4(Ipv4Addr::from(
                <[u8; 4]>::try_from(self.take(4)?).ok()?,
            ))),
            1 => Some(IpAddr::V6(Ipv6Addr::from(
                <[u8; 16]>::try_from(self.take(16)?).ok()?,
            ))),
            _ => None,
        }
    }

    fn text_of(&mut self, code: u128) -> Option<String> {
        let n = usize::try_from(code >> 1).ok()?;
        if code & 1 == 1 {
            return self.tables.text(n).map(str::to_owned);
        }
        std::str::from_utf8(self.take(n)?).ok().map(str::to_owned)
    }

    fn text(&mut self) -> Option<String> {
        let code = self.varint()?;
        self.text_of(code)
    }

    fn optional_text(&mut self) -> Option<Option<String>> {
        match self.varint()? {
            0 => Some(None),
            code => Some(Some(self.text_of(code - 1)?)),
        }
    }

    fn reply_kind(&mut self) -> Option<ReplyKind> {
        ReplyKind::ALL
            .get(usize::try_from(self.varint()?).ok()?)
            .copied()
    }

    fn verdict(&mut self) -> Option<Verdict> {
        Some(match self.byte()? {
            0 => Verdict::Accept,
            1 => Verdict::Reject(self.reply_kind()?),
            2 => Verdict::Disconnect(self.reply_kind()?),
            3 => Verdict::Junk,
            _ => return None,
        })
    }

    fn optional_pick<T: Copy>(&mut self, list: &[T]) -> Option<Option<T>> {
        match self.byte()? {
            0 => Some(None),
            i => Some(Some(pick(list, i - 1)?)),
        }
    }

    fn spf(&mut self) -> Option<SpfCheck> {
        let result = pick(&RESULTS, self.byte()?)?;
        Some(SpfCheck::new(result, self.text()?, self.text()?))
    }

    fn command(&mut self) -> Option<Command> {
        let verb = pick(&VERBS, self.byte()?)?;
        let mut command = Command::new(verb, self.text()?);
        command.address = self.optional_text()?;
        command.host = self.optional_text()?;
        let n = self.number()?;
        // Each parameter takes at least two bytes: a length cannot ask for more.
        command.params = Vec::with_capacity(usize::try_from(n).ok()?.min(self.bytes.len() / 2));
        for _ in 0..n {
            let name = self.text()?;
            command.params.push(Param::new(name, self.optional_text()?));
        }
        Some(command)
    }

    fn decision(&mut self) -> Option<Decision> {
        let stage = pick(&Stage::ALL, self.byte()?)?;
        let verdict = self.verdict()?;
        let rule = self.text()?;
        let detail = self.text()?;
        Some(Decision {
            stage,
            verdict,
            rule: Cow::Owned(rule),
            detail,
            key: self.optional_text()?,
            counter: self.optional()?,
            limit: self.optional()?,
            window: self.optional_pick(&Window::ALL)?,
            until: match self.byte()? {
                0 => None,
                _ => Some(time_of(unzigzag(self.varint()?))?),
            },
        })
    }

    fn kind(&mut self) -> Option<EventKind> {
        Some(match self.byte()? {
            CONNECTED => {
                let ip = self.ip()?;
                let port = u16::try_from(self.number()?).ok()?;
                let local = match ip {
                    IpAddr::V4(v4) => SocketAddr::V4(SocketAddrV4::new(v4, port)),
                    IpAddr::V6(v6) => {
                        let flowinfo = u32::try_from(self.number()?).ok()?;
                        let scope_id = u32::try_from(self.number()?).ok()?;
                        SocketAddr::V6(SocketAddrV6::new(v6, port, flowinfo, scope_id))
                    }
                };
                EventKind::Connected {
                    local,
                    mx: self.text()?,
                }
            }
            COMMAND => EventKind::Command(self.command()?),
            REPLY => {
                let kind = self.reply_kind()?;
                let code = u16::try_from(self.number()?).ok()?;
                EventKind::Reply(Reply {
                    kind,
                    code,
                    text: self.text()?,
                })
            }
            DECISION => EventKind::Decision(self.decision()?),
            TLS_STARTED => EventKind::TlsStarted,
            TLS_FAILED => EventKind::TlsFailed {
                error: self.text()?,
            },
            DISCARDED => EventKind::Discarded {
                bytes: usize::try_from(self.number()?).ok()?,
            },
            SPF => EventKind::Spf(self.spf()?),
            AUTHENTICATED => {
                let spf = self.spf()?;
                let n = self.number()?;
                let mut dkim = Vec::with_capacity(usize::try_from(n).ok()?.min(self.bytes.len()));
                for _ in 0..n {
                    dkim.push(DkimCheck {
                        result: pick(&RESULTS, self.byte()?)?,
                        domain: self.text()?,
                        selector: self.text()?,
                        algorithm: self.text()?,
                        reason: self.text()?,
                    });
                }
                let result = pick(&RESULTS, self.byte()?)?;
                let domain = self.text()?;
                let policy = self.optional_pick(&POLICIES)?;
                let pct = self.byte()?;
                let aligned = self.byte()?;
                let dmarc = DmarcCheck {
                    result,
                    domain,
                    policy,
                    pct,
                    spf_aligned: aligned & 1 != 0,
                    dkim_aligned: aligned & 2 != 0,
                    reason: self.text()?,
                };
                EventKind::Authenticated(AuthReport { spf, dkim, dmarc })
            }
            FAULT => EventKind::Fault {
                fault: pick(&FAULTS, self.byte()?)?,
                stage: self.optional_pick(&Stage::ALL)?,
            },
            ACCEPTED => EventKind::Accepted {
                message: self.number()?,
            },
            CLOSED => EventKind::Closed {
                reason: pick(&CLOSES, self.byte()?)?,
            },
            _ => return None,
        })
    }
}

fn pick<T: Copy>(list: &[T], i: u8) -> Option<T> {
    list.get(usize::from(i)).copied()
}
