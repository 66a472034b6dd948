//! A real MTA as the sender: Debian's Postfix relays mail for QQ addresses to qqmx
//! listeners, and every refusal qqmx can send to it ends the way it must. A `4xx` leaves
//! the message deferred in Postfix's queue, with qqmx's reply in the delay reason; a
//! `5xx` makes Postfix bounce it, and the bounce (DSN) it writes back to the sender
//! carries qqmx's reply text verbatim, in the notification and in the `Diagnostic-Code`
//! of the delivery report.
//!
//! The test runs a private Postfix instance (its own config, queue and data directories
//! under a temporary directory, no listener: mail is injected with `sendmail`), routes each
//! case's recipients to that case's own qqmx server with a transport map, and delivers the
//! bounces to a maildir it reads. Postfix is stopped, and the directory removed, however
//! the test ends. It needs Postfix (`.ci/run` and scripts/test.sh install it on Debian) and
//! root, which Postfix's master needs; set QQMX_SKIP_POSTFIX_TEST=1 to skip it on a
//! machine without them.
//!
//! Every wait is bounded by a hang limit of minutes, never asserted on: a loaded 2-core
//! machine is slow, and a case that never resolves is reported with Postfix's log.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::thread;
use std::time::{Duration, Instant};

mod common;

use common::postfix::{Dsn, Postfix, Queued, deferred, dsn_for};
use qqmx::chaos::{Fault, FaultKind};
use qqmx::reply::template;
use qqmx::units::Stage;
use qqmx::{Config, EventKind, Generation, QqMx, ReplyKind};

/// How long Postfix gets to settle every case, or to deliver a retried message. Far
/// beyond what it needs (seconds): only a hang reaches it.
const HANG: Duration = Duration::from_secs(180);
/// The envelope sender of most cases. Every sender's domain is local to Postfix, so the
/// bounces land in the maildir.
const SENDER: &str = "sender@pfx.test";

/// Refusals qqmx has but never sends to Postfix's SMTP client, and why. Every other
/// `4xx` and `5xx` kind must be the subject of a case (checked by
/// `every_refusal_is_tried_or_explained`).
const NOT_FROM_POSTFIX: &[(ReplyKind, &str)] = &[
    (
        ReplyKind::StateUnavailable,
        "sent only by a replica with the Redis state backend while Redis cannot be reached \
         (tests/redis.rs kills and stops redis-server under load); these cases use the \
         in-memory state",
    ),
    (
        ReplyKind::TlsUnavailable,
        "sent to STARTTLS when TLS is off, and then EHLO does not offer STARTTLS, so Postfix \
         never asks (at `encrypt` level it defers on its own: TLS not offered)",
    ),
    (
        ReplyKind::TlsActive,
        "sent to STARTTLS inside TLS; Postfix never repeats STARTTLS",
    ),
    (
        ReplyKind::NotImplemented,
        "Postfix sends only EHLO/HELO, STARTTLS, MAIL, RCPT, DATA, RSET and QUIT",
    ),
    (ReplyKind::SyntaxError, "Postfix's commands are well formed"),
    (
        ReplyKind::ExmailContentDenied,
        "sent only by exmail's front end (the `mxbiz1` listener); the cases run as mx1 \
         (tests/faithful.rs checks the exmail profile)",
    ),
    (
        ReplyKind::ExmailSenderFrequency,
        "sent only by exmail's front end (the `mxbiz1` listener); the cases run as mx1",
    ),
    (
        ReplyKind::ExmailBadAddressSyntax,
        "sent only by exmail's front end (the `mxbiz1` listener); the cases run as mx1",
    ),
    (
        ReplyKind::UnsupportedParameter,
        "Postfix sends only the MAIL parameters EHLO announced (SIZE, BODY=8BITMIME)",
    ),
    (
        ReplyKind::NeedHelo,
        "Postfix always sends EHLO (or HELO) before MAIL",
    ),
    (
        ReplyKind::NeedMail,
        "Postfix sends RCPT and DATA only after MAIL was accepted",
    ),
    (
        ReplyKind::NeedRcpt,
        "Postfix sends DATA only after a recipient was accepted (qqmx offers no PIPELINING)",
    ),
];

