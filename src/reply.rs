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

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

use base64::Engine as _;
use rand::RngCore;
use serde::{Deserialize, Serialize};

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

impl std::str::FromStr for Generation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "2017" => Ok(Self::G2017),
            "2019" => Ok(Self::G2019),
            "2025" => Ok(Self::G2025),
            other => Err(format!(
                "unknown generation `{other}`, expected \"2017\", \"2019\" or \"2025\""
            )),
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
}

impl fmt::Display for ReplyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

macro_rules! old_url {
    ($no:literal) => {
        concat!(
            "http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=",
            $no
        )
    };
}

macro_rules! exmail_url {
    ($no:literal) => {
        concat!(
            "http://service.exmail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=",
            $no
        )
    };
}

macro_rules! new_url {
    ($n:literal) => {
        concat!("https://service.mail.qq.com/detail/122/", $n)
    };
}

const DMARC_TEXT: &str =
    "550 DMARC check failed. http://service.mail.qq.com/cgi-bin/help?subtype=1&&no=1001508&&id=16.";

/// The built-in template of `kind` in `generation`.
pub fn template(kind: ReplyKind, generation: Generation) -> &'static str {
    use Generation::*;
    use ReplyKind::*;
    match (kind, generation) {
        (Greeting, G2017) => "220 {host} MX QQ Mail Server",
        (Greeting, _) => "220 {host} MX QQ Mail Server.",
        (Ehlo, G2017) => "250-{host}\n250-SIZE {size}\n250-STARTTLS\n250 OK",
        (Ehlo, G2019) => "250-{host}\n250-STARTTLS\n250-SIZE {size}\n250 OK",
        (Ehlo, G2025) => {
            "250-{host}\n250-STARTTLS\n250-8BITMIME\n250-SMTPUTF8\n250-SIZE {size}\n250 OK"
        }
        (Helo, _) => "250 {host}",
        (MailOk, G2017) => "250 Ok",
        (MailOk, _) => "250 OK.",
        (RcptOk, G2017) => "250 Ok",
        (RcptOk, _) => "250 OK {n}",
        (DataStart, G2017) => "354 End data with <CR><LF>.<CR><LF>",
        (DataStart, _) => "354 End data with <CR><LF>.<CR><LF>.",
        (Queued, _) => "250 Ok: queued as ",
        (Bye, G2017) => "221 Bye",
        (Bye, _) => "221 Bye.",
        (RsetOk | NoopOk, G2017) => "250 Ok",
        (RsetOk | NoopOk, _) => "250 OK",
        (Vrfy, _) => "252 Cannot VRFY user, but will accept message and attempt delivery",
        (Help, _) => "214 HELO EHLO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT STARTTLS",
        (StartTlsReady, _) => "220 Ready to start TLS",
        (TlsUnavailable, _) => "454 TLS not available due to temporary reason",
        (TlsActive, _) => "503 Error: TLS already active",
        (NotImplemented, _) => "502 Error: command not implemented",
        (SyntaxError, _) => "501 Error: bad syntax",
        (UnsupportedParameter, _) => "555 Error: unsupported parameter",
        (NeedHelo, _) => "503 Error: send HELO/EHLO first",
        (NeedMail, _) => "503 Error: need MAIL command",
        (NeedRcpt, _) => "503 Error: need RCPT command",
        (LineTooLong, _) => "500 Error: line too long",
        (TooManyRecipients, _) => "452 Error: too many recipients",
        (TooManyCommands, _) => "421 {host} Error: too many commands",
        (Timeout, _) => "421 {host} Error: timeout exceeded",
        (ShuttingDown, _) => "421 {host} Service not available, closing transmission channel",
        (RelayDenied, _) => "550 Relay access denied",
        (Greylisted, _) => "451 Greylisted, please try again later",
        (SystemBusy, _) => "451 Error: system busy, try again later",
        (TooManyConnections, _) => "421 {host} Error: too many connections",

        (MailboxNotFound, G2025) => {
            "550 Mailbox not found. http://service.mail.qq.com/detail/122/169 [{b64} IP: {ip}]"
        }
        (MailboxNotFound, _) => concat!("550 Mailbox not found. ", old_url!("1000728")),
        (MailboxUnavailable, G2025) => "550 Mailbox unavailable or access denied [{b64} IP: {ip}]",
        // The second variant in qq-reference.md: an http URL of the new kind, no token.
        // (no=1000742 is disputed and was never seen in this text.)
        (MailboxUnavailable, _) => {
            "550 Mailbox unavailable or access denied. http://service.mail.qq.com/detail/122/166"
        }
        (IpFrequency, G2017) => concat!("550 Ip frequency limited. ", old_url!("1000725")),
        (IpFrequency, G2019) => concat!(
            "550 Ip frequency limited [{b64short} Blocked IP {ip}]. ",
            old_url!("1000725")
        ),
        (IpFrequency, G2025) => {
            concat!(
                "550 Ip frequency limited [{b64} IP: {ip}]. ",
                new_url!("172"),
                "."
            )
        }
        (ConnectionFrequency, G2017) => {
            concat!("550 Connection frequency limited. ", old_url!("1000722"))
        }
        (ConnectionFrequency, G2019) => concat!(
            "550 Connection frequency limited [{b64short} Blocked IP {ip}]. ",
            old_url!("1000722")
        ),
        (ConnectionFrequency, G2025) => concat!(
            "550 Connection frequency limited [{b64} IP: {ip}]. ",
            new_url!("175"),
            "."
        ),
        (SenderFrequency, G2017) => concat!("550 Sender frequency limited. ", old_url!("1000723")),
        (SenderFrequency, G2019) => concat!(
            "550 Sender frequency limited [{b64short} Blocked IP {ip}]. ",
            old_url!("1000723")
        ),
        (SenderFrequency, G2025) => concat!(
            "550 Sender frequency limited [{b64} IP: {ip}]. ",
            new_url!("174"),
            "."
        ),
        (DomainFrequency, G2017) => "550 Domain frequency limited",
        (DomainFrequency, G2019) => "550 Domain frequency limited [{b64short} Blocked IP {ip}]",
        (DomainFrequency, G2025) => concat!(
            "550 Domain frequency limited [{b64} IP: {ip}]. ",
            new_url!("173"),
            "."
        ),
        (ConnectionDenied, G2025) => {
            concat!(
                "550 Connection denied [{b64} IP: {ip}]. ",
                new_url!("170"),
                "."
            )
        }
        (ConnectionDenied, _) => "550 Connection denied",
        (ContentDenied, G2025) => {
            concat!(
                "550 Mail content denied [{b64} IP: {ip}]. ",
                new_url!("171"),
                "."
            )
        }
        (ContentDenied, _) => concat!("550 Mail content denied. ", old_url!("1000726")),
        (RejectedByRecipients, G2025) => {
            "550 Mail is rejected by recipients [{b64} IP: {ip}]. https://service.mail.qq.com/detail/0/92."
        }
        // Seen bare, without a year; no URL-bearing old form is known.
        (RejectedByRecipients, _) => "550 Mail is rejected by recipients",
        (SpfFailed, G2025) => concat!(
            "550 SPF check failed. ",
            old_url!("1001445"),
            " [{b64} IP: {ip}]"
        ),
        (SpfFailed | SpfFailedOther, G2017 | G2019) => {
            concat!("550 SPF check failed. ", old_url!("1001445"))
        }
        // Two spaces before `IP:`, as QQ sends it.
        (SpfFailedOther, G2025) => concat!(
            "550 SPF check failed [{b64}  IP: {ip}]. ",
            new_url!("72"),
            "."
        ),
        (DmarcFailed, _) => DMARC_TEXT,
        // qq-reference.md: no URL with this one, although its old help number is known.
        (SuspectedSpamSender, _) => "550 Suspected spam sender.",
        (SuspectedSpamIp, G2025) => {
            concat!(
                "550 Suspected spam ip [{b64} IP: {ip}]. ",
                new_url!("66"),
                "."
            )
        }
        (SuspectedSpamIp, _) => "550 Suspected spam ip",
        (SuspectedSpam, G2025) => {
            concat!("550 Suspected spam [{b64} IP: {ip}]. ", new_url!("71"), ".")
        }
        (SuspectedSpam, _) => "550 Suspected spam",
        (BounceAttack, G2025) => concat!(
            "550 Suspected bounce attacks [{b64}]. ",
            new_url!("57"),
            "."
        ),
        (BounceAttack, _) => concat!("550 Suspected bounce attacks. ", old_url!("1001602")),
        (SpamEmbedded, G2025) => concat!(
            "550 Spam is embedded in the email [{b64} IP: {ip}]. ",
            new_url!("59"),
            "."
        ),
        (SpamEmbedded, _) => "550 Spam is embedded in the email",
        (BadAddressSyntax, G2025) => {
            concat!(
                "501 Bad address syntax [{b64} IP: {ip}]. ",
                new_url!("167"),
                "."
            )
        }
        (BadAddressSyntax, _) => concat!("501 Bad address syntax. ", old_url!("1000730")),
        (MessageTooLarge, G2025) => {
            concat!(
                "552 Message too large [{b64} IP: {ip}]. ",
                new_url!("168"),
                "."
            )
        }
        (MessageTooLarge, _) => "552 Message too large",
        (RecipientRate, G2025) => concat!(
            "550 The frequency of receiving messages is limited [{b64} IP: {ip}]. ",
            new_url!("1011"),
            "."
        ),
        (RecipientRate, _) => "550 The frequency of receiving messages is limited",
        (MimeFromLocal, _) => "550 Mime from domain is a local domain",
        (Antispam, _) => "550 Error: mail rejected by antispam server",
        (ExmailMailboxNotFound, _) => concat!("550 Mailbox not found. ", exmail_url!("1000728")),
        (ExmailContentDenied, G2025) => {
            "550 Mail content denied [{b64} IP: {ip}]. https://open.work.weixin.qq.com/help2/pc/20056."
        }
        (ExmailContentDenied, _) => concat!("550 Mail content denied. ", exmail_url!("1000726")),
        (ExmailSenderFrequency, _) => {
            concat!("550 Sender frequency limited. ", exmail_url!("1000723"))
        }
        (ExmailBadAddressSyntax, _) => {
            concat!("501 Bad address syntax. ", exmail_url!("1000730"))
        }
        (NoPtr, _) => "550 Connection denied: {ip} has no PTR record",
    }
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

