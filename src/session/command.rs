//! Command handlers: one method per SMTP command, each an `impl Session` block entry.

use std::borrow::Cow;

use smtp_proto::{Error as ParseError, MAIL_SMTPUTF8, MailFrom, RcptTo, Request};

use tracing::debug;

use super::body::Incoming;
use super::channel::Channel;
use super::input::{Action, Mode, Reading, loggable};
use super::{Pending, Session, Transaction};
use crate::chaos::FaultKind;
use crate::event::{CloseReason, Command, EventKind, Param, Verb};
use crate::policy::mailbox::{POSTMASTER_DOMAIN, quote_local_part};
use crate::policy::{Facts, SpfCheck, contains_address};
use crate::reply::ReplyKind;
use crate::units::Stage;

impl Session {
    /// Answers one complete command line (CRLF included).
    pub(super) fn command<C: Channel>(&mut self, line: &[u8]) -> Action<C::Upgrade> {
        let (command, parsed) = read(line);
        if command.verb == Verb::Mail {
            self.begin_transaction();
        }
        self.record(EventKind::Command(command));
        if let Some(reason) = self.count_command() {
            return Action::Close(reason);
        }
        match parsed {
            Ok((request, size)) => self.request::<C>(request, line, size),
            Err(Unparsed::RepeatedParameter) => {
                // Which of two SIZEs would count? Neither: the command is refused.
                self.reply(ReplyKind::SyntaxError);
                Action::Continue
            }
            Err(Unparsed::Error(error)) => {
                self.parse_error(&error);
                Action::Continue
            }
        }
    }

    /// Answers a parsed command from `line`; `size` is the exact SIZE of a MAIL command.
    fn request<C: Channel>(
        &mut self,
        request: Request<String>,
        line: &[u8],
        size: u64,
    ) -> Action<C::Upgrade> {
        match request {
            Request::Ehlo { host } => self.hello(host, ReplyKind::Ehlo),
            Request::Helo { host } => self.hello(host, ReplyKind::Helo),
            Request::Mail { from } => self.mail(&from, line, size),
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
                return Action::Close(CloseReason::Quit);
            }
            // RFC 3207: STARTTLS takes no parameters.
            Request::StartTls if !line.get(8..).unwrap_or_default().trim_ascii().is_empty() => {
                self.reply(ReplyKind::SyntaxError);
            }
            Request::StartTls => return self.starttls::<C>(),
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
        // A NUL, an escape or any other control character would end up in the Received
        // header: refused, as a name cannot hold one.
        if host.chars().any(char::is_control) {
            self.reply(ReplyKind::SyntaxError);
            return;
        }
        // QQ answers a second HELO on the same connection; it starts afresh.
        self.tx = None;
        if self.ask(Stage::Helo, &Facts::new(self.peer.ip())) {
            self.helo = Some(host);
            self.reply(kind);
        }
    }

    fn mail(&mut self, from: &MailFrom<String>, line: &[u8], size: u64) {
        if self.helo.is_none() {
            self.reply(ReplyKind::NeedHelo);
            return;
        }
        // smtp-proto reads `<postmaster>` (valid only as a recipient) and a source route
        // to nothing (`<@a,@b:>`) as the null sender `<>`; only `<>` is.
        if from.address.is_empty() && !path(line).trim_ascii().is_empty() {
            self.reply(ReplyKind::BadAddressSyntax);
            return;
        }
        // A second MAIL without RSET is answered 250 by QQ: it replaces the transaction.
        self.tx = None;
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        let from = quote_local_part(&from.address).into_owned();
        match self.engine.auth.clone() {
            Some(auth) => {
                self.pending = Some(Pending::Mail {
                    auth,
                    from,
                    size,
                    smtputf8,
                });
            }
            None => self.finish_mail(from, size, smtputf8, None, None),
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
                size,
                spf,
            });
            self.reply(ReplyKind::MailOk);
        }
    }

    fn rcpt(&mut self, to: &RcptTo<String>, line: &[u8]) {
        let Some(tx) = &self.tx else {
            self.reply(ReplyKind::NeedMail);
            return;
        };
        let address = recipient(&to.address, line);
        let facts = Facts::new(self.peer.ip())
            .from(&tx.from)
            .mail_params(0, tx.smtputf8)
            .rcpts(&tx.rcpts)
            .rcpt(&address);
        let decision = self.judge(Stage::Rcpt, &facts);
        // The transaction stays open while the decision is answered, so that a reply's
        // `{n}` counts its recipients.
        let accepted = self.decide(decision);
        let Some(tx) = &mut self.tx else {
            return;
        };
        let greylisted = accepted
            && self
                .engine
                .faults()
                .greylisted(&self.mx, self.peer.ip(), &tx.from, &address);
        if greylisted {
            self.record(EventKind::Fault {
                fault: FaultKind::Greylist,
                stage: Some(Stage::Rcpt),
            });
            self.reply(ReplyKind::Greylisted);
            return;
        }
        // A recipient named twice gets the message once.
        if accepted && !contains_address(&tx.rcpts, &address) {
            tx.rcpts.push(address.into_owned());
        }
        if accepted {
            self.reply(ReplyKind::RcptOk);
        }
    }

    /// Answers DATA. The transaction is taken along into the message data; a refusal puts
    /// it back first, since it stays open (and its recipients count in the reply).
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
        let decision = self.judge(Stage::Data, &facts);
        if !decision.is_accept() {
            self.tx = Some(tx);
            self.decide(decision);
            return;
        }
        self.decide(decision);
        let limits = &self.engine.config.limits;
        let expected = tx.size;
        // The announced SIZE is taken from the budget at once; without one, a little.
        match Incoming::start(
            self.engine.inflight.clone(),
            limits.max_inflight_bytes,
            limits.max_message_size,
            expected,
        ) {
            Some(incoming) => {
                self.mode = Mode::Data(Reading { incoming, tx });
                self.reply(ReplyKind::DataStart);
            }
            None => {
                self.tx = Some(tx);
                debug!(
                    session = self.id,
                    expected, "no room in the in-flight budget"
                );
                self.reply(ReplyKind::SystemBusy);
            }
        }
    }

    /// Answers STARTTLS: `220` and the upgrade on a plain channel with TLS on, a refusal
    /// otherwise.
    fn starttls<C: Channel>(&mut self) -> Action<C::Upgrade> {
        match C::starttls(self.engine.tls.as_ref()) {
            Ok(upgrade) => {
                self.reply(ReplyKind::StartTlsReady);
                Action::StartTls(upgrade)
            }
            Err(refusal) => {
                self.reply(refusal);
                Action::Continue
            }
        }
    }
}

