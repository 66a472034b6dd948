//! Where every reply text, and the stage it is sent at, comes from.
//!
//! For each [`ReplyKind`] in each [`Generation`], the text is either `seen` (QQ was seen
//! sending it: the year and host of the capture in `qq-reference.md`, or the kind of source
//! when the capture names neither) or `assumed` (with a one-line reason). The same holds
//! for the stage at which each kind is sent. `qqmx replies` prints this, the control API
//! serves it at `GET /api/v1/replies`, and the README's lists are rendered from it
//! ([`readme_lists`]), so the three cannot disagree.
//!
//! A kind added to the catalogue without an entry here has no provenance, and the unit
//! test below names it.

use std::fmt::Write as _;

use serde::Serialize;

use crate::reply::{self, Generation, Profile, ReplyKind};

/// Where a text or a stage comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "provenance", rename_all = "snake_case")]
pub enum Source {
    /// QQ was seen doing this.
    Seen {
        /// The year of the capture, when known.
        year: Option<u16>,
        /// The host that sent it, or the kind of source when no host is known.
        host: &'static str,
    },
    /// qqmx's choice where QQ's behaviour is unknown.
    Assumed {
        /// Why, in one line.
        reason: &'static str,
    },
}

impl Source {
    /// Whether QQ was seen doing this.
    pub fn is_seen(self) -> bool {
        matches!(self, Self::Seen { .. })
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Seen {
                year: Some(year),
                host,
            } => write!(f, "seen {year}, {host}"),
            Self::Seen { year: None, host } => write!(f, "seen (year unknown), {host}"),
            Self::Assumed { reason } => write!(f, "assumed: {reason}"),
        }
    }
}

const fn seen(year: u16, host: &'static str) -> Source {
    Source::Seen {
        year: Some(year),
        host,
    }
}

const fn undated(host: &'static str) -> Source {
    Source::Seen { year: None, host }
}

const fn assumed(reason: &'static str) -> Source {
    Source::Assumed { reason }
}

const MX1_2017: &str = "mx1.qq.com (newmx17)";
const MX2_2018: &str = "mx2.qq.com (newmx33)";
const MX3_2019: &str = "mx3.qq.com (newxmmxsza22)";
const MX3_2025: &str = "mx3.qq.com (newxmmxszc23-0)";
const BIZMX_2018: &str = "mxbiz1.qq.com (bizmx17)";
const BOUNCES: &str = "bounce reports, host unknown";
const CLASSIFIERS: &str = "bounce classifier rule sets, host unknown";
const EXMAIL: &str = "exmail bounce reports, host unknown";
const NEW_PATTERN: &str = "only older forms were seen; built on QQ's 2025 pattern \
                           `[<token> IP: <ip>]. https://service.mail.qq.com/detail/122/N.`";
const CLIENT_ERROR: &str = "QQ's answer to this client error was never captured";