/// The template of `kind` on exmail's front end where it differs from
/// [`template`]: the lines of the 2018 `bizmx17` transcript, in every generation (no
/// newer one is known).
pub fn exmail_template(kind: ReplyKind) -> Option<&'static str> {
    use ReplyKind::*;
    Some(match kind {
        Greeting => "220 {host} MX QQ Mail Server",
        Ehlo => "250-{host}\n250-SIZE {size}\n250-STARTTLS\n250 OK",
        MailOk | RcptOk => "250 Ok",
        DataStart => "354 End data with <CR><LF>.<CR><LF>",
        _ => return None,
    })
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

/// Why an override cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("reply `{kind}`: {problem}")]
pub struct TemplateError {
    /// The kind whose template is wrong.
    pub kind: ReplyKind,
    /// What is wrong with it.
    pub problem: String,
}

/// The templates of one generation with the config's overrides applied.
#[derive(Debug, Clone)]
pub struct Catalogue {
    generation: Generation,
    host: String,
    size: u64,
    profile: Profile,
    overrides: HashMap<ReplyKind, String>,
}

impl Catalogue {
    /// A catalogue for `generation`, announcing `host` and SIZE `size`.
    pub fn new(generation: Generation, host: impl Into<String>, size: u64) -> Self {
        Self {
            generation,
            host: host.into(),
            size,
            profile: Profile::Qq,
            overrides: HashMap::new(),
        }
    }

