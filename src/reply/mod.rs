//! The reply catalogue: every line qqmx ever sends.
//!
//! Each [`ReplyKind`] has one template per QQ [`Generation`]; a [`Catalogue`] picks the
//! generation's templates, applies overrides from the config and fills in the tokens. The
//! `session` layer asks for a kind and writes what it gets; no reply text is written
//! anywhere else. Decisions about *which* kind to send live in `policy`.
//!
//! Templates are the verbatim lines of `qq-reference.md` where QQ's text is known; the
//! rest are assumptions. Which is which, for every kind in every generation and for the
//! stage each kind is sent at, is in [`crate::provenance`] (`qqmx replies`, the README).
//! The `mxbiz1` listener answers with exmail's [`Profile`]. Placeholders:
//!
//! | placeholder | filled with |
//! |---|---|
//! | `{host}` | the banner host name (`newxmmxszc23-0.qq.com`) |
//! | `{ip}` | the client's address |
//! | `{b64}` | a 68-character tracking token starting with `M` (the `IP:` style) |
//! | `{b64short}` | a 56-character tracking token (the `Blocked IP` style) |
//! | `{size}` | the SIZE limit |
//! | `{n}` | the recipients accepted in the transaction so far (in `250` to RCPT, the recipient's ordinal) |
//!
//! A template may span several lines (the EHLO reply); its lines are separated by `\n`.
//! When STARTTLS is not on offer (inside TLS, or with TLS switched off), a line that reads
//! exactly `250-STARTTLS` is left out, and the word `STARTTLS` is taken out of a `214`
//! (HELP) line.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

mod catalogue;
mod templates;

pub use catalogue::{Catalogue, TemplateError, token};
pub use templates::{exmail_template, template};

/// Which era of QQ's MX front-ends to imitate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Generation {
    /// `newmx` hosts (until about 2018): no final dots, old help URLs.
    G2017,
    /// `newxmmx` hosts (2019 on): `[<token> Blocked IP <ip>]` in frequency replies.
    G2019,
    /// Current behaviour: 8BITMIME and SMTPUTF8 in EHLO, `IP:` tokens, new help URLs.
    #[default]
    G2025,
}

impl Generation {
    /// The year as written in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::G2017 => "2017",
            Self::G2019 => "2019",
            Self::G2025 => "2025",
        }
    }

    /// The banner host name seen on the real fleet in this generation.
    pub fn default_host(self) -> &'static str {
        match self {
            Self::G2017 => "newmx17.qq.com",
            Self::G2019 => "newxmmxsza22.qq.com",
            Self::G2025 => "newxmmxszc23-0.qq.com",
        }
    }

    /// The banner host name a simulated MX host (`mx1`, `mx2`, `mx3`, `mxbiz1`) answers
    /// with in this generation; `None` for other names. The names are front-end hosts seen
    /// on the real fleet; the pairings seen in `qq-reference.md` are mx1 `newmx17` (2017),
    /// mx2 `newmx33` (2018), mx3 `newxmmxsza22` (2019) and `newxmmxszc23-0` (2025), mxbiz1
    /// `bizmx17` (2018). The others are assumptions: `mx1` answers with
    /// [`default_host`](Self::default_host), the name seen in that generation.
    pub fn mx_host(self, mx: &str) -> Option<&'static str> {
        let host = match (self, mx) {
            (_, "mx1") => self.default_host(),
            (Self::G2017, "mx2") => "newmx33.qq.com",
            (Self::G2017, "mx3") => "newmx59.qq.com",
            (Self::G2019, "mx2") => "newxmmxszc27.qq.com",
            (Self::G2019, "mx3") => "newxmmxsza22.qq.com",
            (Self::G2025, "mx2") => "newxmmxszc27.qq.com",
            (Self::G2025, "mx3") => "newxmmxszc23-0.qq.com",
            (_, "mxbiz1") => "bizmx17.qq.com",
            _ => return None,
        };
        Some(host)
    }

    /// Every generation, oldest first.
    pub const ALL: [Generation; 3] = [Self::G2017, Self::G2019, Self::G2025];
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A generation that is not `2017`, `2019` or `2025`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown generation `{0}`, expected \"2017\", \"2019\" or \"2025\"")]
pub struct GenerationError(pub String);