/// What Postfix must do with a case's message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Return it to the sender with a DSN.
    Bounce,
    /// Keep it in the deferred queue.
    Defer,
}

/// The envelope sender of a case.
#[derive(Debug, Clone, Copy)]
enum Sender {
    /// [`SENDER`].
    Plain,
    /// The null sender of a bounce; Postfix sends the DSN of its own failed bounce to the
    /// postmaster (its `2bounce_notice_recipient`, here in the maildir).
    Null,
    /// A local part of 52 characters: a valid address, but a MAIL line over 64 bytes.
    Long,
    /// A local part of 65 characters, over RFC 5321's 64.
    TooLong,
}

/// The recipients of a case.
#[derive(Debug, Clone, Copy)]
enum Rcpts {
    /// One QQ number.
    One,
    /// Two QQ numbers, both refused.
    Two,
    /// Two QQ numbers: the first accepted, the second refused.
    SecondRefused,
    /// A QQ address that does not exist.
    Missing,
    /// An address at a domain QQ does not serve.
    Foreign,
    /// A QQ address whose local part is 65 characters.
    TooLong,
    /// An address that does not exist at a hosted (exmail) domain, `corp.test`.
    Hosted,
}

/// Postfix's SMTP client for a case, as named in master.cf.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// Postfix's defaults.
    Default,
    /// `smtp_skip_5xx_greeting = no`: a `5xx` greeting bounces instead of deferring.
    Strict,
    /// `smtp_discard_ehlo_keywords = size`: no SIZE= at MAIL, so a large message is
    /// refused at the end of data.
    NoSize,
    /// Waits `smtp_pix_workaround_delay_time` (10 s) before the final dot of DATA.
    SlowDot,
}

impl Client {
    fn transport(self) -> &'static str {
        match self {
            Self::Default => "smtp",
            Self::Strict => "strict",
            Self::NoSize => "nosize",
            Self::SlowDot => "slowdot",
        }
    }
}

/// One refusal to provoke.
struct Case {
    name: &'static str,
    kind: ReplyKind,
    /// Where qqmx sends it.
    stage: Stage,
    /// qqmx may send it in reply to any command from `stage` on.
    or_later: bool,
    /// Postfix refuses the message itself, saying this, before qqmx can send the kind.
    by_postfix: Option<&'static str>,
    outcome: Outcome,
    generation: Generation,
    /// Config on top of the defaults (TOML).
    config: &'static str,
    /// Steering through the handle, with the case's recipients.
    setup: Option<fn(&QqMx, &[String])>,
    from: Sender,
    to: Rcpts,
    client: Client,
    /// A line for the message body.
    body: &'static str,
}

impl Case {
    const fn new(name: &'static str, kind: ReplyKind, stage: Stage, outcome: Outcome) -> Self {
        Self {
            name,
            kind,
            stage,
            or_later: false,
            by_postfix: None,
            outcome,
            generation: Generation::G2025,
            config: "",
            setup: None,
            from: Sender::Plain,
            to: Rcpts::One,
            client: Client::Default,
            body: "Hello from Postfix.",
        }
    }

    const fn or_later(mut self) -> Self {
        self.or_later = true;
        self
    }

    const fn by_postfix(mut self, says: &'static str) -> Self {
        self.by_postfix = Some(says);
        self
    }

    const fn config(mut self, config: &'static str) -> Self {
        self.config = config;
        self
    }

    const fn setup(mut self, setup: fn(&QqMx, &[String])) -> Self {
        self.setup = Some(setup);
        self
    }

    const fn from(mut self, from: Sender) -> Self {
        self.from = from;
        self
    }

    const fn to(mut self, to: Rcpts) -> Self {
        self.to = to;
        self
    }

    const fn client(mut self, client: Client) -> Self {
        self.client = client;
        self
    }