/// Where the text of `kind` in `generation` comes from; `None` for a kind without an
/// entry (a test makes sure there is none).
pub fn text(kind: ReplyKind, generation: Generation) -> Option<Source> {
    use Generation::*;
    use ReplyKind::*;
    // A kind added to the catalogue without an entry reaches the last arm, and the unit
    // test names it; until then that arm is unreachable.
    #[allow(unreachable_patterns)]
    Some(match (kind, generation) {
        (Greeting | Ehlo, G2017) => seen(2017, MX1_2017),
        (Greeting | Ehlo, G2019) => seen(2019, MX3_2019),
        (Greeting | Ehlo, G2025) => seen(2025, MX3_2025),
        (Helo, G2017) => seen(2018, MX2_2018),
        (Helo, _) => assumed("HELO was only captured in 2018; its form is kept"),
        (MailOk | RcptOk | DataStart, G2017) => seen(2017, MX1_2017),
        (MailOk | RcptOk | DataStart | Queued | Bye, G2019) => seen(2019, MX3_2019),
        (MailOk | RcptOk | DataStart | Queued | Bye, G2025) => {
            assumed("the 2025 capture ends at MAIL; the 2019 text is kept")
        }
        (Queued, G2017) => {
            assumed("the 2017 capture ends in a refusal; the 2019 text (also exmail's in 2018)")
        }
        (Bye, G2017) => assumed("QUIT was not captured before 2019; the 2019 text without its dot"),
        (RsetOk | NoopOk, _) => assumed("replies to RSET and NOOP were never captured"),
        (Vrfy | Help, _) => assumed("replies to VRFY and HELP were never captured"),
        (StartTlsReady, _) => assumed("seen only from exmail's bizmx17 in 2018"),
        (TlsUnavailable | TlsActive, _) => {
            assumed("QQ always offers STARTTLS; its errors were never captured")
        }
        (NotImplemented, _) => {
            assumed("what Tencent's submission server says; never captured from the MX")
        }
        (
            SyntaxError | UnsupportedParameter | NeedHelo | NeedMail | NeedRcpt | LineTooLong
            | TooManyRecipients,
            _,
        ) => assumed(CLIENT_ERROR),
        (TooManyCommands | Timeout | ShuttingDown | TooManyConnections, _) => {
            assumed("no 421 from QQ has ever been reported")
        }
        (SystemBusy | StateUnavailable, _) => assumed("no 4xx from QQ's MX has ever been reported"),
        (RelayDenied, _) => {
            assumed("QQ's answer to RCPT for a domain it does not serve is unknown")
        }
        (Greylisted, _) => assumed("QQ has not been seen greylisting; for the greylist fault"),
        (NoPtr, _) => assumed("that QQ refuses clients without a PTR record is unknown"),
        (MailboxNotFound, _) => undated(BOUNCES),
        (MailboxUnavailable, G2017) => {
            assumed("the detail/122 URL is not known before 2019; the undated text is kept")
        }
        (MailboxUnavailable, _) => undated(BOUNCES),
        (IpFrequency, G2017) => seen(2017, MX1_2017),
        (IpFrequency, G2019) => seen(2019, BOUNCES),
        (ConnectionFrequency, G2017) => {
            assumed("only the `Blocked IP` form was seen; Ip frequency's old form is followed")
        }
        (ConnectionFrequency, G2019) => undated(BOUNCES),
        (SenderFrequency, G2017) => undated(BOUNCES),
        (DomainFrequency, G2017) => undated(CLASSIFIERS),
        (SenderFrequency | DomainFrequency, G2019) => {
            assumed("the `Blocked IP` form was never seen with this text")
        }
        (ConnectionDenied, G2017 | G2019) => undated(CLASSIFIERS),
        (
            IpFrequency | ConnectionFrequency | SenderFrequency | DomainFrequency
            | ConnectionDenied | SuspectedSpamIp | SuspectedSpam | SpamEmbedded | BadAddressSyntax,
            G2025,
        ) => assumed(NEW_PATTERN),
        (ContentDenied, G2025) => seen(2024, BOUNCES),
        (ContentDenied, _) => undated(BOUNCES),
        (RejectedByRecipients, _) => undated(BOUNCES),
        (SpfFailed, G2025) => seen(2025, MX3_2025),
        (SpfFailed, _) => assumed("no old capture; the 2025 text without its token"),
        (SpfFailedOther, G2025) => undated(BOUNCES),
        (SpfFailedOther, _) => assumed("no old capture after DATA; the old MAIL-stage text"),
        (DmarcFailed | BadAddressSyntax, _) => undated(BOUNCES),
        (SuspectedSpamSender | SuspectedSpamIp | SuspectedSpam | SpamEmbedded, _) => {
            undated(CLASSIFIERS)
        }
        (BounceAttack, G2025) => undated(BOUNCES),
        (BounceAttack, _) => {
            assumed("only the 2025 form was seen; its old help number with the old URL")
        }
        (MessageTooLarge, _) => {
            assumed("the words are known from classifiers; the code 552 and the rest are not")
        }
        (RecipientRate, _) => assumed("only a fragment of this text is known"),
        (
            MimeFromLocal
            | ExmailMailboxNotFound
            | ExmailContentDenied
            | ExmailSenderFrequency
            | ExmailBadAddressSyntax,
            _,
        ) => undated(EXMAIL),
        (Antispam, _) => undated("Momentum's bounce rules, host unknown"),
        _ => return None,
    })
}