impl std::str::FromStr for Generation {
    type Err = GenerationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "2017" => Ok(Self::G2017),
            "2019" => Ok(Self::G2019),
            "2025" => Ok(Self::G2025),
            other => Err(GenerationError(other.to_owned())),
        }
    }
}

impl Serialize for Generation {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Generation {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Generation;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"2017\", \"2019\" or \"2025\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Generation, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Generation, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(Visitor)
    }
}

macro_rules! kinds {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal, )*) => {
        /// Every kind of line qqmx can send.
        ///
        /// The names (`mailbox_not_found`, ...) are used in config overrides, events and
        /// expectations.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum ReplyKind {
            $( $(#[$doc])* #[serde(rename = $name)] $variant, )*
        }

        impl ReplyKind {
            /// Every kind, in catalogue order.
            pub const ALL: &'static [ReplyKind] = &[$(ReplyKind::$variant,)*];

            /// The snake_case name used in configs and events.
            pub fn name(self) -> &'static str {
                match self { $(ReplyKind::$variant => $name,)* }
            }
        }
    };
}

kinds! {
    /// `220` greeting on connect.
    Greeting => "greeting",
    /// The multi-line answer to EHLO.
    Ehlo => "ehlo",
    /// The answer to HELO.
    Helo => "helo",
    /// MAIL accepted.
    MailOk => "mail_ok",
    /// RCPT accepted.
    RcptOk => "rcpt_ok",
    /// `354` after DATA.
    DataStart => "data_start",
    /// Message accepted at end of data.
    Queued => "queued",
    /// Answer to QUIT.
    Bye => "bye",
    /// Answer to RSET.
    RsetOk => "rset_ok",
    /// Answer to NOOP.
    NoopOk => "noop_ok",
    /// Answer to VRFY.
    Vrfy => "vrfy",
    /// Answer to HELP.
    Help => "help",
    /// `220` before the TLS handshake.
    StartTlsReady => "starttls_ready",
    /// STARTTLS when TLS is switched off.
    TlsUnavailable => "tls_unavailable",
    /// STARTTLS inside TLS.
    TlsActive => "tls_active",
    /// A command QQ does not implement, or an unknown one.
    NotImplemented => "not_implemented",
    /// A known command with broken syntax.
    SyntaxError => "syntax_error",
    /// A MAIL or RCPT parameter that is not supported.
    UnsupportedParameter => "unsupported_parameter",
    /// MAIL before HELO/EHLO.
    NeedHelo => "need_helo",
    /// RCPT or DATA before MAIL.
    NeedMail => "need_mail",
    /// DATA before any accepted RCPT.
    NeedRcpt => "need_rcpt",
    /// A command line over the line-length limit.
    LineTooLong => "line_too_long",
    /// More recipients than the per-transaction limit.
    TooManyRecipients => "too_many_recipients",
    /// More commands than the per-session limit; the connection is closed.
    TooManyCommands => "too_many_commands",
    /// Idle or session timeout; the connection is closed.
    Timeout => "timeout",
    /// The server is shutting down; the connection is closed.
    ShuttingDown => "shutting_down",
    /// RCPT to a domain that QQ does not serve.
    RelayDenied => "relay_denied",
    /// `Mailbox not found`: no such user.
    MailboxNotFound => "mailbox_not_found",
    /// `Mailbox unavailable or access denied`: the recipient receives too much.
    MailboxUnavailable => "mailbox_unavailable",
    /// `Ip frequency limited`: per-IP quota, or a blacklisted IP.
    IpFrequency => "ip_frequency",
    /// `Connection frequency limited`.
    ConnectionFrequency => "connection_frequency",
    /// `Sender frequency limited`.
    SenderFrequency => "sender_frequency",
    /// `Domain frequency limited`.
    DomainFrequency => "domain_frequency",
    /// `Connection denied`: an IP far over its limits.
    ConnectionDenied => "connection_denied",
    /// `Mail content denied`: bulk content.
    ContentDenied => "content_denied",
    /// `Mail is rejected by recipients`: a personal blacklist.
    RejectedByRecipients => "rejected_by_recipients",
    /// `SPF check failed` at MAIL, for a forged sender in one of QQ's own domains.
    SpfFailed => "spf_failed",
    /// `SPF check failed` at the end of data, for a sender outside QQ's domains.
    SpfFailedOther => "spf_failed_other",
    /// `DMARC check failed`.
    DmarcFailed => "dmarc_failed",
    /// `Suspected spam sender.`
    SuspectedSpamSender => "suspected_spam_sender",
    /// `Suspected spam ip`.
    SuspectedSpamIp => "suspected_spam_ip",
    /// `Suspected spam`.
    SuspectedSpam => "suspected_spam",
    /// `Suspected bounce attacks`: backscatter.
    BounceAttack => "bounce_attack",
    /// `Spam is embedded in the email`.
    SpamEmbedded => "spam_embedded",
    /// `Bad address syntax`.
    BadAddressSyntax => "bad_address_syntax",
    /// `Message too large`.
    MessageTooLarge => "message_too_large",
    /// Recipient-side receiving rate.
    RecipientRate => "recipient_rate",
    /// exmail's `Mime from domain is a local domain`.
    MimeFromLocal => "mime_from_local",
    /// `Error: mail rejected by antispam server`: listed for QQ by bounce rule sets, trigger
    /// unknown; reachable from a content phrase (`content.phrases`).
    Antispam => "antispam",
    /// Exmail's `Mailbox not found` (a hosted customer domain), on exmail's help host.
    ExmailMailboxNotFound => "exmail_mailbox_not_found",
    /// Exmail's `Mail content denied`.
    ExmailContentDenied => "exmail_content_denied",
    /// Exmail's `Sender frequency limited`.
    ExmailSenderFrequency => "exmail_sender_frequency",
    /// Exmail's `Bad address syntax`.
    ExmailBadAddressSyntax => "exmail_bad_address_syntax",
    /// A client without a PTR record that resolves back to it (`auth.require_ptr`; the
    /// text is an assumption that keeps `Connection denied` for bounce classifiers).
    NoPtr => "no_ptr",
    /// `451` for the first attempts of a message under a `greylist` fault. QQ has not
    /// been seen greylisting; the text is an assumption.
    Greylisted => "greylisted",
    /// `451` for DATA, or at the end of data, when the messages in flight fill
    /// `limits.max_inflight_bytes`, as a busy MX answers. QQ's text is unknown; the text
    /// is an assumption.
    SystemBusy => "system_busy",
    /// `421` to a connection over `limits.max_connections`, which is then closed. QQ's
    /// text is unknown; the text is an assumption in the style of its other `421`s.
    TooManyConnections => "too_many_connections",
    /// `451` at any stage while the shared policy state (`[state] backend = "redis"`)
    /// cannot be reached; the client is to try again. qqmx's own condition, not QQ's: the
    /// text is an assumption in the style of `system_busy`.
    StateUnavailable => "state_unavailable",
}

