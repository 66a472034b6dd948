//! Command handlers: one method per SMTP command, each an `impl Session` block entry.

use std::borrow::Cow;

use smtp_proto::request::receiver::DataReceiver;
use smtp_proto::{Error as ParseError, MAIL_SMTPUTF8, MailFrom, RcptTo, Request};

use super::{Action, Mode, Pending, Session, Transaction, loggable};
use crate::chaos::FaultKind;
use crate::policy::mailbox::{POSTMASTER_DOMAIN, quote_local_part};
use crate::policy::{Facts, SpfCheck, Stage, contains_address};
use crate::reply::ReplyKind;
use crate::store::EventKind;

impl Session {
    /// Answers one complete command line (CRLF included).
    pub(super) fn command(&mut self, line: &[u8]) -> Action {
        self.record(EventKind::Command {
            line: loggable(line),
        });
        let counted = self.count_command();
        if counted != Action::Continue {
            return counted;
        }
        // Each framed line is parsed on its own: a parser that kept state between lines
        // would glue a line it found unfinished to the next one.
        let size = mail_size(line);
        let parsed = match &size {
            // smtp-proto wraps a SIZE with too many digits round to a small number, or
            // refuses one of exactly usize::MAX: it reads SIZE=0 and the value is ours.
            Some(size) => {
                let mut line = line.to_vec();
                line.splice(size.digits.clone(), *b"0");
                Request::parse(&mut line.iter()).map(Request::into_owned)
            }
            None => Request::parse(&mut line.iter()).map(Request::into_owned),
        };
        match parsed {
            Ok(request) => self.request(request, line, size.map_or(0, |s| s.value)),
            Err(error) => {
                self.parse_error(&error);
                Action::Continue
            }
        }
    }

