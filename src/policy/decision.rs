//! What the policy returns: verdicts and decisions, and the facts it decides on.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::quota::Breach;
use super::{AuthReport, SpfCheck};
use crate::reply::ReplyKind;
use crate::units::{QuotaName, Stage, Window};

/// What the policy wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "kind")]
#[non_exhaustive]
pub enum Verdict {
    /// Go on.
    Accept,
    /// Refuse with this reply.
    Reject(ReplyKind),
    /// Send this reply and close the connection. The policy returns it only at
    /// [`Stage::Connect`] (a refusal at any other stage is a [`Reject`](Self::Reject)),
    /// which is the only stage where the session closes on it.
    Disconnect(ReplyKind),
    /// Accept the message into the junk folder (DMARC `p=quarantine`).
    Junk,
}

/// A verdict with the rule behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Decision {
    /// Where it was made.
    pub stage: Stage,
    /// What to do: in JSON, `verdict` (`accept`, `reject`, `disconnect`, `junk`) and,
    /// for a refusal, the reply's `kind`, beside the other fields.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// The rule that decided (`mailbox.exists`, `quota.ip_messages`, ...).
    pub rule: Cow<'static, str>,
    /// Why, in words.
    pub detail: String,
    /// The key a quota or list matched (`ip:127.0.0.3`, `sender:a@example.org`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The count in the window when the rule fired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counter: Option<u64>,
    /// The limit of the window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// The window whose limit was crossed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// When the block ends.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "crate::clock::rfc3339::option"
    )]
    pub until: Option<SystemTime>,
}

impl Decision {
    pub(super) fn new(
        stage: Stage,
        verdict: Verdict,
        rule: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            stage,
            verdict,
            rule: rule.into(),
            detail: detail.into(),
            key: None,
            counter: None,
            limit: None,
            window: None,
            until: None,
        }
    }

    pub(super) fn accept(stage: Stage, rule: &'static str, detail: impl Into<String>) -> Self {
        Self::new(stage, Verdict::Accept, rule, detail)
    }

    pub(super) fn reject(
        stage: Stage,
        kind: ReplyKind,
        rule: impl Into<Cow<'static, str>>,
        detail: impl Into<String>,
    ) -> Self {
        let verdict = if stage == Stage::Connect {
            Verdict::Disconnect(kind)
        } else {
            Verdict::Reject(kind)
        };
        Self::new(stage, verdict, rule, detail)
    }

    pub(super) fn keyed(mut self, key: String) -> Self {
        self.key = Some(key);
        self
    }

    pub(super) fn until(mut self, until: u64) -> Self {
        self.until = Some(UNIX_EPOCH + Duration::from_secs(until));
        self
    }

    pub(super) fn breach(mut self, breach: &Breach) -> Self {
        self.counter = Some(breach.count);
        self.limit = Some(breach.limit);
        self.window = Some(breach.window);
        self.until(breach.until)
    }

    /// Whether the verdict lets the client go on.
    pub fn is_accept(&self) -> bool {
        matches!(self.verdict, Verdict::Accept | Verdict::Junk)
    }

    /// The reply a refusal sends.
    pub fn reply(&self) -> Option<ReplyKind> {
        match self.verdict {
            Verdict::Accept | Verdict::Junk => None,
            Verdict::Reject(kind) | Verdict::Disconnect(kind) => Some(kind),
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.verdict {
            Verdict::Accept => write!(f, "{}: accept by {}", self.stage, self.rule)?,
            Verdict::Junk => write!(f, "{}: junk by {}", self.stage, self.rule)?,
            Verdict::Reject(kind) => write!(f, "{}: reject ({kind}) by {}", self.stage, self.rule)?,
            Verdict::Disconnect(kind) => {
                write!(f, "{}: disconnect ({kind}) by {}", self.stage, self.rule)?;
            }
        }
        if let Some(key) = &self.key {
            write!(f, " [{key}]")?;
        }
        write!(f, ": {}", self.detail)
    }
}

/// What is known about the client and the transaction at a stage.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Facts<'a> {
    /// The client's address.
    pub ip: IpAddr,
    /// The reverse path once MAIL was accepted (empty for the null sender).
    pub from: Option<&'a str>,
    /// The SIZE= parameter of MAIL, 0 when absent.
    pub declared_size: u64,
    /// Whether MAIL had SMTPUTF8.
    pub smtputf8: bool,
    /// Recipients accepted so far.
    pub rcpts: &'a [String],
    /// At RCPT: the recipient being decided.
    pub rcpt: Option<&'a str>,
    /// At the end of data: the message as received.
    pub message: Option<&'a [u8]>,
    /// From MAIL on: SPF for the envelope sender.
    pub spf: Option<&'a SpfCheck>,
    /// At MAIL, when a PTR record is required: whether the client's address has one that
    /// resolves back to it.
    pub ptr_matches: Option<bool>,
    /// At the end of data: DKIM and DMARC.
    pub auth: Option<&'a AuthReport>,
}

impl<'a> Facts<'a> {
    /// Facts about a client at `ip` before any transaction.
    pub fn new(ip: IpAddr) -> Self {
        Self {
            ip,
            from: None,
            declared_size: 0,
            smtputf8: false,
            rcpts: &[],
            rcpt: None,
            message: None,
            spf: None,
            ptr_matches: None,
            auth: None,
        }
    }

    /// With the reverse path.
    pub fn from(mut self, from: &'a str) -> Self {
        self.from = Some(from);
        self
    }

    /// With the SIZE= and SMTPUTF8 parameters of MAIL.
    pub fn mail_params(mut self, declared_size: u64, smtputf8: bool) -> Self {
        self.declared_size = declared_size;
        self.smtputf8 = smtputf8;
        self
    }

    /// With the recipients accepted so far.
    pub fn rcpts(mut self, rcpts: &'a [String]) -> Self {
        self.rcpts = rcpts;
        self
    }

    /// With the recipient being decided.
    pub fn rcpt(mut self, rcpt: &'a str) -> Self {
        self.rcpt = Some(rcpt);
        self
    }

    /// With the message.
    pub fn message(mut self, message: &'a [u8]) -> Self {
        self.message = Some(message);
        self
    }

    /// With the SPF result of the envelope sender.
    pub fn spf(mut self, spf: &'a SpfCheck) -> Self {
        self.spf = Some(spf);
        self
    }

    /// With whether the client's PTR record resolves back to it.
    pub fn ptr_matches(mut self, matches: bool) -> Self {
        self.ptr_matches = Some(matches);
        self
    }

    /// With the DKIM and DMARC results of the message.
    pub fn auth(mut self, report: &'a AuthReport) -> Self {
        self.auth = Some(report);
        self
    }
}

/// The decisions of a new connection.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Connect {
    /// Accept, or disconnect with a reply instead of the greeting.
    pub decision: Decision,
    /// Refusals decided now but answered at a later stage (`Connection frequency
    /// limited` at the end of data, as QQ does).
    pub deferred: Vec<Decision>,
}

/// A block in force, for inspection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct BlockInfo {
    /// The quota.
    pub quota: QuotaName,
    /// The blocked key, as decisions name it (`ip:127.0.0.3`, `sender:a@example.org`).
    pub key: String,
    /// The window whose limit was crossed.
    pub window: Option<Window>,
    /// When it ends.
    #[serde(with = "crate::clock::rfc3339")]
    pub until: SystemTime,
    /// Refusals since it began.
    pub refused: u64,
}
