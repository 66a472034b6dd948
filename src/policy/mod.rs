//! The policy layer: pure decisions about a sender.
//!
//! Given a [`Stage`] of the SMTP conversation and the facts known at that stage, the
//! policy returns a [`Decision`]: a [`Verdict`] and the rule that produced it, in words a
//! test can read. No I/O, no sockets, no tokio, no reading of the time except what the
//! caller passes in; the `session` layer turns verdicts into replies through the
//! catalogue and records every decision in the event log.
//!
//! Today it decides address syntax, which domains QQ serves and which mailboxes exist
//! ([`mailbox`]), and message size and recipient counts. Quotas, blacklists and content
//! rules join it here.

pub mod mailbox;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::reply::ReplyKind;

pub use mailbox::{Address, AddressError};

/// Where in the conversation a decision is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Stage {
    /// A client has connected.
    Connect,
    /// HELO or EHLO.
    Helo,
    /// MAIL FROM.
    Mail,
    /// RCPT TO.
    Rcpt,
    /// The DATA command.
    Data,
    /// The final dot of DATA.
    EndOfData,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Helo => "helo",
            Self::Mail => "mail",
            Self::Rcpt => "rcpt",
            Self::Data => "data",
            Self::EndOfData => "end_of_data",
        })
    }
}

/// What the policy wants done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "verdict", content = "reply")]
#[non_exhaustive]
pub enum Verdict {
    /// Go on.
    Accept,
    /// Refuse with this reply.
    Reject(ReplyKind),
}

/// A verdict with the rule behind it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Decision {
    /// Where it was made.
    pub stage: Stage,
    /// What to do.
    pub verdict: Verdict,
    /// The rule that decided (`mailbox.exists`, `limits.max_message_size`, ...).
    pub rule: String,
    /// Why, in words: the key, the counter and the limit where there are some.
    pub detail: String,
}

impl Decision {
    fn accept(stage: Stage, rule: &str, detail: impl Into<String>) -> Self {
        Self {
            stage,
            verdict: Verdict::Accept,
            rule: rule.to_owned(),
            detail: detail.into(),
        }
    }

    fn reject(stage: Stage, kind: ReplyKind, rule: &str, detail: impl Into<String>) -> Self {
        Self {
            stage,
            verdict: Verdict::Reject(kind),
            rule: rule.to_owned(),
            detail: detail.into(),
        }
    }

    /// Whether the verdict lets the client go on.
    pub fn is_accept(&self) -> bool {
        self.verdict == Verdict::Accept
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.verdict {
            Verdict::Accept => write!(
                f,
                "{}: accept by {}: {}",
                self.stage, self.rule, self.detail
            ),
            Verdict::Reject(kind) => write!(
                f,
                "{}: reject ({kind}) by {}: {}",
                self.stage, self.rule, self.detail
            ),
        }
    }
}

/// What is known when MAIL FROM arrives.
#[derive(Debug, Clone, Copy)]
pub struct MailFacts<'a> {
    /// The reverse path as sent, empty for the null sender.
    pub from: &'a str,
    /// The SIZE= parameter, 0 when absent.
    pub declared_size: u64,
    /// Whether SMTPUTF8 was given.
    pub smtputf8: bool,
}

/// What is known when RCPT TO arrives.
#[derive(Debug, Clone, Copy)]
pub struct RcptFacts<'a> {
    /// The forward path as sent.
    pub to: &'a str,
    /// Recipients already accepted in this transaction.
    pub accepted: usize,
    /// Whether the transaction's MAIL had SMTPUTF8.
    pub smtputf8: bool,
}

/// The sender-facing rules, built from a [`Config`].
#[derive(Debug, Clone)]
pub struct Policy {
    mailboxes: mailbox::Directory,
    max_message_size: u64,
    max_recipients: usize,
}

impl Policy {
    /// The rules `config` describes.
    pub fn new(config: &Config) -> Self {
        Self {
            mailboxes: mailbox::Directory::new(&config.mailboxes),
            max_message_size: config.limits.max_message_size,
            max_recipients: config.limits.max_recipients,
        }
    }

    /// Decides MAIL FROM.
    pub fn check_mail(&self, facts: &MailFacts<'_>) -> Decision {
        const STAGE: Stage = Stage::Mail;
        if !facts.from.is_empty()
            && let Err(e) = Address::parse(facts.from, facts.smtputf8)
        {
            let detail = format!("<{}>: {e}", facts.from);
            return Decision::reject(STAGE, ReplyKind::BadAddressSyntax, "address.syntax", detail);
        }
        if facts.declared_size > self.max_message_size {
            let detail = format!(
                "SIZE={} is over the limit of {}",
                facts.declared_size, self.max_message_size
            );
            return Decision::reject(
                STAGE,
                ReplyKind::MessageTooLarge,
                "limits.max_message_size",
                detail,
            );
        }
        Decision::accept(STAGE, "mail.ok", format!("<{}>", facts.from))
    }

