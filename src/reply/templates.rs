//! The built-in templates: QQ's texts by generation, and exmail's where they differ.

use super::{Generation, ReplyKind};

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
        (StateUnavailable, _) => "451 Error: service temporarily unavailable, try again later",

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