    /// The same catalogue answering as `profile`.
    #[must_use]
    pub fn with_profile(mut self, profile: Profile) -> Self {
        self.profile = profile;
        self
    }

    /// The profile in use.
    pub fn profile(&self) -> Profile {
        self.profile
    }

    /// The kind actually sent when `kind` is asked for: its exmail variant under the
    /// exmail profile.
    pub fn effective(&self, kind: ReplyKind) -> ReplyKind {
        match self.profile {
            Profile::Qq => kind,
            Profile::Exmail => kind.exmail(),
        }
    }

    /// Replaces the template of `kind`.
    ///
    /// # Errors
    ///
    /// When the template does not start with a three-digit code from 200 to 599 followed
    /// by a space or (on all but the last line) a dash, or names an unknown placeholder,
    /// or opens a placeholder with `{` and never closes it.
    pub fn set_override(&mut self, kind: ReplyKind, template: &str) -> Result<(), TemplateError> {
        validate(kind, template)?;
        self.overrides.insert(kind, template.to_owned());
        Ok(())
    }

    /// The generation in use.
    pub fn generation(&self) -> Generation {
        self.generation
    }

    /// The banner host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The template in force for `kind` (for its [`effective`](Self::effective) kind).
    pub fn template(&self, kind: ReplyKind) -> &str {
        let kind = self.effective(kind);
        if let Some(text) = self.overrides.get(&kind) {
            return text;
        }
        match self.profile {
            Profile::Exmail => {
                exmail_template(kind).unwrap_or_else(|| template(kind, self.generation))
            }
            Profile::Qq => template(kind, self.generation),
        }
    }

