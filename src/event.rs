//! The event model: what happened in a session, in typed fields.
//!
//! The session records an [`Event`] for every connection, command, reply, policy
//! decision, check, fault and close. Everything that reads the log (the expectations,
//! the statistics, the API's filters) reads these fields; nothing parses a logged line
//! again. The raw command line is kept next to its parsed form for people to read.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::chaos::FaultKind;
use crate::policy::{AuthReport, Decision, SpfCheck};
use crate::reply::Reply;
use crate::units::Stage;

/// One thing that happened, in order.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Event {
    /// Store-wide sequence number, from 1.
    pub seq: u64,
    /// When, by the server's clock.
    #[serde(with = "crate::clock::rfc3339")]
    pub at: SystemTime,
    /// The session, numbered from 1 in accept order.
    pub session: u64,
    /// The mail transaction of the session the event belongs to, numbered from 1: from
    /// its `MAIL` command to the reply that ends it (the reply to a refused `MAIL`, the
    /// reply at the end of data, `RSET`, a new `HELO`/`EHLO`, or the close).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transaction: Option<u32>,
    /// The client's address.
    pub client: IpAddr,
    /// What happened: in JSON, its `type` and fields beside the ones above.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What an [`Event`] records.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
#[non_exhaustive]
pub enum EventKind {
    /// A client connected to the listener of MX host `mx` on `local`.
    Connected {
        /// The listener's address.
        local: SocketAddr,
        /// The simulated MX host (`mx1`).
        mx: String,
    },
    /// A command: its verb and arguments, and the line as it came.
    Command(Command),
    /// A reply qqmx sent.
    Reply(Reply),
    /// A policy decision and its reason.
    Decision(Decision),
    /// The TLS handshake completed.
    TlsStarted,
    /// The TLS handshake failed.
    TlsFailed {
        /// The error.
        error: String,
    },
    /// Bytes the client pipelined after STARTTLS, thrown away as RFC 3207 requires.
    Discarded {
        /// How many.
        bytes: usize,
    },
    /// SPF for the envelope sender, checked at MAIL.
    Spf(SpfCheck),
    /// SPF, DKIM and DMARC for a complete message, checked at the end of data.
    Authenticated(AuthReport),
    /// A chaos fault fired.
    Fault {
        /// Which.
        fault: FaultKind,
        /// At which stage, when it is not the one the next reply answers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stage: Option<Stage>,
    },
    /// A message went into the store.
    Accepted {
        /// Its id.
        message: u64,
    },
    /// The connection ended.
    Closed {
        /// Why.
        reason: CloseReason,
    },
}

impl EventKind {
    /// The name of the kind, as in the JSON's `type` field (`command`, `reply`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Connected { .. } => "connected",
            Self::Command(_) => "command",
            Self::Reply(_) => "reply",
            Self::Decision(_) => "decision",
            Self::TlsStarted => "tls_started",
            Self::TlsFailed { .. } => "tls_failed",
            Self::Discarded { .. } => "discarded",
            Self::Spf(_) => "spf",
            Self::Authenticated(_) => "authenticated",
            Self::Fault { .. } => "fault",
            Self::Accepted { .. } => "accepted",
            Self::Closed { .. } => "closed",
        }
    }

    /// Every name [`name`](Self::name) gives.
    pub const NAMES: [&'static str; 12] = [
        "connected",
        "command",
        "reply",
        "decision",
        "tls_started",
        "tls_failed",
        "discarded",
        "spf",
        "authenticated",
        "fault",
        "accepted",
        "closed",
    ];
}

/// A command line as qqmx read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Command {
    /// The command word.
    pub verb: Verb,
    /// The line as it came, without CRLF, cut at 512 bytes, invalid UTF-8 replaced.
    pub line: String,
    /// The path of `MAIL FROM` (empty for the null sender `<>`) or `RCPT TO`, as the
    /// policy judged it; `None` for other commands and for a line that did not parse.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// The argument of `HELO` or `EHLO`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The ESMTP parameters of `MAIL` or `RCPT` (`SIZE=1000`, `SMTPUTF8`), in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub params: Vec<Param>,
}