impl fmt::Display for ReplyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A rendered reply, ready for the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    /// What the reply means.
    pub kind: ReplyKind,
    /// The three-digit code.
    pub code: u16,
    /// The full text, lines joined by `\r\n`, without the final CRLF.
    pub text: String,
}

impl Reply {
    /// Whether the code is 2xx or 3xx.
    pub fn is_positive(&self) -> bool {
        self.code < 400
    }
}

/// What the renderer needs to know about the session.
#[derive(Debug, Clone, Copy)]
pub struct Context {
    /// The client's address.
    pub ip: IpAddr,
    /// The recipients accepted in the open transaction so far, for `{n}`.
    pub n: usize,
    /// Whether STARTTLS is on offer (false inside TLS or when TLS is off).
    pub starttls: bool,
}

/// Which of Tencent's services a listener answers as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// QQ Mail's MX fleet (`mx1`..`mx3`): the generation's templates.
    #[default]
    Qq,
    /// Tencent Exmail's front end for hosted customer domains (`mxbiz1`): the 2018
    /// `bizmx17` transcript in every generation, and exmail's texts and help host.
    Exmail,
}

impl ReplyKind {
    /// The exmail variant of this kind (`mailbox_not_found` becomes
    /// `exmail_mailbox_not_found`, ...), or the kind itself when exmail has none.
    pub fn exmail(self) -> Self {
        match self {
            Self::MailboxNotFound => Self::ExmailMailboxNotFound,
            Self::ContentDenied => Self::ExmailContentDenied,
            Self::SenderFrequency => Self::ExmailSenderFrequency,
            Self::BadAddressSyntax => Self::ExmailBadAddressSyntax,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests;