/// Where the exmail profile's own text of `kind` ([`reply::exmail_template`]) comes from;
/// `None` when the profile has no text of its own for `kind`.
pub fn exmail_text(kind: ReplyKind) -> Option<Source> {
    use ReplyKind::*;
    reply::exmail_template(kind)?;
    Some(match kind {
        Greeting | Ehlo | MailOk | RcptOk => seen(2018, BIZMX_2018),
        DataStart => assumed("the 2018 exmail capture elides it; the 2017 text is used"),
        _ => return None,
    })
}

/// Where in the conversation a kind is sent, and how sure that is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct StageInfo {
    /// The stage (`connect`, `rcpt`, `end_of_data`, ...) or command it answers.
    pub stage: &'static str,
    /// The config key that moves it, if any.
    pub setting: Option<&'static str>,
    /// Where the stage comes from.
    pub source: Source,
}

const fn at(stage: &'static str, source: Source) -> StageInfo {
    StageInfo {
        stage,
        setting: None,
        source,
    }
}

const fn set(stage: &'static str, setting: &'static str, source: Source) -> StageInfo {
    StageInfo {
        stage,
        setting: Some(setting),
        source,
    }
}

const UNKNOWN_STAGE: &str = "QQ's stage is unknown";

/// Where `kind` is sent (its default stage); `None` for a kind without an entry.
pub fn stage(kind: ReplyKind) -> Option<StageInfo> {
    use ReplyKind::*;
    // As in `text`: the last arm catches kinds without an entry.
    #[allow(unreachable_patterns)]
    Some(match kind {
        Greeting => at("connect", seen(2025, MX3_2025)),
        Ehlo => at("ehlo", seen(2025, MX3_2025)),
        Helo => at("helo", seen(2018, MX2_2018)),
        MailOk => at("mail", seen(2019, MX3_2019)),
        RcptOk => at("rcpt", seen(2019, MX3_2019)),
        DataStart => at("data", seen(2019, MX3_2019)),
        Queued => at("end_of_data", seen(2019, MX3_2019)),
        Bye => at("quit", seen(2019, MX3_2019)),
        RsetOk => at("rset", assumed("RSET was never captured")),
        NoopOk => at("noop", assumed("NOOP was never captured")),
        Vrfy => at("vrfy", assumed("VRFY was never captured")),
        Help => at("help", assumed("HELP was never captured")),
        StartTlsReady => at("starttls", seen(2018, BIZMX_2018)),
        TlsUnavailable | TlsActive => at("starttls", assumed(CLIENT_ERROR)),
        NotImplemented | SyntaxError | LineTooLong => at("any command", assumed(CLIENT_ERROR)),
        UnsupportedParameter => at("mail or rcpt", assumed(CLIENT_ERROR)),
        NeedHelo => at("mail", assumed(CLIENT_ERROR)),
        NeedMail => at("rcpt or data", assumed(CLIENT_ERROR)),
        NeedRcpt => at("data", assumed(CLIENT_ERROR)),
        TooManyRecipients => set(
            "rcpt",
            "limits.max_recipients",
            assumed("at least 20 recipients were accepted; the limit is unknown"),
        ),
        TooManyCommands | Timeout | ShuttingDown => {
            at("any time", assumed("no 421 from QQ has ever been reported"))
        }
        TooManyConnections => set(
            "connect",
            "limits.max_connections",
            assumed("no 421 from QQ has ever been reported"),
        ),
        SystemBusy => set(
            "data or end_of_data",
            "limits.max_inflight_bytes",
            assumed("no 4xx from QQ's MX has ever been reported"),
        ),
        StateUnavailable => set(
            "any stage",
            "state.backend",
            assumed("qqmx's own condition: its shared state (Redis) cannot be reached"),
        ),
        RelayDenied => at(
            "rcpt",
            assumed("QQ's answer to a foreign domain is unknown"),
        ),
        Greylisted => set(
            "rcpt",
            "fault greylist",
            assumed("QQ has not been seen greylisting"),
        ),
        NoPtr => set("mail", "auth.require_ptr", assumed(UNKNOWN_STAGE)),
        MailboxNotFound | ExmailMailboxNotFound => at("rcpt", undated(BOUNCES)),
        MailboxUnavailable => set("rcpt", "quotas.recipient.stage", undated(BOUNCES)),
        IpFrequency => set(
            "end_of_data",
            "quotas.ip_messages.stage, blacklist.ip_stage",
            seen(2017, MX1_2017),
        ),
        ConnectionFrequency => set(
            "end_of_data",
            "quotas.ip_connections.stage",
            undated(BOUNCES),
        ),
        SenderFrequency | ExmailSenderFrequency => {
            set("mail", "quotas.sender.stage", assumed(UNKNOWN_STAGE))
        }
        DomainFrequency => set("mail", "quotas.domain.stage", assumed(UNKNOWN_STAGE)),
        ConnectionDenied => set(
            "connect",
            "stages.connection_denied",
            assumed("QQ's stage is unknown; a 550 greeting, which Postfix treats as temporary"),
        ),
        ContentDenied | ExmailContentDenied => at("end_of_data", undated(BOUNCES)),
        RejectedByRecipients => set(
            "rcpt",
            "stages.rejected_by_recipients",
            assumed(UNKNOWN_STAGE),
        ),
        SpfFailed => set("mail", "auth.spf_reject_at_mail", seen(2025, MX3_2025)),
        SpfFailedOther => set("end_of_data", "auth.spf_reject_others", undated(BOUNCES)),
        DmarcFailed => at("end_of_data", undated(BOUNCES)),
        SuspectedSpamSender => set(
            "rcpt",
            "blacklist.sender_stage",
            assumed(
                "QQ's stage is unknown (it was only seen refusing whole messages at the \
                 end of data)",
            ),
        ),
        SuspectedSpamIp => set(
            "end_of_data",
            "blacklist.ip_reply, blacklist.ip_stage",
            assumed(UNKNOWN_STAGE),
        ),
        SuspectedSpam | SpamEmbedded | Antispam => {
            set("end_of_data", "content.phrases", assumed(UNKNOWN_STAGE))
        }
        BounceAttack => set("rcpt", "stages.bounce_attack", assumed(UNKNOWN_STAGE)),
        BadAddressSyntax | ExmailBadAddressSyntax => at("mail or rcpt", undated(BOUNCES)),
        MessageTooLarge => set(
            "mail (declared SIZE) or end_of_data",
            "stages.message_too_large",
            assumed(UNKNOWN_STAGE),
        ),
        RecipientRate => set("rcpt", "quotas.recipient.reply", assumed(UNKNOWN_STAGE)),
        MimeFromLocal => set("end_of_data", "auth.mime_from_local", undated(EXMAIL)),
        _ => return None,
    })
}