    /// Answers a parsed command from `line`; `size` is the exact SIZE of a MAIL command.
    fn request(&mut self, request: Request<String>, line: &[u8], size: u64) -> Action {
        match request {
            Request::Ehlo { host } => self.hello(host, ReplyKind::Ehlo),
            Request::Helo { host } => self.hello(host, ReplyKind::Helo),
            Request::Mail { from } => self.mail(&from, size),
            Request::Rcpt { to } => self.rcpt(&to, line),
            Request::Data => self.data_command(),
            Request::Rset => {
                self.tx = None;
                self.reply(ReplyKind::RsetOk);
            }
            Request::Noop { .. } => self.reply(ReplyKind::NoopOk),
            Request::Vrfy { .. } => self.reply(ReplyKind::Vrfy),
            Request::Help { .. } => self.reply(ReplyKind::Help),
            Request::Quit => {
                self.reply(ReplyKind::Bye);
                return Action::Close("quit");
            }
            Request::StartTls => return self.starttls(),
            Request::Lhlo { .. }
            | Request::Auth { .. }
            | Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. }
            | Request::Bdat { .. } => self.reply(ReplyKind::NotImplemented),
        }
        Action::Continue
    }

    fn parse_error(&mut self, error: &ParseError) {
        let kind = match error {
            ParseError::UnknownCommand => ReplyKind::NotImplemented,
            ParseError::InvalidSenderAddress | ParseError::InvalidRecipientAddress => {
                ReplyKind::BadAddressSyntax
            }
            ParseError::UnsupportedParameter { .. } => ReplyKind::UnsupportedParameter,
            ParseError::ResponseTooLong => ReplyKind::LineTooLong,
            // On a complete line, "needs more data" means the command stopped short.
            ParseError::NeedsMoreData { .. } => ReplyKind::SyntaxError,
            _ => ReplyKind::SyntaxError,
        };
        self.reply(kind);
    }

    fn hello(&mut self, host: String, kind: ReplyKind) {
        // QQ answers a second HELO on the same connection; it starts afresh.
        self.tx = None;
        if self.ask(Stage::Helo, &Facts::new(self.peer.ip())) {
            self.helo = Some(host);
            self.reply(kind);
        }
    }

    fn mail(&mut self, from: &MailFrom<String>, size: u64) {
        if self.helo.is_none() {
            self.reply(ReplyKind::NeedHelo);
            return;
        }
        // A second MAIL without RSET is answered 250 by QQ: it replaces the transaction.
        self.tx = None;
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        let from = quote_local_part(&from.address).into_owned();
        if self.shared.auth.is_some() {
            self.pending = Some(Pending::Mail {
                from,
                size,
                smtputf8,
            });
        } else {
            self.finish_mail(from, size, smtputf8, None, None);
        }
    }

    /// Decides MAIL once SPF (and the PTR check) are known.
    pub(super) fn finish_mail(
        &mut self,
        from: String,
        size: u64,
        smtputf8: bool,
        spf: Option<SpfCheck>,
        ptr_matches: Option<bool>,
    ) {
        if let Some(spf) = &spf {
            self.record(EventKind::Spf(spf.clone()));
        }
        let mut facts = Facts::new(self.peer.ip())
            .from(&from)
            .mail_params(size, smtputf8);
        if let Some(spf) = &spf {
            facts = facts.spf(spf);
        }
        if let Some(matches) = ptr_matches {
            facts = facts.ptr_matches(matches);
        }
        if self.ask(Stage::Mail, &facts) {
            self.tx = Some(Transaction {
                from,
                rcpts: Vec::new(),
                smtputf8,
                spf,
            });
            self.reply(ReplyKind::MailOk);
        }
    }

    fn rcpt(&mut self, to: &RcptTo<String>, line: &[u8]) {
        let Some(tx) = self.tx.take() else {
            self.reply(ReplyKind::NeedMail);
            return;
        };
        let address = recipient(&to.address, line);
        let facts = Facts::new(self.peer.ip())
            .from(&tx.from)
            .mail_params(0, tx.smtputf8)
            .rcpts(&tx.rcpts)
            .rcpt(&address);
        let accepted = self.ask(Stage::Rcpt, &facts);
        let greylisted = accepted
            && self
                .shared
                .faults()
                .greylisted(&self.mx, self.peer.ip(), &tx.from, &address);
        if greylisted {
            self.record(EventKind::Fault {
                fault: FaultKind::Greylist,
                stage: Some(Stage::Rcpt),
            });
            self.tx = Some(tx);
            self.reply(ReplyKind::Greylisted);
            return;
        }
        let mut tx = tx;
        // A recipient named twice gets the message once.
        if accepted && !contains_address(&tx.rcpts, &address) {
            tx.rcpts.push(address.into_owned());
        }
        self.tx = Some(tx);
        if accepted {
            self.reply(ReplyKind::RcptOk);
        }
    }

    fn data_command(&mut self) {
        let Some(tx) = self.tx.take() else {
            self.reply(ReplyKind::NeedMail);
            return;
        };
        if tx.rcpts.is_empty() {
            self.tx = Some(tx);
            self.reply(ReplyKind::NeedRcpt);
            return;
        }
        let facts = Facts::new(self.peer.ip()).from(&tx.from).rcpts(&tx.rcpts);
        let accepted = self.ask(Stage::Data, &facts);
        self.tx = Some(tx);
        if accepted {
            self.reply(ReplyKind::DataStart);
            let mut receiver = DataReceiver::new();
            let mut body = Vec::new();
            // A fresh receiver only sees a dot that follows CRLF: prime it with one so
            // that an empty message or a dot-stuffed first line is read right.
            receiver.ingest(&mut b"\r\n".iter(), &mut body);
            body.clear();
            self.mode = Mode::Data { receiver, body };
        }
    }

    fn starttls(&mut self) -> Action {
        if self.tls {
            self.reply(ReplyKind::TlsActive);
            return Action::Continue;
        }
        if self.shared.tls.is_none() {
            self.reply(ReplyKind::TlsUnavailable);
            return Action::Continue;
        }
        self.reply(ReplyKind::StartTlsReady);
        Action::StartTls
    }
}

