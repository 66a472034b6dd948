//! Command handlers: one method per SMTP command, each an `impl Session` block entry.

use std::borrow::Cow;

use smtp_proto::{Error as ParseError, MAIL_SMTPUTF8, MailFrom, RcptTo, Request};

use tracing::debug;

use super::body::Incoming;
use super::channel::Channel;
use super::input::{Action, Mode, Reading};
use super::parse::{self, Unparsed, path, read, recipient};
use super::verdict::{Staged, mail_facts};
use super::{Pending, Session, Transaction};
use crate::chaos::FaultKind;
use crate::event::{CloseReason, EventKind, Verb};
use crate::policy::mailbox::quote_local_part;
use crate::policy::{Facts, SpfCheck, contains_address};
use crate::reply::ReplyKind;
use crate::store::EventRef;
use crate::units::Stage;

impl Session {
    /// Answers one complete command line (CRLF included).
    pub(super) fn command<C: Channel>(&mut self, line: &[u8]) -> Action<C::Upgrade> {
        let (verb, parsed) = read(line);
        if verb == Verb::Mail {
            self.begin_transaction();
        }
        self.record_ref(EventRef::Command(parse::command(line, verb, &parsed)));
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
        if self.waits(Stage::Helo) {
            self.pending = Some(Pending::Helo { host, kind });
        } else {
            self.finish_hello(host, kind, None);
        }
    }

    /// Decides HELO or EHLO (after its stage's round trip, when `staged`).
    pub(super) fn finish_hello(&mut self, host: String, kind: ReplyKind, staged: Option<Staged>) {
        if self.ask(Stage::Helo, &Facts::new(self.peer.ip()), staged) {
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
        let auth = self.engine.auth.clone();
        if auth.is_some() || self.waits(Stage::Mail) {
            self.pending = Some(Pending::Mail {
                auth,
                from,
                size,
                smtputf8,
            });
        } else {
            self.finish_mail(from, size, smtputf8, None, None, None);
        }
    }

    /// Decides MAIL once SPF (and the PTR check) are known, after its stage's round trip
    /// when `staged`.
    pub(super) fn finish_mail(
        &mut self,
        from: String,
        size: u64,
        smtputf8: bool,
        spf: Option<SpfCheck>,
        ptr_matches: Option<bool>,
        staged: Option<Staged>,
    ) {
        if let Some(spf) = &spf {
            self.record_ref(EventRef::Spf(spf));
        }
        let facts = mail_facts(
            self.peer.ip(),
            &from,
            size,
            smtputf8,
            spf.as_ref(),
            ptr_matches,
        );
        if self.ask(Stage::Mail, &facts, staged) {
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
        if self.tx.is_none() {
            self.reply(ReplyKind::NeedMail);
            return;
        }
        let address = recipient(&to.address, line);
        if self.waits(Stage::Rcpt) {
            self.pending = Some(Pending::Rcpt {
                address: address.into_owned(),
            });
        } else {
            self.finish_rcpt(address, None);
        }
    }

    /// What RCPT of `address` is decided on, in the transaction open.
    pub(super) fn rcpt_facts<'a>(&'a self, address: &'a str) -> Option<Facts<'a>> {
        let tx = self.tx.as_ref()?;
        Some(
            Facts::new(self.peer.ip())
                .from(&tx.from)
                .mail_params(0, tx.smtputf8)
                .rcpts(&tx.rcpts)
                .rcpt(address),
        )
    }

    /// Decides RCPT of `address` (after its stage's round trip, when `staged`).
    pub(super) fn finish_rcpt(&mut self, address: Cow<'_, str>, staged: Option<Staged>) {
        let Some(facts) = self.rcpt_facts(&address) else {
            return;
        };
        let decision = self.judge(Stage::Rcpt, &facts, staged);
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
        match &self.tx {
            None => self.reply(ReplyKind::NeedMail),
            Some(tx) if tx.rcpts.is_empty() => self.reply(ReplyKind::NeedRcpt),
            Some(_) if self.waits(Stage::Data) => self.pending = Some(Pending::Data),
            Some(_) => self.finish_data(None),
        }
    }

    /// Decides DATA in the transaction open (after its stage's round trip, when
    /// `staged`).
    pub(super) fn finish_data(&mut self, staged: Option<Staged>) {
        let Some(tx) = self.tx.take() else {
            return;
        };
        let facts = Facts::new(self.peer.ip()).from(&tx.from).rcpts(&tx.rcpts);
        let decision = self.judge(Stage::Data, &facts, staged);
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
        let acceptor = self.engine.tls.as_ref().map(|t| t.for_mx(&self.mx));
        match C::starttls(acceptor) {
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