    const fn body(mut self, body: &'static str) -> Self {
        self.body = body;
        self
    }

    const fn generation(mut self, generation: Generation) -> Self {
        self.generation = generation;
        self
    }
}

fn unavailable_at(stage: Option<Stage>) -> Fault {
    let fault = Fault::new(FaultKind::Unavailable);
    match stage {
        Some(stage) => fault.at(stage),
        None => fault,
    }
}

/// Every case. Each runs against a qqmx of its own; recipients are numbered by case.
fn cases() -> Vec<Case> {
    use Outcome::{Bounce, Defer};
    use ReplyKind as K;
    use Stage as S;
    vec![
        // ---- connect: the greeting --------------------------------------------------
        // Postfix takes a 5xx greeting for a temporary failure (smtp_skip_5xx_greeting
        // defaults to yes) and defers; with it off, it bounces.
        Case::new("connection_denied", K::ConnectionDenied, S::Connect, Defer).config(
            "[blacklist]\nips = [\"127.0.0.1\"]\nip_stage = \"connect\"\nip_reply = \"connection_denied\"\n",
        ),
        Case::new("connection_denied_strict", K::ConnectionDenied, S::Connect, Bounce)
            .config(
                "[blacklist]\nips = [\"127.0.0.1\"]\nip_stage = \"connect\"\nip_reply = \"connection_denied\"\n",
            )
            .client(Client::Strict),
        Case::new("connection_frequency_at_connect", K::ConnectionFrequency, S::Connect, Defer)
            .config("[quotas.ip_connections]\nstage = \"connect\"\nminute = { limit = 0 }\n"),
        Case::new("unavailable_at_connect", K::ShuttingDown, S::Connect, Defer)
            .setup(|mx, _| mx.set_faults(vec![unavailable_at(None)])),
        // One connection slot, taken before Postfix comes: it is turned away with a 421.
        Case::new("too_many_connections", K::TooManyConnections, S::Connect, Defer)
            .config("[limits]\nmax_connections = 1\n")
            .setup(|mx, _| {
                use std::io::Read as _;
                let mut held = std::net::TcpStream::connect(mx.addr()).expect("a first client");
                let mut banner = [0; 128];
                let _ = held.read(&mut banner).expect("the first client's banner");
                // Kept open for the rest of the test run, so the one slot stays taken.
                Box::leak(Box::new(held));
            }),
        // ---- HELO ---------------------------------------------------------------------
        Case::new("ip_frequency_at_helo", K::IpFrequency, S::Helo, Bounce)
            .config("[quotas.ip_messages]\nstage = \"helo\"\nminute = { limit = 0 }\n"),
        Case::new("unavailable_at_helo", K::ShuttingDown, S::Helo, Defer)
            .setup(|mx, _| mx.set_faults(vec![unavailable_at(Some(Stage::Helo))])),
        // Postfix waits 10 s before the final dot (its PIX firewall workaround, which it
        // applies to a greeting of asterisks), far past qqmx's idle timeout of 2 s: the
        // timeout answers the end of data. On a machine slow enough to keep Postfix 2 s
        // from an earlier command, it answers that one.
        Case::new("timeout", K::Timeout, S::Helo, Defer)
            .or_later()
            .config(
                "[limits]\nidle_timeout = \"2s\"\n[replies]\ngreeting = \"220 ****************\"\n",
            )
            .client(Client::SlowDot),
        // ---- MAIL ---------------------------------------------------------------------
        Case::new("sender_frequency", K::SenderFrequency, S::Mail, Bounce)
            .config("[quotas.sender]\nminute = { limit = 0 }\n"),
        Case::new("domain_frequency", K::DomainFrequency, S::Mail, Bounce)
            .config("[quotas.domain]\nminute = { limit = 0 }\n"),
        Case::new("spf_failed", K::SpfFailed, S::Mail, Bounce).config(
            "[auth]\nspf_reject_at_mail = [\"pfx.test\"]\n[dns.records.\"pfx.test\"]\ntxt = [\"v=spf1 -all\"]\n",
        ),
        Case::new("no_ptr", K::NoPtr, S::Mail, Bounce).config("[auth]\nrequire_ptr = true\n"),
        Case::new("bad_sender_syntax", K::BadAddressSyntax, S::Mail, Bounce).from(Sender::TooLong),
        Case::new("line_too_long", K::LineTooLong, S::Mail, Bounce)
            .config("[limits]\nmax_line_length = 64\n")
            .from(Sender::Long),
        Case::new("ip_frequency_at_mail", K::IpFrequency, S::Mail, Bounce)
            .config("[blacklist]\nips = [\"127.0.0.1\"]\nip_stage = \"mail\"\n"),
        Case::new("unavailable_at_mail", K::ShuttingDown, S::Mail, Defer)
            .setup(|mx, _| mx.set_faults(vec![unavailable_at(Some(Stage::Mail))])),
        // ---- RCPT ---------------------------------------------------------------------
        Case::new("mailbox_not_found", K::MailboxNotFound, S::Rcpt, Bounce).to(Rcpts::Missing),
        Case::new("mailbox_not_found_2017", K::MailboxNotFound, S::Rcpt, Bounce)
            .to(Rcpts::Missing)
            .generation(Generation::G2017),
        Case::new("mailbox_not_found_2019", K::MailboxNotFound, S::Rcpt, Bounce)
            .to(Rcpts::Missing)
            .generation(Generation::G2019),
        // A multi-line refusal (an override: QQ's own are single lines).
        Case::new("mailbox_not_found_multiline", K::MailboxNotFound, S::Rcpt, Bounce)
            .to(Rcpts::Missing)
            .config(
                "[replies]\nmailbox_not_found = \"550-Mailbox not found.\\n550-http://service.mail.qq.com/detail/122/169\\n550 [{b64} IP: {ip}]\"\n",
            ),
        Case::new("relay_denied", K::RelayDenied, S::Rcpt, Bounce).to(Rcpts::Foreign),
        Case::new("exmail_mailbox_not_found", K::ExmailMailboxNotFound, S::Rcpt, Bounce)
            .config("[mailboxes]\nhosted_domains = [\"corp.test\"]\n")
            .to(Rcpts::Hosted),
        Case::new("bad_recipient_syntax", K::BadAddressSyntax, S::Rcpt, Bounce).to(Rcpts::TooLong),
        Case::new("mailbox_unavailable", K::MailboxUnavailable, S::Rcpt, Bounce)
            .config("[quotas.recipient]\nminute = { limit = 0 }\n"),
        Case::new("recipient_rate", K::RecipientRate, S::Rcpt, Bounce).config(
            "[quotas.recipient]\nreply = \"recipient_rate\"\nminute = { limit = 0 }\n",
        ),
        Case::new("rejected_by_recipients", K::RejectedByRecipients, S::Rcpt, Bounce).setup(
            |mx, rcpts| {
                mx.block_for_recipient(&rcpts[0], "pfx.test");
            },
        ),
        Case::new("suspected_spam_sender", K::SuspectedSpamSender, S::Rcpt, Bounce)
            .setup(|mx, _| mx.blacklist_sender(SENDER, None)),
        Case::new("bounce_attack", K::BounceAttack, S::Rcpt, Bounce)
            .config("[content]\nbackscatter = true\n")
            .from(Sender::Null),
        Case::new("ip_frequency_at_rcpt", K::IpFrequency, S::Rcpt, Bounce)
            .config("[blacklist]\nips = [\"127.0.0.1\"]\nip_stage = \"rcpt\"\n"),
        Case::new("too_many_recipients", K::TooManyRecipients, S::Rcpt, Defer)
            .config("[limits]\nmax_recipients = 1\n")
            .to(Rcpts::SecondRefused),
        Case::new("greylisted", K::Greylisted, S::Rcpt, Defer).setup(|mx, _| {
            let mut greylist = Fault::new(FaultKind::Greylist).at(Stage::Rcpt);
            greylist.attempts = Some(1);
            mx.set_faults(vec![greylist]);
        }),
        // EHLO, MAIL, then RCPT is the third command.
        Case::new("too_many_commands", K::TooManyCommands, S::Rcpt, Defer)
            .config("[limits]\nmax_commands = 2\n"),
        Case::new("unavailable_at_rcpt", K::ShuttingDown, S::Rcpt, Defer)
            .setup(|mx, _| mx.set_faults(vec![unavailable_at(Some(Stage::Rcpt))])),
        // ---- DATA ---------------------------------------------------------------------
        // No room for message data in flight: 451 at DATA, as a busy MX does.
        Case::new("system_busy", K::SystemBusy, S::Data, Defer)
            .config("[limits]\nmax_inflight_bytes = 1\n"),
        Case::new("ip_frequency_at_data", K::IpFrequency, S::Data, Bounce)
            .config("[blacklist]\nips = [\"127.0.0.1\"]\nip_stage = \"data\"\n"),
        Case::new("unavailable_at_data", K::ShuttingDown, S::Data, Defer)
            .setup(|mx, _| mx.set_faults(vec![unavailable_at(Some(Stage::Data))])),
        // ---- end of data --------------------------------------------------------------
        Case::new("ip_frequency", K::IpFrequency, S::EndOfData, Bounce)
            .setup(|mx, _| mx.blacklist_ip(std::net::IpAddr::from([127, 0, 0, 1]), None)),
        Case::new("suspected_spam_ip", K::SuspectedSpamIp, S::EndOfData, Bounce).config(
            "[blacklist]\nips = [\"127.0.0.1\"]\nip_reply = \"suspected_spam_ip\"\n",
        ),
        Case::new("connection_frequency", K::ConnectionFrequency, S::EndOfData, Bounce)
            .config("[quotas.ip_connections]\nminute = { limit = 0 }\n"),
        Case::new("content_denied", K::ContentDenied, S::EndOfData, Bounce)
            .config("[content]\nbulk_recipients = 1\n")
            .to(Rcpts::Two),
        Case::new("suspected_spam", K::SuspectedSpam, S::EndOfData, Bounce)
            .config("[content]\nphrases = [{ phrase = \"cheap watches\" }]\n")
            .body("Cheap watches, today only."),
        Case::new("spam_embedded", K::SpamEmbedded, S::EndOfData, Bounce)
            .config(
                "[content]\nphrases = [{ phrase = \"cheap watches\", reply = \"spam_embedded\" }]\n",
            )
            .body("Cheap watches, today only."),
        // SPF's own refusal after DATA is off: DMARC decides.
        Case::new("dmarc_failed", K::DmarcFailed, S::EndOfData, Bounce).config(
            "[auth]\nspf_reject_others = \"off\"\n[dns.records.\"pfx.test\"]\ntxt = [\"v=spf1 -all\"]\n[dns.records.\"_dmarc.pfx.test\"]\ntxt = [\"v=DMARC1; p=reject\"]\n",
        ),
        Case::new("spf_failed_other", K::SpfFailedOther, S::EndOfData, Bounce)
            .config("[dns.records.\"pfx.test\"]\ntxt = [\"v=spf1 -all\"]\n"),
        Case::new("antispam", K::Antispam, S::EndOfData, Bounce)
            .config(
                "[content]\nphrases = [{ phrase = \"cheap watches\", reply = \"antispam\" }]\n",
            )
            .body("Cheap watches, today only."),
        Case::new("mime_from_local", K::MimeFromLocal, S::EndOfData, Bounce).config(
            "[auth]\nmime_from_local = true\n[mailboxes]\nhosted_domains = [\"pfx.test\"]\n",
        ),
        // Postfix honours the SIZE that EHLO announces and bounces an over-size message
        // itself, so it never sends qqmx an over-size SIZE= at MAIL. Without SIZE in
        // EHLO, qqmx refuses the message once it has read it.
        Case::new("message_too_large_at_mail", K::MessageTooLarge, S::Mail, Bounce)
            .config("[limits]\nmax_message_size = 100\n")
            .by_postfix("exceeds size limit 100 of server 127.0.0.1[127.0.0.1]"),
        Case::new("message_too_large", K::MessageTooLarge, S::EndOfData, Bounce)
            .config("[limits]\nmax_message_size = 100\n")
            .client(Client::NoSize),
        Case::new("unavailable_at_end_of_data", K::ShuttingDown, S::EndOfData, Defer).setup(
            |mx, _| mx.set_faults(vec![unavailable_at(Some(Stage::EndOfData))]),
        ),
    ]
}