    /// Renders `kind` (as its [`effective`](Self::effective) kind), drawing tracking
    /// tokens from `rng`.
    pub fn render(&self, kind: ReplyKind, ctx: &Context, rng: &mut impl RngCore) -> Reply {
        let template = self.template(kind);
        let kind = self.effective(kind);
        let mut text = String::with_capacity(template.len() + 64);
        for line in template.split('\n') {
            if !ctx.starttls && line == "250-STARTTLS" {
                continue;
            }
            if !text.is_empty() {
                text.push_str("\r\n");
            }
            if !ctx.starttls && (line.starts_with("214 ") || line.starts_with("214-")) {
                let help: Vec<&str> = line.split(' ').filter(|w| *w != "STARTTLS").collect();
                self.fill(&help.join(" "), ctx, rng, &mut text);
            } else {
                self.fill(line, ctx, rng, &mut text);
            }
        }
        let code = text
            .get(..3)
            .and_then(|c| c.parse().ok())
            .expect("templates are validated to start with a code");
        Reply { kind, code, text }
    }

    fn fill(&self, line: &str, ctx: &Context, rng: &mut impl RngCore, out: &mut String) {
        use std::fmt::Write as _;
        let mut rest = line;
        while let Some(start) = rest.find('{') {
            out.push_str(&rest[..start]);
            let after = &rest[start..];
            let Some(end) = after.find('}') else {
                out.push_str(after);
                return;
            };
            match &after[1..end] {
                "host" => out.push_str(&self.host),
                "ip" => {
                    let _ = write!(out, "{}", ctx.ip);
                }
                "b64" => out.push_str(&token(rng, 49)),
                "b64short" => out.push_str(&token(rng, 40)),
                "size" => {
                    let _ = write!(out, "{}", self.size);
                }
                "n" => {
                    let _ = write!(out, "{}", ctx.n);
                }
                _ => out.push_str(&after[..=end]),
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
    }
}

const PLACEHOLDERS: [&str; 6] = ["host", "ip", "b64", "b64short", "size", "n"];

fn validate(kind: ReplyKind, template: &str) -> Result<(), TemplateError> {
    let problem = |p: String| TemplateError { kind, problem: p };
    let lines: Vec<&str> = template.split('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let last = i + 1 == lines.len();
        let code_ok = line
            .get(..3)
            .and_then(|c| c.parse::<u16>().ok())
            .is_some_and(|c| (200..600).contains(&c));
        let sep = line.as_bytes().get(3).copied();
        let sep_ok = match sep {
            Some(b' ') => last,
            Some(b'-') => !last,
            None => last && line.len() == 3,
            _ => false,
        };
        if !code_ok || !sep_ok {
            return Err(problem(format!(
                "line {} must start with a code from 200 to 599 and then a space \
                 (or a dash on all but the last line): {line:?}",
                i + 1
            )));
        }
        if line.contains('\r') {
            return Err(problem("lines are separated by \\n only".into()));
        }
        // RFC 5321 reply text is printable characters and tabs: anything else (NUL, ESC,
        // DEL, C1 controls) would reach the client's terminal or log as it is.
        if let Some(c) = line.chars().find(|c| c.is_control() && *c != '\t') {
            return Err(problem(format!(
                "line {} holds the control character {:?}; reply text is printable \
                 characters and tabs",
                i + 1,
                c
            )));
        }
        let mut rest = *line;
        while let Some(start) = rest.find('{') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('}') else {
                return Err(problem(format!(
                    "unterminated placeholder `{{{after}`, expected one of {}",
                    PLACEHOLDERS.join(", ")
                )));
            };
            let name = &after[..end];
            if !PLACEHOLDERS.contains(&name) {
                return Err(problem(format!(
                    "unknown placeholder `{{{name}}}`, expected one of {}",
                    PLACEHOLDERS.join(", ")
                )));
            }
            rest = &after[end + 1..];
        }
    }
    Ok(())
}

/// A base64 tracking token of `bytes` random bytes whose first character is `M`.
///
/// 49 bytes give QQ's 68-character `IP:` style token (ending in `==`); 40 bytes give the
/// 56-character `Blocked IP` style.
pub fn token(rng: &mut impl RngCore, bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rng.fill_bytes(&mut raw);
    if let Some(first) = raw.first_mut() {
        // The first base64 character is the top six bits: 12 is `M`.
        *first = (12 << 2) | (*first & 0b11);
    }
    base64::engine::general_purpose::STANDARD.encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    fn ctx() -> Context {
        Context {
            ip: "60.233.9.39".parse().expect("ip"),
            n: 1,
            starttls: true,
        }
    }

    #[test]
    fn every_built_in_template_is_valid_in_every_generation() {
        for &kind in ReplyKind::ALL {
            for generation in [Generation::G2017, Generation::G2019, Generation::G2025] {
                assert_eq!(validate(kind, template(kind, generation)), Ok(()), "{kind}");
            }
        }
    }

    const GENERATIONS: [Generation; 3] = [Generation::G2017, Generation::G2019, Generation::G2025];

    #[test]
    fn suspected_spam_sender_is_qqs_text_alone() {
        for generation in GENERATIONS {
            assert_eq!(
                template(ReplyKind::SuspectedSpamSender, generation),
                "550 Suspected spam sender.",
                "{generation}"
            );
        }
    }

    #[test]
    fn old_mailbox_unavailable_has_the_detail_url_qq_gives() {
        for generation in [Generation::G2017, Generation::G2019] {
            assert_eq!(
                template(ReplyKind::MailboxUnavailable, generation),
                "550 Mailbox unavailable or access denied. http://service.mail.qq.com/detail/122/166",
                "{generation}"
            );
        }
    }

    #[test]
    fn tokens_have_qq_shape() {
        let mut rng = StdRng::seed_from_u64(7);
        let long = token(&mut rng, 49);
        assert_eq!(long.len(), 68);
        assert!(long.starts_with('M') && long.ends_with("=="));
        let short = token(&mut rng, 40);
        assert_eq!(short.len(), 56);
        assert!(short.starts_with('M'));
        // The token seen in QQ's 2025 SPF rejection has the same shape.
        let seen = "MPdC3ariWK7GZndWaXfsa4eLTsQMO+LiHnoPqVrDu0UG6GBeQl5+eZOslGc9ekY1xQ==";
        assert_eq!(seen.len(), long.len());
    }

    #[test]
    fn renders_the_2025_spf_rejection_like_qq() {
        let cat = Catalogue::new(Generation::G2025, "newxmmxszc23-0.qq.com", 73_400_320);
        let mut rng = StdRng::seed_from_u64(1);
        let reply = cat.render(ReplyKind::SpfFailed, &ctx(), &mut rng);
        assert_eq!(reply.code, 550);
        let prefix = "550 SPF check failed. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1001445 [";
        assert!(reply.text.starts_with(prefix), "{}", reply.text);
        assert!(reply.text.ends_with(" IP: 60.233.9.39]"), "{}", reply.text);
        assert_eq!(
            reply.text.len(),
            prefix.len() + 68 + " IP: 60.233.9.39]".len()
        );
    }

    #[test]
    fn ehlo_drops_starttls_when_not_offered() {
        let cat = Catalogue::new(Generation::G2019, "newxmmxsza22.qq.com", 73_400_320);
        let mut rng = StdRng::seed_from_u64(1);
        let no_tls = Context {
            starttls: false,
            ..ctx()
        };
        let reply = cat.render(ReplyKind::Ehlo, &no_tls, &mut rng);
        assert_eq!(
            reply.text,
            "250-newxmmxsza22.qq.com\r\n250-SIZE 73400320\r\n250 OK"
        );
    }

    #[test]
    fn help_drops_starttls_when_not_offered() {
        let cat = Catalogue::new(Generation::G2025, "h", 1);
        let mut rng = StdRng::seed_from_u64(1);
        let no_tls = Context {
            starttls: false,
            ..ctx()
        };
        let offered = cat.render(ReplyKind::Help, &ctx(), &mut rng);
        let hidden = cat.render(ReplyKind::Help, &no_tls, &mut rng);
        assert_eq!(
            offered.text,
            "214 HELO EHLO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT STARTTLS"
        );
        assert_eq!(
            hidden.text,
            "214 HELO EHLO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT"
        );
    }

    #[test]
    fn an_unterminated_placeholder_is_refused() {
        let mut cat = Catalogue::new(Generation::G2025, "h", 1);
        let err = cat
            .set_override(ReplyKind::IpFrequency, "550 Ip frequency limited {ip")
            .expect_err("no closing brace");
        assert!(
            err.problem.contains("unterminated placeholder `{ip`"),
            "{err}"
        );
        assert!(
            cat.set_override(ReplyKind::Bye, "221 {host} {").is_err(),
            "a lone brace at the end"
        );
    }

    #[test]
    fn overrides_are_validated() {
        let mut cat = Catalogue::new(Generation::G2025, "h", 1);
        assert!(cat.set_override(ReplyKind::Bye, "221 See you").is_ok());
        let err = cat
            .set_override(ReplyKind::Bye, "bye")
            .expect_err("no code");
        assert!(err.to_string().starts_with("reply `bye`: line 1"));
        let err = cat
            .set_override(ReplyKind::Bye, "221 {nope}")
            .expect_err("bad placeholder");
        assert!(err.problem.contains("unknown placeholder `{nope}`"));
        for control in ['\0', '\u{1b}', '\u{7f}', '\u{85}'] {
            let err = cat
                .set_override(ReplyKind::Greeting, &format!("220 {{host}} a{control}b"))
                .expect_err("a control character");
            assert!(err.problem.contains("control character"), "{err}");
        }
        assert!(cat.set_override(ReplyKind::Bye, "221 See\tyou").is_ok());
        assert!(cat.set_override(ReplyKind::Bye, "221 See you").is_ok());
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(
            cat.render(ReplyKind::Bye, &ctx(), &mut rng).text,
            "221 See you"
        );
    }
}