impl Command {
    /// A command of `verb` with no parsed arguments.
    pub fn new(verb: Verb, line: impl Into<String>) -> Self {
        Self {
            verb,
            line: line.into(),
            address: None,
            host: None,
            params: Vec::new(),
        }
    }

    /// Whether the command ends any open mail transaction before it is answered: `MAIL`
    /// (which starts a new one), `RSET`, `HELO`, `EHLO`, `STARTTLS` and `QUIT`.
    pub fn ends_transaction(&self) -> bool {
        matches!(
            self.verb,
            Verb::Mail | Verb::Rset | Verb::Helo | Verb::Ehlo | Verb::Starttls | Verb::Quit
        )
    }
}

/// One ESMTP parameter: `NAME` or `NAME=value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Param {
    /// The keyword, upper case.
    pub name: String,
    /// The value, as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Param {
    /// A parameter `name`, optionally with a value.
    pub fn new(name: impl Into<String>, value: Option<String>) -> Self {
        Self {
            name: name.into(),
            value,
        }
    }
}

/// The word that starts a command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Verb {
    /// `HELO`.
    Helo,
    /// `EHLO`.
    Ehlo,
    /// `LHLO`.
    Lhlo,
    /// `MAIL`.
    Mail,
    /// `RCPT`.
    Rcpt,
    /// `DATA`.
    Data,
    /// `BDAT`.
    Bdat,
    /// `RSET`.
    Rset,
    /// `NOOP`.
    Noop,
    /// `QUIT`.
    Quit,
    /// `VRFY`.
    Vrfy,
    /// `EXPN`.
    Expn,
    /// `HELP`.
    Help,
    /// `STARTTLS`.
    Starttls,
    /// `AUTH`.
    Auth,
    /// `ETRN`, `ATRN`, `BURL` or any word qqmx does not know.
    Other,
}

impl Verb {
    /// The verb of a command line: its first word, without regard to case.
    pub fn of_line(line: &[u8]) -> Self {
        let end = line
            .iter()
            .position(|&b| b == b' ' || b == b'\r' || b == b'\n' || b == b'\t')
            .unwrap_or(line.len());
        let word = &line[..end];
        const WORDS: [(&[u8], Verb); 15] = [
            (b"HELO", Verb::Helo),
            (b"EHLO", Verb::Ehlo),
            (b"LHLO", Verb::Lhlo),
            (b"MAIL", Verb::Mail),
            (b"RCPT", Verb::Rcpt),
            (b"DATA", Verb::Data),
            (b"BDAT", Verb::Bdat),
            (b"RSET", Verb::Rset),
            (b"NOOP", Verb::Noop),
            (b"QUIT", Verb::Quit),
            (b"VRFY", Verb::Vrfy),
            (b"EXPN", Verb::Expn),
            (b"HELP", Verb::Help),
            (b"STARTTLS", Verb::Starttls),
            (b"AUTH", Verb::Auth),
        ];
        WORDS
            .iter()
            .find(|(w, _)| word.eq_ignore_ascii_case(w))
            .map_or(Self::Other, |&(_, verb)| verb)
    }

    /// The stage whose reply answers a command of this verb, where it has one.
    pub fn stage(self) -> Option<Stage> {
        match self {
            Self::Helo | Self::Ehlo => Some(Stage::Helo),
            Self::Mail => Some(Stage::Mail),
            Self::Rcpt => Some(Stage::Rcpt),
            Self::Data => Some(Stage::Data),
            _ => None,
        }
    }
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CloseReason {
    /// The client sent `QUIT`.
    Quit,
    /// The client closed the connection.
    ClientClosed,
    /// Reading from the client failed.
    ReadFailed,
    /// Writing to the client failed.
    WriteFailed,
    /// The connection was refused at connect (a blacklist, the connection cap of an IP).
    RefusedAtConnect,
    /// The listener's connection cap was reached: `421` and close.
    TooManyConnections,
    /// The session sent more commands than `limits.max_commands`.
    TooManyCommands,
    /// The TLS handshake failed.
    TlsFailed,
    /// The TLS handshake took too long.
    TlsTimeout,
    /// `limits.session_timeout` passed.
    SessionTimeout,
    /// `limits.idle_timeout` passed without a byte from the client.
    IdleTimeout,
    /// `limits.command_timeout` passed without a complete command.
    CommandTimeout,
    /// Message data came in slower than `limits.min_data_rate`.
    DataRateTooLow,
    /// The server shut down.
    ShuttingDown,
    /// A `close` fault.
    FaultClose,
    /// A `stall` fault.
    FaultStall,
    /// A `reset` fault.
    FaultReset,
    /// An `unavailable` fault.
    FaultUnavailable,
    /// A `tls_failure` fault.
    FaultTlsFailure,
}

impl CloseReason {
    /// Whether a chaos fault closed the connection.
    pub fn is_fault(self) -> bool {
        matches!(
            self,
            Self::FaultClose
                | Self::FaultStall
                | Self::FaultReset
                | Self::FaultUnavailable
                | Self::FaultTlsFailure
        )
    }