/// A case running: its server and addresses.
struct Running {
    case: Case,
    server: QqMx,
    from: String,
    /// Every recipient.
    rcpts: Vec<String>,
    /// The recipients qqmx refuses.
    refused: Vec<String>,
}

fn start(index: usize, case: Case) -> Running {
    let number = |j: usize| format!("{}@qq.com", 30_000 + index * 10 + j);
    let rcpts = match case.to {
        Rcpts::One => vec![number(1)],
        Rcpts::Two | Rcpts::SecondRefused => vec![number(1), number(2)],
        Rcpts::Missing => vec![format!("gone{index}@qq.com")],
        Rcpts::Foreign => vec![format!("user{index}@example.net")],
        Rcpts::TooLong => vec![format!("{}{index:05}@qq.com", "r".repeat(60))],
        Rcpts::Hosted => vec![format!("gone{index}@corp.test")],
    };
    let refused = match case.to {
        Rcpts::SecondRefused => rcpts[1..].to_vec(),
        _ => rcpts.clone(),
    };
    let from = match case.from {
        Sender::Plain => SENDER.to_owned(),
        Sender::Null => String::new(),
        Sender::Long => format!("{}@pfx.test", "l".repeat(52)),
        Sender::TooLong => format!("{}@pfx.test", "t".repeat(65)),
    };
    let mut config = Config::from_toml(case.config)
        .unwrap_or_else(|e| panic!("case {}: config: {e}", case.name));
    config.generation = case.generation;
    config.seed = index as u64;
    let server = QqMx::builder().config(config).start();
    if let Some(setup) = case.setup {
        setup(&server, &rcpts);
    }
    Running {
        case,
        server,
        from,
        rcpts,
        refused,
    }
}