/// The recipient of a RCPT line, as the policy should judge it.
///
/// smtp-proto gives a bare `<Postmaster>` as an empty address, like `<>`: it becomes the
/// postmaster of the first domain QQ serves (RFC 5321 requires accepting it). A quoted
/// local part gets back the quotes smtp-proto took off.
fn recipient<'a>(address: &'a str, line: &[u8]) -> Cow<'a, str> {
    if address.is_empty() {
        let path = line
            .iter()
            .position(|&b| b == b'<')
            .and_then(|open| {
                let rest = &line[open + 1..];
                rest.iter()
                    .position(|&b| b == b'>')
                    .map(|close| &rest[..close])
            })
            .unwrap_or_default();
        if path.trim_ascii().eq_ignore_ascii_case(b"postmaster") {
            let local = String::from_utf8_lossy(path.trim_ascii());
            return Cow::Owned(format!("{local}@{POSTMASTER_DOMAIN}"));
        }
    }
    quote_local_part(address)
}

/// The `SIZE=` parameter of a MAIL command line.
#[derive(Debug, PartialEq, Eq)]
struct MailSize {
    /// Where its digits are in the line.
    digits: std::ops::Range<usize>,
    /// Its value; `u64::MAX` when the digits do not fit, which is over any limit.
    value: u64,
}

/// Reads the `SIZE=<digits>` parameter of a MAIL line exactly. Parameters follow the last
/// `>`; anything but plain digits is left to the parser to refuse.
fn mail_size(line: &[u8]) -> Option<MailSize> {
    if !line.get(..4)?.eq_ignore_ascii_case(b"MAIL") {
        return None;
    }
    let params = line.iter().rposition(|&b| b == b'>')? + 1;
    let mut start = params;
    for word in line[params..].split(|b| b.is_ascii_whitespace()) {
        let end = start + word.len();
        let name = word.get(..5).filter(|n| n.eq_ignore_ascii_case(b"SIZE="));
        let digits = word.get(5..).filter(|d| !d.is_empty());
        if let (Some(_), Some(digits)) = (name, digits)
            && digits.iter().all(u8::is_ascii_digit)
        {
            let value = digits.iter().try_fold(0u64, |value, &d| {
                value.checked_mul(10)?.checked_add(u64::from(d - b'0'))
            });
            return Some(MailSize {
                digits: start + 5..end,
                value: value.unwrap_or(u64::MAX),
            });
        }
        start = end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mail_size_is_read_exactly() {
        let size = |line: &str| mail_size(line.as_bytes()).map(|s| s.value);
        assert_eq!(size("MAIL FROM:<a@b> SIZE=3147\r\n"), Some(3147));
        assert_eq!(size("mail from:<a@b> BODY=8BITMIME size=12\r\n"), Some(12));
        assert_eq!(
            size("MAIL FROM:<a@b> SIZE=99999999999999999999999999\r\n"),
            Some(u64::MAX)
        );
        assert_eq!(
            size("MAIL FROM:<a@b> SIZE=18446744073709551615\r\n"),
            Some(u64::MAX)
        );
        assert_eq!(size("MAIL FROM:<a@b> SIZE=12x\r\n"), None);
        assert_eq!(size("MAIL FROM:<a@b> SIZE=\r\n"), None);
        assert_eq!(size("MAIL FROM:<a@b>\r\n"), None);
        assert_eq!(size("RCPT TO:<a@b> SIZE=1\r\n"), None);
        let line = b"MAIL FROM:<a@b> SIZE=42 BODY=7BIT\r\n";
        let digits = mail_size(line).map(|s| s.digits).expect("a SIZE");
        assert_eq!(&line[digits], b"42");
    }
}