    /// The close a fault of `kind` ends a session with, for the faults that end one.
    pub fn of_fault(kind: FaultKind) -> Option<Self> {
        match kind {
            FaultKind::Close => Some(Self::FaultClose),
            FaultKind::Stall => Some(Self::FaultStall),
            FaultKind::Reset => Some(Self::FaultReset),
            FaultKind::Unavailable => Some(Self::FaultUnavailable),
            FaultKind::TlsFailure => Some(Self::FaultTlsFailure),
            FaultKind::Tarpit | FaultKind::SlowLink | FaultKind::Greylist => None,
        }
    }

    /// The reason in words, as logs and reports give it (`client closed`).
    pub fn text(self) -> &'static str {
        match self {
            Self::Quit => "quit",
            Self::ClientClosed => "client closed",
            Self::ReadFailed => "read failed",
            Self::WriteFailed => "write failed",
            Self::RefusedAtConnect => "refused at connect",
            Self::TooManyConnections => "too many connections",
            Self::TooManyCommands => "too many commands",
            Self::TlsFailed => "TLS handshake failed",
            Self::TlsTimeout => "TLS handshake timed out",
            Self::SessionTimeout => "session timeout",
            Self::IdleTimeout => "idle timeout",
            Self::CommandTimeout => "command timeout",
            Self::DataRateTooLow => "data rate too low",
            Self::ShuttingDown => "server shutting down",
            Self::FaultClose => "fault: close",
            Self::FaultStall => "fault: stall",
            Self::FaultReset => "fault: reset",
            Self::FaultUnavailable => "fault: unavailable",
            Self::FaultTlsFailure => "fault: tls_failure",
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_read_without_case() {
        assert_eq!(Verb::of_line(b"rcpt TO:<a@qq.com>\r\n"), Verb::Rcpt);
        assert_eq!(Verb::of_line(b"StartTLS\r\n"), Verb::Starttls);
        assert_eq!(Verb::of_line(b"DATAX\r\n"), Verb::Other);
        assert_eq!(Verb::of_line(b"DATA\r\n"), Verb::Data);
        assert_eq!(Verb::of_line(b""), Verb::Other);
    }

    #[test]
    fn a_command_serialises_flat_under_its_type() {
        let mut command = Command::new(Verb::Mail, "MAIL FROM:<a@b.org> SIZE=10");
        command.address = Some("a@b.org".into());
        command.params = vec![Param::new("SIZE", Some("10".into()))];
        let json = serde_json::to_value(EventKind::Command(command)).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "type": "command",
                "verb": "mail",
                "line": "MAIL FROM:<a@b.org> SIZE=10",
                "address": "a@b.org",
                "params": [{"name": "SIZE", "value": "10"}],
            })
        );
        let closed = serde_json::to_value(EventKind::Closed {
            reason: CloseReason::FaultClose,
        })
        .expect("json");
        assert_eq!(
            closed,
            serde_json::json!({"type": "closed", "reason": "fault_close"})
        );
    }

    #[test]
    fn every_kind_has_its_name_listed() {
        let kind = EventKind::Closed {
            reason: CloseReason::Quit,
        };
        assert!(EventKind::NAMES.contains(&kind.name()));
        let json = serde_json::to_value(&kind).expect("json");
        assert_eq!(json["type"], kind.name());
    }
}