impl Running {
    fn message(&self) -> String {
        let from = if self.from.is_empty() {
            "MAILER-DAEMON@pfx.test"
        } else {
            &self.from
        };
        format!(
            "From: {from}\nTo: {}\nSubject: qqmx case {}\n\n{}\nThe case is {}.\n",
            self.rcpts.join(", "),
            self.case.name,
            self.case.body,
            self.case.name,
        )
    }

    /// The text qqmx last sent of the case's kind.
    fn reply_text(&self) -> Option<String> {
        self.server
            .events()
            .into_iter()
            .rev()
            .find_map(|event| match event.kind {
                EventKind::Reply(reply) if reply.kind == self.case.kind => Some(reply.text),
                _ => None,
            })
    }

    /// What Postfix may say of `text` at the case's stage (or later ones), as its logs
    /// and DSNs word it.
    fn postfix_says(&self, text: &str) -> Vec<String> {
        let stages = Stage::ALL;
        stages
            .into_iter()
            .filter(|s| *s == self.case.stage || (self.case.or_later && *s > self.case.stage))
            .map(|stage| postfix_says(stage, text))
            .collect()
    }
}

/// What Postfix says of `text` sent at `stage`.
fn postfix_says(stage: Stage, text: &str) -> String {
    let host = "host 127.0.0.1[127.0.0.1]";
    // Postfix joins the lines of a multi-line reply with a space.
    let text = text.replace("\r\n", " ");
    // Postfix words a refusal of the greeting and one of EHLO alike.
    let command = match stage {
        Stage::Connect | Stage::Helo => return format!("{host} refused to talk to me: {text}"),
        Stage::Mail => "MAIL FROM",
        Stage::Rcpt => "RCPT TO",
        Stage::Data => "DATA",
        _ => "end of DATA",
    };
    format!("{host} said: {text} (in reply to {command} command)")
}