    /// Decides RCPT TO.
    pub fn check_rcpt(&self, facts: &RcptFacts<'_>) -> Decision {
        const STAGE: Stage = Stage::Rcpt;
        if facts.accepted >= self.max_recipients {
            let detail = format!(
                "{} recipients already accepted, limit {}",
                facts.accepted, self.max_recipients
            );
            return Decision::reject(
                STAGE,
                ReplyKind::TooManyRecipients,
                "limits.max_recipients",
                detail,
            );
        }
        let address = match Address::parse(facts.to, facts.smtputf8) {
            Ok(address) => address,
            Err(e) => {
                let detail = format!("<{}>: {e}", facts.to);
                return Decision::reject(
                    STAGE,
                    ReplyKind::BadAddressSyntax,
                    "address.syntax",
                    detail,
                );
            }
        };
        if !self.mailboxes.serves(&address) {
            let detail = format!("{} is not a domain served by QQ", address.domain());
            return Decision::reject(STAGE, ReplyKind::RelayDenied, "mailbox.domain", detail);
        }
        match self.mailboxes.lookup(&address) {
            Some(why) => Decision::accept(STAGE, "mailbox.exists", format!("<{address}> {why}")),
            None => Decision::reject(
                STAGE,
                ReplyKind::MailboxNotFound,
                "mailbox.exists",
                format!("<{address}> {}", self.mailboxes.why_missing()),
            ),
        }
    }

    /// Decides a message whose DATA grew past the size limit.
    pub fn oversize(&self, received: u64) -> Decision {
        Decision::reject(
            Stage::EndOfData,
            ReplyKind::MessageTooLarge,
            "limits.max_message_size",
            format!(
                "more than {received} bytes received, limit {}",
                self.max_message_size
            ),
        )
    }

    /// Decides a complete message at the final dot.
    pub fn check_end_of_data(&self, size: usize) -> Decision {
        Decision::accept(Stage::EndOfData, "data.ok", format!("{size} bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Existing;

    fn policy(edit: impl FnOnce(&mut Config)) -> Policy {
        let mut config = Config::default();
        edit(&mut config);
        Policy::new(&config)
    }

    fn rcpt(p: &Policy, to: &str) -> Verdict {
        p.check_rcpt(&RcptFacts {
            to,
            accepted: 0,
            smtputf8: false,
        })
        .verdict
    }

    #[test]
    fn recipients_table() {
        use ReplyKind::*;
        use Verdict::*;
        let default = policy(|_| {});
        let hosted = policy(|c| {
            c.mailboxes.hosted_domains = vec!["Example.COM".into()];
            c.mailboxes.listed = vec!["alice@example.com".into()];
        });
        let all = policy(|c| c.mailboxes.existing = Existing::All);
        let listed = policy(|c| {
            c.mailboxes.existing = Existing::Listed;
            c.mailboxes.listed = vec!["12345@qq.com".into()];
        });
        let rows: &[(&Policy, &str, Verdict)] = &[
            (&default, "10001@qq.com", Accept),
            (&default, "12345678901@qq.com", Accept),
            (&default, "123456789012@qq.com", Reject(MailboxNotFound)),
            (&default, "1234@qq.com", Reject(MailboxNotFound)),
            (&default, "01234@qq.com", Reject(MailboxNotFound)),
            (&default, "alice@qq.com", Reject(MailboxNotFound)),
            (&default, "10001@FoxMail.com", Accept),
            (&default, "10001@vip.qq.com", Accept),
            (&default, "10001@example.com", Reject(RelayDenied)),
            (&default, "not an address", Reject(BadAddressSyntax)),
            (&default, "a@@qq.com", Reject(BadAddressSyntax)),
            (&default, "@qq.com", Reject(BadAddressSyntax)),
            (&default, "a@-qq.com", Reject(BadAddressSyntax)),
            (&default, "用户@qq.com", Reject(BadAddressSyntax)),
            (&hosted, "ALICE@example.com", Accept),
            (&hosted, "bob@example.com", Reject(MailboxNotFound)),
            (&all, "anyone@foxmail.com", Accept),
            (&all, "anyone@gmail.com", Reject(RelayDenied)),
            (&listed, "12345@qq.com", Accept),
            (&listed, "12346@qq.com", Reject(MailboxNotFound)),
        ];
        for (p, to, expected) in rows {
            assert_eq!(rcpt(p, to), *expected, "RCPT TO:<{to}>");
        }
    }

    #[test]
    fn utf8_addresses_need_smtputf8() {
        let p = policy(|c| c.mailboxes.existing = Existing::All);
        let d = p.check_rcpt(&RcptFacts {
            to: "用户@qq.com",
            accepted: 0,
            smtputf8: true,
        });
        assert_eq!(d.verdict, Verdict::Accept);
    }

    #[test]
    fn recipients_limit_is_exact() {
        let p = policy(|c| c.limits.max_recipients = 2);
        let at = |accepted| {
            p.check_rcpt(&RcptFacts {
                to: "10001@qq.com",
                accepted,
                smtputf8: false,
            })
            .verdict
        };
        assert_eq!(at(1), Verdict::Accept);
        assert_eq!(at(2), Verdict::Reject(ReplyKind::TooManyRecipients));
    }

    #[test]
    fn mail_from_table() {
        let p = policy(|c| c.limits.max_message_size = 1000);
        let mail = |from, declared_size| {
            p.check_mail(&MailFacts {
                from,
                declared_size,
                smtputf8: false,
            })
        };
        assert!(mail("", 0).is_accept(), "null sender");
        assert!(
            mail("a@example.org", 1000).is_accept(),
            "exactly at the limit"
        );
        let over = mail("a@example.org", 1001);
        assert_eq!(over.verdict, Verdict::Reject(ReplyKind::MessageTooLarge));
        assert_eq!(over.detail, "SIZE=1001 is over the limit of 1000");
        assert_eq!(
            mail("a.example.org", 0).verdict,
            Verdict::Reject(ReplyKind::BadAddressSyntax)
        );
    }
}