/// Why a command line gave no request.
#[derive(Debug)]
pub(super) enum Unparsed {
    /// A MAIL or RCPT line names one of its parameters twice.
    RepeatedParameter,
    /// The parser refused it.
    Error(ParseError),
}

/// Reads a complete command line once: the event that records it, and the request to
/// answer with the exact SIZE of a MAIL command.
pub(super) fn read(line: &[u8]) -> (Command, Result<(Request<String>, u64), Unparsed>) {
    let mut command = Command::new(Verb::of_line(line), loggable(line));
    let parsed = parse(line);
    if let Ok((request, _)) = &parsed {
        match request {
            Request::Mail { from } => {
                command.address = Some(quote_local_part(&from.address).into_owned());
                command.params = params(line);
            }
            Request::Rcpt { to } => {
                command.address = Some(recipient(&to.address, line).into_owned());
                command.params = params(line);
            }
            Request::Helo { host } | Request::Ehlo { host } => {
                command.host = Some(host.clone());
            }
            _ => {}
        }
    }
    (command, parsed)
}

/// Parses a command line.
fn parse(line: &[u8]) -> Result<(Request<String>, u64), Unparsed> {
    // Each framed line is parsed on its own: a parser that kept state between lines
    // would glue a line it found unfinished to the next one.
    if repeats_a_parameter(line) {
        return Err(Unparsed::RepeatedParameter);
    }
    let size = mail_size(line);
    let literal = address_literal(line);
    let mut edited = Cow::Borrowed(line);
    // smtp-proto wraps a SIZE with too many digits round to a small number, or
    // refuses one of exactly usize::MAX: it reads SIZE=0 and the value is ours. It
    // refuses address literals (`a@[127.0.0.1]`) too: it reads a plain domain in
    // their place, and the literal is put back in the address it returns. The SIZE
    // comes after the path, so it is replaced first.
    if let Some(size) = &size {
        edited.to_mut().splice(size.digits.clone(), *b"0");
    }
    if let Some(literal) = &literal {
        edited
            .to_mut()
            .splice(literal.clone(), LITERAL_STAND_IN.bytes());
    }
    let mut request = Request::parse(&mut edited.iter())
        .map(Request::into_owned)
        .map_err(Unparsed::Error)?;
    if let Some(literal) = literal {
        put_back_literal(&mut request, &String::from_utf8_lossy(&line[literal]));
    }
    Ok((request, size.map_or(0, |s| s.value)))
}

/// The ESMTP parameters of a MAIL or RCPT line: the words after the path's `>`.
fn params(line: &[u8]) -> Vec<Param> {
    let line = line.trim_ascii_end();
    let Some(end) = line.iter().rposition(|&b| b == b'>') else {
        return Vec::new();
    };
    line[end + 1..]
        .split(u8::is_ascii_whitespace)
        .filter(|word| !word.is_empty())
        .map(|word| {
            let text = String::from_utf8_lossy(word);
            match text.split_once('=') {
                Some((name, value)) => {
                    Param::new(name.to_ascii_uppercase(), Some(value.to_owned()))
                }
                None => Param::new(text.to_ascii_uppercase(), None),
            }
        })
        .collect()
}