/// One line of the catalogue: a kind's template in one generation and profile, with
/// where its text and stage come from.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The kind.
    pub kind: ReplyKind,
    /// The generation.
    pub generation: Generation,
    /// `qq`, or `exmail` for the texts exmail's front end sends instead.
    pub profile: Profile,
    /// The reply code.
    pub code: u16,
    /// The template, lines separated by `\n` (placeholders as in [`crate::reply`]).
    pub text: &'static str,
    /// Where the text comes from.
    pub text_source: Source,
    /// Where the kind is sent.
    pub stage: StageInfo,
}

/// Every kind of `generation` with its provenance: the QQ profile's entries in catalogue
/// order, then the exmail profile's own texts.
///
/// # Panics
///
/// When a kind has no provenance, which the unit tests rule out.
pub fn entries(generation: Generation) -> Vec<Entry> {
    let entry = |kind: ReplyKind, profile, text: &'static str, text_source| Entry {
        kind,
        generation,
        profile,
        code: text
            .get(..3)
            .and_then(|c| c.parse().ok())
            .expect("built-in templates start with a code"),
        text,
        text_source,
        stage: stage(kind).expect("every kind has a stage entry"),
    };
    let qq = ReplyKind::ALL.iter().map(|&kind| {
        let source = text(kind, generation).expect("every kind has a text entry");
        entry(kind, Profile::Qq, reply::template(kind, generation), source)
    });
    let exmail = ReplyKind::ALL.iter().filter_map(|&kind| {
        let template = reply::exmail_template(kind)?;
        let source = exmail_text(kind)?;
        Some(entry(kind, Profile::Exmail, template, source))
    });
    qq.chain(exmail).collect()
}

