//! Command handlers: one method per SMTP command, each an `impl Session` block entry.

use smtp_proto::request::receiver::DataReceiver;
use smtp_proto::{Error as ParseError, MAIL_SMTPUTF8, MailFrom, RcptTo, Request};

use super::{Action, Mode, Session, Transaction, loggable};
use crate::policy::{Facts, Stage, contains_address};
use crate::reply::ReplyKind;
use crate::store::EventKind;

impl Session {
    /// Answers one complete command line (CRLF included).
    pub(super) fn command(&mut self, line: &[u8]) -> Action {
        self.commands += 1;
        self.record(EventKind::Command {
            line: loggable(line),
        });
        if self.commands > self.shared.config.limits.max_commands {
            self.reply(ReplyKind::TooManyCommands);
            return Action::Close("too many commands");
        }
        // Each framed line is parsed on its own: a parser that kept state between lines
        // would glue a line it found unfinished to the next one.
        match Request::parse(&mut line.iter()).map(Request::into_owned) {
            Ok(request) => self.request(request),
            Err(error) => {
                self.parse_error(&error);
                Action::Continue
            }
        }
    }

    fn request(&mut self, request: Request<String>) -> Action {
        match request {
            Request::Ehlo { host } => self.hello(host, ReplyKind::Ehlo),
            Request::Helo { host } => self.hello(host, ReplyKind::Helo),
            Request::Mail { from } => self.mail(&from),
            Request::Rcpt { to } => self.rcpt(&to),
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

    fn mail(&mut self, from: &MailFrom<String>) {
        if self.helo.is_none() {
            self.reply(ReplyKind::NeedHelo);
            return;
        }
        // A second MAIL without RSET is answered 250 by QQ: it replaces the transaction.
        self.tx = None;
        let smtputf8 = from.flags & MAIL_SMTPUTF8 != 0;
        let facts = Facts::new(self.peer.ip())
            .from(&from.address)
            .mail_params(from.size as u64, smtputf8);
        if self.ask(Stage::Mail, &facts) {
            self.tx = Some(Transaction {
                from: from.address.clone(),
                rcpts: Vec::new(),
                smtputf8,
            });
            self.reply(ReplyKind::MailOk);
        }
    }

    fn rcpt(&mut self, to: &RcptTo<String>) {
        let Some(tx) = self.tx.take() else {
            self.reply(ReplyKind::NeedMail);
            return;
        };
        let facts = Facts::new(self.peer.ip())
            .from(&tx.from)
            .mail_params(0, tx.smtputf8)
            .rcpts(&tx.rcpts)
            .rcpt(&to.address);
        let accepted = self.ask(Stage::Rcpt, &facts);
        let mut tx = tx;
        // A recipient named twice gets the message once.
        if accepted && !contains_address(&tx.rcpts, &to.address) {
            tx.rcpts.push(to.address.clone());
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