/// The recipient of a RCPT line, as the policy should judge it.
///
/// smtp-proto gives a bare `<Postmaster>` as an empty address, like `<>`: it becomes the
/// postmaster of the first domain QQ serves (RFC 5321 requires accepting it). A quoted
/// local part gets back the quotes smtp-proto took off.
fn recipient<'a>(address: &'a str, line: &[u8]) -> Cow<'a, str> {
    if address.is_empty() {
        let path = path(line);
        if path.trim_ascii().eq_ignore_ascii_case(b"postmaster") {
            let local = String::from_utf8_lossy(path.trim_ascii());
            return Cow::Owned(format!("{local}@{POSTMASTER_DOMAIN}"));
        }
    }
    quote_local_part(address)
}

/// What is between the first `<` of a MAIL or RCPT line and the `>` after it.
fn path(line: &[u8]) -> &[u8] {
    line.iter()
        .position(|&b| b == b'<')
        .and_then(|open| {
            let rest = &line[open + 1..];
            rest.iter()
                .position(|&b| b == b'>')
                .map(|close| &rest[..close])
        })
        .unwrap_or_default()
}

/// The domain smtp-proto is shown in place of an address literal.
const LITERAL_STAND_IN: &str = "address-literal.invalid";

/// Where the address literal of a MAIL or RCPT path is (`[127.0.0.1]`,
/// `[IPv6:::1]`, brackets included), if it has one. Whether it is a valid literal is
/// for the address syntax check to say.
fn address_literal(line: &[u8]) -> Option<std::ops::Range<usize>> {
    let verb = line.get(..4)?;
    if !verb.eq_ignore_ascii_case(b"MAIL") && !verb.eq_ignore_ascii_case(b"RCPT") {
        return None;
    }
    let open = line.iter().position(|&b| b == b'<')? + 1;
    let close = open + line[open..].iter().position(|&b| b == b'>')?;
    let path = &line[open..close];
    let at = path.windows(2).rposition(|w| w == b"@[")? + 1;
    (path.last() == Some(&b']')).then_some(open + at..close)
}

/// Puts `literal` back in the address smtp-proto read with the stand-in domain.
fn put_back_literal(request: &mut Request<String>, literal: &str) {
    let address = match request {
        Request::Mail { from } => &mut from.address,
        Request::Rcpt { to } => &mut to.address,
        _ => return,
    };
    if let Some(local) = address.strip_suffix(LITERAL_STAND_IN) {
        *address = format!("{local}{literal}");
    }
}

/// Whether a MAIL or RCPT line names one of its parameters (`SIZE=`, `BODY=`, ...)
/// twice.
fn repeats_a_parameter(line: &[u8]) -> bool {
    let Some(verb) = line.get(..4) else {
        return false;
    };
    if !verb.eq_ignore_ascii_case(b"MAIL") && !verb.eq_ignore_ascii_case(b"RCPT") {
        return false;
    }
    let Some(params) = line.iter().rposition(|&b| b == b'>') else {
        return false;
    };
    let mut seen: Vec<Vec<u8>> = Vec::new();
    for word in line[params + 1..].split(u8::is_ascii_whitespace) {
        let name = word.split(|&b| b == b'=').next().unwrap_or_default();
        if name.is_empty() {
            continue;
        }
        let name = name.to_ascii_uppercase();
        if seen.contains(&name) {
            return true;
        }
        seen.push(name);
    }
    false
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
    fn address_literals_are_found_in_the_path() {
        let literal = |line: &str| address_literal(line.as_bytes()).map(|r| line[r].to_owned());
        assert_eq!(
            literal("MAIL FROM:<a@[127.0.0.1]> SIZE=1\r\n").as_deref(),
            Some("[127.0.0.1]")
        );
        assert_eq!(
            literal("RCPT TO:<b@[IPv6:::1]>\r\n").as_deref(),
            Some("[IPv6:::1]")
        );
        assert_eq!(literal("MAIL FROM:<a@example.org>\r\n"), None);
        assert_eq!(literal("MAIL FROM:<a@[1.2.3.4>\r\n"), None);
        assert_eq!(literal("HELO [127.0.0.1]\r\n"), None);
    }

    #[test]
    fn repeated_parameters_are_found() {
        let repeats = |line: &str| repeats_a_parameter(line.as_bytes());
        assert!(repeats("MAIL FROM:<a@b> SIZE=1 size=2\r\n"));
        assert!(repeats(
            "MAIL FROM:<a@b> BODY=8BITMIME SMTPUTF8 BODY=7BIT\r\n"
        ));
        assert!(repeats("RCPT TO:<a@b> NOTIFY=NEVER NOTIFY=SUCCESS\r\n"));
        assert!(!repeats(
            "MAIL FROM:<a@b> SIZE=1 BODY=8BITMIME SMTPUTF8\r\n"
        ));
        assert!(!repeats("MAIL FROM:<a@b>  SIZE=1\r\n"));
        assert!(!repeats("EHLO SIZE=1 SIZE=1\r\n"));
    }

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