#[test]
fn every_refusal_is_tried_or_explained() {
    let tried: BTreeSet<ReplyKind> = cases().iter().map(|c| c.kind).collect();
    for &kind in ReplyKind::ALL {
        let code = &template(kind, Generation::G2025)[..3];
        let refusal = !code.starts_with('2') && !code.starts_with('3');
        let explained = NOT_FROM_POSTFIX.iter().any(|(k, _)| *k == kind);
        if refusal {
            assert!(
                tried.contains(&kind) != explained,
                "`{kind}` ({code}) must be either a case of tests/postfix.rs or listed in \
                 NOT_FROM_POSTFIX with the reason Postfix never meets it, not both"
            );
        } else {
            assert!(
                !explained && !tried.contains(&kind),
                "`{kind}` is not a refusal"
            );
        }
    }
}

#[test]
fn postfix_defers_every_4xx_and_bounces_every_5xx_with_qqmx_text() {
    if std::env::var_os("QQMX_SKIP_POSTFIX_TEST").is_some_and(|v| !v.is_empty()) {
        eprintln!("QQMX_SKIP_POSTFIX_TEST is set: qqmx is not tested with Postfix");
        return;
    }
    let running: Vec<Running> = cases()
        .into_iter()
        .enumerate()
        .map(|(i, case)| start(i, case))
        .collect();
    let mut routes = Vec::new();
    for run in &running {
        for rcpt in &run.rcpts {
            let port = run.server.addr().port();
            routes.push((
                rcpt.clone(),
                format!("{}:[127.0.0.1]:{port}", run.case.client.transport()),
            ));
        }
    }
    let postfix = Postfix::start(&routes).unwrap_or_else(|e| {
        panic!(
            "Postfix does not start: {e}\nThe test needs Debian's postfix package \
             (apt-get install postfix) and root; set QQMX_SKIP_POSTFIX_TEST=1 to skip it"
        )
    });
    for run in &running {
        postfix
            .send(&run.from, &run.rcpts, &run.message())
            .unwrap_or_else(|e| panic!("case {}: sendmail: {e}", run.case.name));
    }

    // Wait until every case has settled: its refused recipients bounced (a DSN names
    // them) or deferred (the queue holds them with a reason), whichever was right.
    let deadline = Instant::now() + HANG;
    let (dsns, queue) = loop {
        let dsns = postfix.dsns();
        let queue = postfix.queue().unwrap_or_else(|e| panic!("postqueue: {e}"));
        let settled = running.iter().all(|run| {
            run.refused
                .iter()
                .all(|r| dsn_for(&dsns, r).is_some() || deferred(&queue, r).is_some())
        });
        if settled {
            break (dsns, queue);
        }
        if Instant::now() > deadline {
            let unsettled: Vec<&str> = running
                .iter()
                .filter(|run| {
                    run.refused
                        .iter()
                        .any(|r| dsn_for(&dsns, r).is_none() && deferred(&queue, r).is_none())
                })
                .map(|run| run.case.name)
                .collect();
            panic!(
                "after {HANG:?}, Postfix has neither bounced nor deferred the mail of {unsettled:?}\n\
                 queue: {queue:#?}\nPostfix's log:\n{}",
                postfix.log()
            );
        }
        thread::sleep(Duration::from_millis(200));
    };

    let mut failures = String::new();
    for run in &running {
        if let Err(e) = check(run, &dsns, &queue) {
            let _ = writeln!(failures, "case {} ({}): {e}", run.case.name, run.case.kind);
        }
    }
    assert!(
        failures.is_empty(),
        "{failures}\nPostfix's log:\n{}",
        postfix.log()
    );

    // A greylisted message goes through when Postfix retries it.
    let grey = running
        .iter()
        .find(|run| run.case.kind == ReplyKind::Greylisted)
        .expect("a greylisting case");
    let id = deferred(&queue, &grey.rcpts[0])
        .map(|(id, _)| id)
        .expect("the greylisted message is deferred");
    postfix
        .retry(&id)
        .unwrap_or_else(|e| panic!("postqueue -i {id}: {e}"));
    let delivered = grey
        .server
        .wait_for_messages(1, HANG)
        .unwrap_or_else(|e| panic!("the retried greylisted message: {e}\n{}", postfix.log()));
    assert_eq!(delivered[0].rcpt_to, grey.rcpts);
    // And the first recipient of a transaction cut short by `452` was delivered.
    let cut = running
        .iter()
        .find(|run| run.case.kind == ReplyKind::TooManyRecipients)
        .expect("a too-many-recipients case");
    let delivered = cut
        .server
        .wait_for_messages(1, HANG)
        .unwrap_or_else(|e| panic!("the first recipient before 452: {e}"));
    assert_eq!(delivered[0].rcpt_to, cut.rcpts[..1]);
}