/// `entries` as text, for `qqmx replies`: one block per entry.
pub fn render_text(entries: &[Entry]) -> String {
    let mut out = String::new();
    for e in entries {
        let profile = match e.profile {
            Profile::Qq => "",
            Profile::Exmail => " (exmail profile)",
        };
        let _ = writeln!(out, "{} {}{profile}", e.generation, e.kind);
        for line in e.text.split('\n') {
            let _ = writeln!(out, "  | {line}");
        }
        let _ = writeln!(out, "  text: {}", e.text_source);
        let setting = e
            .stage
            .setting
            .map(|s| format!(" (set by {s})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  stage: {}{setting}: {}",
            e.stage.stage, e.stage.source
        );
    }
    out
}

/// The README's lists of what is seen and what is assumed, rendered from the catalogue.
pub fn readme_lists() -> String {
    let mut seen_list = String::new();
    let mut assumed_list = String::new();
    for &kind in ReplyKind::ALL {
        let mut groups: Vec<(Vec<&str>, Source)> = Vec::new();
        for generation in Generation::ALL {
            let Some(source) = text(kind, generation) else {
                continue;
            };
            match groups.iter_mut().find(|(_, s)| *s == source) {
                Some((years, _)) => years.push(generation.as_str()),
                None => groups.push((vec![generation.as_str()], source)),
            }
        }
        for (years, source) in groups {
            let out = if source.is_seen() {
                &mut seen_list
            } else {
                &mut assumed_list
            };
            let which = if years.len() == Generation::ALL.len() {
                "all generations".to_owned()
            } else {
                years.join(", ")
            };
            let _ = writeln!(out, "- `{kind}` ({which}): {source}");
        }
        if let Some(source) = exmail_text(kind) {
            let out = if source.is_seen() {
                &mut seen_list
            } else {
                &mut assumed_list
            };
            let _ = writeln!(
                out,
                "- `{kind}` (exmail profile, every generation): {source}"
            );
        }
        if let Some(info) = stage(kind) {
            let out = if info.source.is_seen() {
                &mut seen_list
            } else {
                &mut assumed_list
            };
            let setting = info
                .setting
                .map(|s| format!(", set by `{s}`"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "- `{kind}` sent at {}{setting}: {}",
                info.stage, info.source
            );
        }
    }
    format!(
        "Seen from QQ (text per generation, and stage):\n\n{seen_list}\n\
         Assumed (text per generation, and stage):\n\n{assumed_list}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_in_every_generation_has_provenance() {
        let mut missing = Vec::new();
        for &kind in ReplyKind::ALL {
            for generation in Generation::ALL {
                if text(kind, generation).is_none() {
                    missing.push(format!(
                        "reply kind `{kind}` in generation {generation} has no text provenance \
                         (add it to `text` in src/provenance.rs)"
                    ));
                }
            }
            if stage(kind).is_none() {
                missing.push(format!(
                    "reply kind `{kind}` has no stage provenance (add it to `stage` in \
                     src/provenance.rs)"
                ));
            }
            if reply::exmail_template(kind).is_some() && exmail_text(kind).is_none() {
                missing.push(format!(
                    "reply kind `{kind}` has an exmail text without provenance (add it to \
                     `exmail_text` in src/provenance.rs)"
                ));
            }
        }
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    #[test]
    fn the_catalogue_lists_every_kind_of_every_generation() {
        for generation in Generation::ALL {
            let entries = entries(generation);
            for &kind in ReplyKind::ALL {
                assert!(
                    entries
                        .iter()
                        .any(|e| e.kind == kind && e.profile == Profile::Qq),
                    "{kind} {generation}"
                );
            }
        }
    }

    #[test]
    fn seen_texts_carry_a_year_or_a_source() {
        let json = serde_json::to_value(seen(2025, MX3_2025)).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"provenance": "seen", "year": 2025, "host": MX3_2025})
        );
        let json = serde_json::to_value(assumed("why")).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"provenance": "assumed", "reason": "why"})
        );
    }
}