/// Checks one settled case against what qqmx sent.
fn check(run: &Running, dsns: &[Dsn], queue: &[Queued]) -> Result<(), String> {
    if let Some(says) = run.case.by_postfix {
        if let Some(text) = run.reply_text() {
            return Err(format!(
                "Postfix should have refused first, but qqmx sent {text:?}"
            ));
        }
        for rcpt in &run.refused {
            let dsn = dsn_for(dsns, rcpt).ok_or_else(|| format!("no DSN for <{rcpt}>"))?;
            if !dsn.notification.contains(says) {
                return Err(format!(
                    "the DSN's notification lacks {says:?}:\n{}",
                    dsn.notification
                ));
            }
        }
        return Ok(());
    }
    let text = run
        .reply_text()
        .ok_or_else(|| format!("qqmx never sent `{}`", run.case.kind))?;
    let class = text.as_bytes()[0];
    match (run.case.outcome, class) {
        (Outcome::Bounce, b'5') | (Outcome::Defer, b'4' | b'5') => {}
        _ => {
            return Err(format!(
                "qqmx sent {text:?}, which cannot end in {:?}",
                run.case.outcome
            ));
        }
    }
    let says = run.postfix_says(&text);
    for rcpt in &run.refused {
        match run.case.outcome {
            Outcome::Bounce => {
                if deferred(queue, rcpt).is_some() {
                    return Err(format!("<{rcpt}> is deferred, not bounced"));
                }
                let dsn = dsn_for(dsns, rcpt).ok_or_else(|| format!("no DSN for <{rcpt}>"))?;
                let report = dsn
                    .reports
                    .iter()
                    .find(|r| r.recipient == *rcpt)
                    .ok_or_else(|| format!("no delivery report for <{rcpt}>"))?;
                if report.action != "failed" || !report.status.starts_with("5.") {
                    return Err(format!(
                        "<{rcpt}>: Action {}, Status {}",
                        report.action, report.status
                    ));
                }
                let expected = format!("smtp; {}", text.replace("\r\n", " "));
                if report.diagnostic != expected {
                    return Err(format!(
                        "Diagnostic-Code of <{rcpt}>:\n  DSN:  {:?}\n  qqmx: {expected:?}",
                        report.diagnostic
                    ));
                }
                let notices: Vec<String> = says.iter().map(|s| format!("<{rcpt}>: {s}")).collect();
                if !notices.iter().any(|n| dsn.notification.contains(n)) {
                    return Err(format!(
                        "the DSN's notification lacks {notices:?}:\n{}",
                        dsn.notification
                    ));
                }
            }
            Outcome::Defer => {
                let (_, reason) =
                    deferred(queue, rcpt).ok_or_else(|| format!("<{rcpt}> is not deferred"))?;
                if !says.contains(&reason) {
                    return Err(format!(
                        "delay reason of <{rcpt}>:\n  Postfix: {reason:?}\n  expected: {says:?}"
                    ));
                }
                if dsn_for(dsns, rcpt).is_some() {
                    return Err(format!("<{rcpt}> was bounced as well as deferred"));
                }
            }
        }
    }
    Ok(())
}
