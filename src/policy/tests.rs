//! Table-driven tests of the policy: one row per rule and edge.

use std::net::IpAddr;
use std::time::{Duration, SystemTime};

use super::*;
use crate::clock::parse_rfc3339;
use crate::config::Config;
use crate::reply::ReplyKind::{self, *};

/// Monday 2 June 2025, 09:00 in China.
fn t0() -> SystemTime {
    parse_rfc3339("2025-06-02T01:00:00Z").expect("time")
}

fn at(secs: u64) -> SystemTime {
    t0() + Duration::from_secs(secs)
}

fn ip(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// A policy with every limit off, then `toml` on top.
fn policy(toml: &str) -> Policy {
    let base = Config::default().no_limits();
    let extra = Config::from_toml(toml).expect("test config");
    let mut config = base;
    if toml.contains("[quotas") || toml.contains("deny_after") {
        config.quotas = extra.quotas;
    }
    if toml.contains("[reputation") {
        config.reputation = extra.reputation;
    }
    if toml.contains("[content") {
        config.content = extra.content;
    }
    if toml.contains("[memory") {
        config.memory = extra.memory;
    }
    if toml.contains("[stages") {
        config.stages = extra.stages;
    }
    config.blacklist = extra.blacklist;
    config.mailboxes = extra.mailboxes;
    config.limits = extra.limits;
    config.seed = extra.seed;
    Policy::new(&config).expect("valid config")
}

/// One whole message; the first refusal, or the final acceptance.
fn send(p: &mut Policy, from_ip: IpAddr, from: &str, rcpts: &[&str], now: SystemTime) -> Decision {
    send_to(p, from_ip, from, rcpts, now).0
}

/// One whole message; the outcome and the recipients accepted at RCPT.
fn send_to(
    p: &mut Policy,
    from_ip: IpAddr,
    from: &str,
    rcpts: &[&str],
    now: SystemTime,
) -> (Decision, Vec<String>) {
    let connect = p.connect(from_ip, now);
    let mut accepted = Vec::new();
    let outcome = transaction(p, from_ip, from, rcpts, now, &connect, &mut accepted);
    p.disconnect(from_ip);
    (outcome, accepted)
}

fn transaction(
    p: &mut Policy,
    from_ip: IpAddr,
    from: &str,
    rcpts: &[&str],
    now: SystemTime,
    connect: &Connect,
    accepted: &mut Vec<String>,
) -> Decision {
    if !connect.decision.is_accept() {
        return connect.decision.clone();
    }
    let deferred = |stage| connect.deferred.iter().find(|d| d.stage == stage).cloned();
    let base = Facts::new(from_ip);
    if let Some(d) = deferred(Stage::Helo) {
        return d;
    }
    let d = p.check(Stage::Helo, &base, now);
    if !d.is_accept() {
        return d;
    }
    if let Some(d) = deferred(Stage::Mail) {
        return d;
    }
    let d = p.check(Stage::Mail, &base.from(from), now);
    if !d.is_accept() {
        return d;
    }
    let mut last = d;
    for rcpt in rcpts {
        if let Some(d) = deferred(Stage::Rcpt) {
            return d;
        }
        let d = p.check(
            Stage::Rcpt,
            &base.from(from).rcpts(accepted).rcpt(rcpt),
            now,
        );
        if d.is_accept() {
            if !contains_address(accepted, rcpt) {
                accepted.push((*rcpt).to_owned());
            }
        } else {
            last = d;
        }
    }
    if accepted.is_empty() {
        return last;
    }
    if let Some(d) = deferred(Stage::EndOfData) {
        return d;
    }
    let body = format!("Subject: hi\r\n\r\nHello {from}");
    p.end_of_data(
        &base.from(from).rcpts(accepted).message(body.as_bytes()),
        now,
    )
}

fn reply(d: &Decision) -> Option<ReplyKind> {
    d.reply()
}

#[test]
fn recipients_table() {
    let default = policy("");
    let hosted = policy(
        "[mailboxes]\nhosted_domains = [\"Example.COM\"]\nlisted = [\"alice@example.com\"]\n",
    );
    let all = policy("[mailboxes]\nexisting = \"all\"\n");
    let listed = policy("[mailboxes]\nexisting = \"listed\"\nlisted = [\"12345@qq.com\"]\n");
    let rows: &[(&Policy, &str, Option<ReplyKind>)] = &[
        (&default, "10001@qq.com", None),
        (&default, "12345678901@qq.com", None),
        (&default, "123456789012@qq.com", Some(MailboxNotFound)),
        (&default, "1234@qq.com", Some(MailboxNotFound)),
        (&default, "01234@qq.com", Some(MailboxNotFound)),
        (&default, "alice@qq.com", Some(MailboxNotFound)),
        (&default, "10001@FoxMail.com", None),
        (&default, "10001@vip.qq.com", None),
        (&default, "10001@example.com", Some(RelayDenied)),
        (&default, "not an address", Some(BadAddressSyntax)),
        (&default, "a@@qq.com", Some(BadAddressSyntax)),
        (&default, "@qq.com", Some(BadAddressSyntax)),
        (&default, "a@-qq.com", Some(BadAddressSyntax)),
        (&default, "用户@qq.com", Some(BadAddressSyntax)),
        (&hosted, "ALICE@example.com", None),
        (&hosted, "bob@example.com", Some(ExmailMailboxNotFound)),
        (&all, "anyone@foxmail.com", None),
        (&all, "anyone@gmail.com", Some(RelayDenied)),
        (&listed, "12345@qq.com", None),
        (&listed, "12346@qq.com", Some(MailboxNotFound)),
    ];
    for (p, to, expected) in rows {
        let d = p.rcpt_basics(&Facts::new(ip(1)).from("a@example.org").rcpt(to));
        assert_eq!(
            d.as_ref().and_then(Decision::reply),
            *expected,
            "RCPT TO:<{to}>"
        );
    }
}

#[test]
fn mail_from_table() {
    let mut p = policy("[limits]\nmax_message_size = 1000\n");
    let mut mail = |from, size| {
        p.check(
            Stage::Mail,
            &Facts::new(ip(1)).from(from).mail_params(size, false),
            t0(),
        )
    };
    assert!(mail("", 0).is_accept(), "null sender");
    assert!(
        mail("a@example.org", 1000).is_accept(),
        "exactly at the limit"
    );
    let over = mail("a@example.org", 1001);
    assert_eq!(reply(&over), Some(MessageTooLarge));
    assert_eq!(over.detail, "SIZE=1001 is over the limit of 1000");
    assert_eq!(reply(&mail("a.example.org", 0)), Some(BadAddressSyntax));
    let mut p = policy("[limits]\nmax_recipients = 2\n");
    let rcpts = ["10001@qq.com".to_owned(), "10002@qq.com".to_owned()];
    let third = p.check(
        Stage::Rcpt,
        &Facts::new(ip(1))
            .from("a@b.c")
            .rcpts(&rcpts)
            .rcpt("10003@qq.com"),
        t0(),
    );
    assert_eq!(reply(&third), Some(TooManyRecipients));
}

const MINUTE_3: &str = "[quotas.ip_messages]\nstage = \"end_of_data\"\nreply = \"ip_frequency\"\nminute = { limit = 3, block = \"10m\" }\n";

#[test]
fn ip_minute_tier_exactly_at_the_limit_one_over_and_expiry() {
    let mut p = policy(MINUTE_3);
    let rcpt = ["10001@qq.com"];
    // (seconds after t0, refused with)
    let rows: &[(u64, Option<ReplyKind>)] = &[
        (0, None),
        (1, None),
        (2, None),               // exactly at the limit
        (3, Some(IpFrequency)),  // one over: blocked for 10 minutes from here
        (65, Some(IpFrequency)), // a new minute, but still blocked
        (602, Some(IpFrequency)),
        (603, None), // the block ended
    ];
    for &(secs, expected) in rows {
        let d = send(&mut p, ip(2), "a@example.org", &rcpt, at(secs));
        assert_eq!(reply(&d), expected, "t0+{secs}s: {d}");
    }
    let d = send(&mut p, ip(2), "a@example.org", &rcpt, at(604));
    assert!(d.is_accept());
}

#[test]
fn the_refusal_explains_itself() {
    let mut p = policy(MINUTE_3);
    for s in 0..3 {
        send(&mut p, ip(3), "a@example.org", &["10001@qq.com"], at(s));
    }
    let d = send(&mut p, ip(3), "a@example.org", &["10001@qq.com"], at(10));
    assert_eq!(d.rule, "quota.ip_messages");
    assert_eq!(d.key.as_deref(), Some("ip:127.0.0.3"));
    assert_eq!(
        (d.counter, d.limit, d.window),
        (Some(3), Some(3), Some(Window::Minute))
    );
    assert_eq!(d.block_until, Some(at(610)));
    assert_eq!(d.detail, "3 of 3 in this minute; one more is over");
    assert_eq!(
        p.blocks(at(11)),
        [BlockInfo {
            quota: QuotaName::IpMessages,
            key: "127.0.0.3".into(),
            window: Some(Window::Minute),
            until: at(610),
            refused: 1
        }]
    );
}

#[test]
fn two_ips_have_independent_quotas() {
    let mut p = policy(MINUTE_3);
    for s in 0..4 {
        send(&mut p, ip(2), "a@example.org", &["10001@qq.com"], at(s));
    }
    assert!(send(&mut p, ip(3), "a@example.org", &["10001@qq.com"], at(5)).is_accept());
}

#[test]
fn the_day_tier_lifts_at_midnight_china_time() {
    let mut p = policy(
        "[quotas.ip_messages]\nstage = \"end_of_data\"\nreply = \"ip_frequency\"\nday = { limit = 1, block = \"until_midnight\" }\n",
    );
    // 09:00 CST; midnight CST is 15 hours later, 16:00 UTC.
    assert!(send(&mut p, ip(2), "a@example.org", &["10001@qq.com"], at(0)).is_accept());
    let d = send(&mut p, ip(2), "a@example.org", &["10001@qq.com"], at(3600));
    assert_eq!(d.block_until, Some(at(15 * 3600)));
    assert!(
        !send(
            &mut p,
            ip(2),
            "a@example.org",
            &["10001@qq.com"],
            at(15 * 3600 - 1)
        )
        .is_accept()
    );
    assert!(
        send(
            &mut p,
            ip(2),
            "a@example.org",
            &["10001@qq.com"],
            at(15 * 3600)
        )
        .is_accept()
    );
}

#[test]
fn sender_domain_and_recipient_quotas_at_their_stages() {
    let mut p = policy(
        "[quotas.sender]\nstage = \"mail\"\nreply = \"sender_frequency\"\nhour = { limit = 1, block = \"1h\" }\n\
         [quotas.domain]\nstage = \"mail\"\nreply = \"domain_frequency\"\nhour = { limit = 2, block = \"1h\" }\n\
         [quotas.recipient]\nstage = \"rcpt\"\nreply = \"mailbox_unavailable\"\nhour = { limit = 1, block = \"1h\" }\n",
    );
    type Row<'a> = (&'a str, &'a str, Option<(ReplyKind, Stage)>);
    let rows: &[Row<'_>] = &[
        ("a@x.org", "10001@qq.com", None),
        (
            "a@x.org",
            "10002@qq.com",
            Some((SenderFrequency, Stage::Mail)),
        ),
        ("b@x.org", "10002@qq.com", None),
        (
            "c@x.org",
            "10003@qq.com",
            Some((DomainFrequency, Stage::Mail)),
        ),
        (
            "d@y.org",
            "10001@qq.com",
            Some((MailboxUnavailable, Stage::Rcpt)),
        ),
    ];
    for (i, (from, to, expected)) in rows.iter().enumerate() {
        let d = send(&mut p, ip(2), from, &[to], at(i as u64));
        assert_eq!(
            d.reply().map(|r| (r, d.stage)),
            *expected,
            "{from} -> {to}: {d}"
        );
    }
}

#[test]
fn connection_quota_is_counted_at_connect_and_answered_at_end_of_data() {
    let mut p = policy(
        "[quotas.ip_connections]\nstage = \"end_of_data\"\nreply = \"connection_frequency\"\nminute = { limit = 2, block = \"5m\" }\n",
    );
    assert!(send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], at(0)).is_accept());
    assert!(send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], at(1)).is_accept());
    let third = p.connect(ip(2), at(2));
    assert!(third.decision.is_accept(), "greeted as usual");
    let d = transaction(
        &mut p,
        ip(2),
        "a@x.org",
        &["10001@qq.com"],
        at(2),
        &third,
        &mut Vec::new(),
    );
    assert_eq!(
        (reply(&d), d.stage),
        (Some(ConnectionFrequency), Stage::EndOfData)
    );
}

#[test]
fn concurrent_connections_per_ip() {
    let mut p = policy(
        "[quotas.ip_concurrent]\nenabled = true\nlimit = 2\nstage = \"connect\"\nreply = \"connection_frequency\"\n",
    );
    let first = p.connect(ip(2), t0());
    let second = p.connect(ip(2), t0());
    let third = p.connect(ip(2), t0());
    assert!(first.decision.is_accept() && second.decision.is_accept());
    assert_eq!(
        third.decision.verdict,
        Verdict::Disconnect(ConnectionFrequency)
    );
    p.disconnect(ip(2));
    p.disconnect(ip(2));
    assert!(p.connect(ip(2), t0()).decision.is_accept());
}

#[test]
fn a_blocked_ip_that_keeps_trying_is_denied_at_connect() {
    let mut p = policy(&format!("{MINUTE_3}[quotas]\ndeny_after = 3\n"));
    for s in 0..6 {
        send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], at(s));
    }
    let d = send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], at(6));
    assert_eq!(d.verdict, Verdict::Disconnect(ConnectionDenied));
    assert_eq!(d.rule, "quota.deny_after");
    assert!(
        send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], at(700)).is_accept(),
        "until the block ends"
    );
}

#[test]
fn connection_denied_can_wait_for_a_later_stage() {
    let mut p = policy(&format!(
        "{MINUTE_3}[quotas]\ndeny_after = 3\n[stages]\nconnection_denied = \"mail\"\n"
    ));
    for s in 0..6 {
        send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], at(s));
    }
    let c = p.connect(ip(2), at(6));
    assert!(c.decision.is_accept(), "greeted: {:?}", c.decision);
    let d = c
        .deferred
        .iter()
        .find(|d| d.stage == Stage::Mail)
        .expect("deferred to MAIL");
    assert_eq!(d.verdict, Verdict::Reject(ConnectionDenied));
}

#[test]
fn warm_up_ramps_by_age_in_days() {
    let mut p = policy("[reputation]\nwarmup = true\n");
    let mut sent = |day: u64, n: u64| {
        (0..n)
            .map(|i| {
                send(
                    &mut p,
                    ip(9),
                    "a@x.org",
                    &["10001@qq.com"],
                    at(day * 86_400 + i),
                )
            })
            .filter(Decision::is_accept)
            .count()
    };
    assert_eq!(sent(0, 60), 50, "day 1");
    assert_eq!(sent(3, 200), 150, "day 4");
    assert_eq!(sent(7, 400), 300, "day 8");
    assert_eq!(sent(15, 400), 350, "day 16: 300 + 2 x 25");
    let d = send(&mut p, ip(10), "a@x.org", &["10001@qq.com"], at(0));
    assert!(d.is_accept(), "another IP has its own age");
}

#[test]
fn warm_up_refusals_name_the_rule() {
    let mut p = policy("[reputation]\nwarmup = true\n");
    for i in 0..50 {
        send(&mut p, ip(9), "a@x.org", &["10001@qq.com"], at(i));
    }
    let d = send(&mut p, ip(9), "a@x.org", &["10001@qq.com"], at(60));
    assert_eq!(
        (reply(&d), d.rule.as_ref()),
        (Some(IpFrequency), "reputation.warmup")
    );
    assert_eq!(d.detail, "day 1 of a new IP: 50 messages allowed today");
}

#[test]
fn static_blacklists_with_expiry_and_whitelist_over_blacklist() {
    let mut p = policy(
        "[blacklist]\nips = [\"127.0.1.0/24\", { value = \"127.0.0.5\", until = \"2025-06-02T02:00:00Z\" }]\n\
         senders = [\"spam@x.org\"]\ndomains = [\"bad.example\"]\n",
    );
    let rows: &[(IpAddr, &str, u64, Option<ReplyKind>)] = &[
        (
            IpAddr::from([127, 0, 1, 9]),
            "a@x.org",
            0,
            Some(IpFrequency),
        ),
        (ip(5), "a@x.org", 0, Some(IpFrequency)),
        (ip(5), "a@x.org", 3600, None), // the listing ended at 10:00 CST
        (ip(6), "spam@x.org", 0, Some(SuspectedSpamSender)),
        (ip(6), "anyone@bad.example", 0, Some(SuspectedSpamSender)),
        (ip(6), "fine@x.org", 0, None),
    ];
    for &(client, from, secs, expected) in rows {
        let d = send(&mut p, client, from, &["10001@qq.com"], at(secs));
        assert_eq!(reply(&d), expected, "{client} {from} +{secs}s: {d}");
    }
    p.whitelist("10001@qq.com", "bad.example");
    assert!(send(&mut p, ip(6), "anyone@bad.example", &["10001@qq.com"], t0()).is_accept());
    p.whitelist("10001@qq.com", "a@x.org");
    assert!(
        send(
            &mut p,
            IpAddr::from([127, 0, 1, 9]),
            "a@x.org",
            &["10001@qq.com"],
            t0()
        )
        .is_accept()
    );
    assert!(
        !send(
            &mut p,
            IpAddr::from([127, 0, 1, 9]),
            "a@x.org",
            &["10002@qq.com"],
            t0()
        )
        .is_accept()
    );
}

#[test]
fn the_blacklist_reply_and_stage_are_configurable() {
    let mut p = policy(
        "[blacklist]\nips = [\"127.0.0.7\"]\nip_reply = \"connection_denied\"\nip_stage = \"connect\"\n",
    );
    let d = p.connect(ip(7), t0());
    assert_eq!(d.decision.verdict, Verdict::Disconnect(ConnectionDenied));
}

#[test]
fn random_blacklisting_follows_the_seed() {
    let listed = |seed: u64| {
        let mut p = policy(&format!(
            "seed = {seed}\n[blacklist]\nrandom_ip_probability = 0.3\n"
        ));
        (1..=40u8)
            .filter(|&last| !send(&mut p, ip(last), "a@x.org", &["10001@qq.com"], t0()).is_accept())
            .collect::<Vec<_>>()
    };
    let a = listed(11);
    assert_eq!(a, listed(11), "the same seed lists the same IPs");
    assert_ne!(a, listed(12));
    assert!((3..25).contains(&a.len()), "{} of 40 at p=0.3", a.len());
}

#[test]
fn random_listings_end_after_their_duration() {
    let mut p = policy("[blacklist]\nrandom_ip_probability = 1.0\nrandom_ip_duration = \"1h\"\n");
    let d = send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], t0());
    assert_eq!(
        (reply(&d), d.rule.as_ref()),
        (Some(IpFrequency), "blacklist.ip.random")
    );
    assert!(send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], at(3600)).is_accept());
}

#[test]
fn complaints_drive_reputation_to_zero_and_whitelists_are_dropped_by_new_ones() {
    let mut p = policy(
        "[reputation]\ninitial = 30\ncomplaint_penalty = 10\ncomplaint_window = \"60d\"\nwarmup = false\n",
    );
    for _ in 0..3 {
        assert!(send(&mut p, ip(4), "news@x.org", &["10001@qq.com"], t0()).is_accept());
        p.complain(ip(4), None, t0());
    }
    assert_eq!(p.reputation(ip(4), t0()), 0);
    let d = send(
        &mut p,
        ip(4),
        "news@x.org",
        &["10001@qq.com"],
        at(86_400 * 30),
    );
    assert_eq!(
        (reply(&d), d.rule.as_ref()),
        (Some(IpFrequency), "blacklist.ip.reputation")
    );
    assert_eq!(d.block_until, Some(at(60 * 86_400)));

    p.whitelist("10001@qq.com", "news@x.org");
    assert!(send(&mut p, ip(4), "news@x.org", &["10001@qq.com"], at(1)).is_accept());
    p.complain(ip(4), Some("news@x.org"), at(2));
    assert!(!send(&mut p, ip(4), "news@x.org", &["10001@qq.com"], at(3)).is_accept());
    assert!(
        send(
            &mut p,
            ip(4),
            "news@x.org",
            &["10001@qq.com"],
            at(61 * 86_400)
        )
        .is_accept(),
        "complaints age out"
    );
}

#[test]
fn content_rules() {
    let mut p = policy(
        "[content]\nbulk_recipients = 2\nbulk_window = \"1h\"\n\
         phrases = [{ phrase = \"cheap pills\" }, { phrase = \"lottery\", reply = \"spam_embedded\" }]\n\
         [content.personal_blacklists]\n\"10009@qq.com\" = [\"x.org\"]\n",
    );
    let eod = |p: &mut Policy, rcpts: &[String], body: &str, secs| {
        let facts = Facts::new(ip(2))
            .from("a@x.org")
            .rcpts(rcpts)
            .message(body.as_bytes());
        p.end_of_data(&facts, at(secs))
    };
    let one = |r: &str| vec![r.to_owned()];
    let news = "Subject: news\r\n\r\nThe same news for everyone.";
    assert!(eod(&mut p, &one("10001@qq.com"), news, 0).is_accept());
    assert!(eod(&mut p, &one("10002@qq.com"), news, 1).is_accept());
    assert!(
        eod(&mut p, &one("10001@qq.com"), news, 2).is_accept(),
        "not a new recipient"
    );
    let bulk = eod(&mut p, &one("10003@qq.com"), news, 3);
    assert_eq!(
        (reply(&bulk), bulk.counter, bulk.limit),
        (Some(ContentDenied), Some(3), Some(2))
    );
    assert!(
        eod(&mut p, &one("10003@qq.com"), news, 3600).is_accept(),
        "a new window"
    );
    let pills = eod(
        &mut p,
        &one("10001@qq.com"),
        "Subject: CHEAP PILLS\r\n\r\nx",
        3601,
    );
    assert_eq!(reply(&pills), Some(SuspectedSpam));
    let lottery = eod(
        &mut p,
        &one("10001@qq.com"),
        "Subject: y\r\n\r\nYou won the Lottery",
        3602,
    );
    assert_eq!(reply(&lottery), Some(SpamEmbedded));
    assert_eq!(
        p.reputation(ip(2), at(3603)),
        70,
        "three content complaints"
    );
    let personal = p.check(
        Stage::Rcpt,
        &Facts::new(ip(2)).from("a@X.org").rcpt("10009@qq.com"),
        t0(),
    );
    assert_eq!(reply(&personal), Some(RejectedByRecipients));
}

#[test]
fn backscatter_needs_a_known_outbound_message() {
    let mut p = policy("[content]\nbackscatter = true\n");
    let bounce = |p: &mut Policy| {
        p.check(
            Stage::Rcpt,
            &Facts::new(ip(2)).from("").rcpt("10001@qq.com"),
            t0(),
        )
    };
    assert_eq!(reply(&bounce(&mut p)), Some(BounceAttack));
    p.record_outbound("10001@qq.com", ip(2));
    assert!(bounce(&mut p).is_accept());
}

#[test]
fn idle_state_expires() {
    let mut p = policy(MINUTE_3);
    for last in 1..=100u8 {
        send(&mut p, ip(last), "a@x.org", &["10001@qq.com"], t0());
    }
    assert!(p.tracked_keys() >= 200);
    p.connect(ip(1), at(3 * 86_400));
    p.disconnect(ip(1));
    assert_eq!(p.tracked_keys(), 101, "counters are gone, IP ages stay");
    p.connect(ip(1), at(91 * 86_400));
    p.disconnect(ip(1));
    assert!(p.tracked_keys() <= 2, "{} keys left", p.tracked_keys());
}

#[test]
fn runtime_control() {
    let mut p = policy(MINUTE_3);
    p.set_limit(QuotaName::IpMessages, Window::Minute, Some(1));
    assert!(send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], t0()).is_accept());
    assert!(!send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], t0()).is_accept());
    p.reset_counters();
    assert!(send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], t0()).is_accept());
    p.blacklist_ip("127.0.0.0/8".parse().expect("net"), Some(at(60)));
    assert!(!send(&mut p, ip(3), "a@x.org", &["10001@qq.com"], t0()).is_accept());
    p.unblacklist_ip("127.0.0.0/8".parse().expect("net"));
    assert!(send(&mut p, ip(3), "a@x.org", &["10001@qq.com"], t0()).is_accept());
    p.blacklist_sender("x.org", None);
    assert!(!send(&mut p, ip(4), "a@x.org", &["10001@qq.com"], t0()).is_accept());
    p.unblacklist_sender("x.org");
    p.block_for_recipient("10001@qq.com", "a@x.org");
    assert_eq!(
        reply(&send(&mut p, ip(4), "a@x.org", &["10001@qq.com"], t0())),
        Some(RejectedByRecipients)
    );
}

mod properties {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Send { ip: u8, sender: u8, rcpts: Vec<u8> },
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..3u8, 0..3u8, proptest::collection::vec(0..4u8, 1..3))
                .prop_map(|(ip, sender, rcpts)| Op::Send { ip, sender, rcpts }),
            1 => prop_oneof![0..120u64, 0..7200u64, 0..200_000u64].prop_map(Op::Advance),
        ]
    }

    const LIMITS: &str = "\
        [quotas.ip_messages]\nstage = \"end_of_data\"\nreply = \"ip_frequency\"\n\
        minute = { limit = 3, block = \"2m\" }\nhour = { limit = 8, block = \"20m\" }\nday = { limit = 15, block = \"until_midnight\" }\n\
        [quotas.sender]\nstage = \"mail\"\nreply = \"sender_frequency\"\nminute = { limit = 2, block = \"1m\" }\nhour = { limit = 6, block = \"1h\" }\n\
        [quotas.domain]\nstage = \"mail\"\nreply = \"domain_frequency\"\nhour = { limit = 9, block = \"30m\" }\n\
        [quotas.recipient]\nstage = \"rcpt\"\nreply = \"mailbox_unavailable\"\nminute = { limit = 1, block = \"5m\" }\nday = { limit = 4, block = \"until_midnight\" }\n\
        [reputation]\nwarmup = true\nwarmup_schedule = [{ until_day = 1, daily = 5 }, { until_day = 2, daily = 10 }]\n";

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the sends and clock moves, no key ever has more accepted messages in
        /// a window than its limit.
        #[test]
        fn no_key_exceeds_its_limit_in_any_window(ops in proptest::collection::vec(op(), 1..120)) {
            let mut p = policy(LIMITS);
            let mut now = t0();
            // (quota, key) -> accepted timestamps
            let mut seen: HashMap<(&str, String), Vec<u64>> = HashMap::new();
            for op in ops {
                match op {
                    Op::Advance(secs) => now += Duration::from_secs(secs),
                    Op::Send { ip: last, sender, rcpts } => {
                        let from = format!("s{sender}@d{}.org", sender % 2);
                        let rcpts: Vec<String> = rcpts.iter().map(|r| format!("1000{r}@qq.com")).collect();
                        let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
                        let (d, taken) = send_to(&mut p, ip(last + 2), &from, &refs, now);
                        if d.is_accept() {
                            let t = crate::clock::unix_secs(now);
                            seen.entry(("ip", last.to_string())).or_default().push(t);
                            seen.entry(("sender", from.clone())).or_default().push(t);
                            seen.entry(("domain", format!("d{}", sender % 2))).or_default().push(t);
                            for r in taken {
                                seen.entry(("rcpt", r)).or_default().push(t);
                            }
                        }
                    }
                }
            }
            let limits: &[(&str, Window, u64)] = &[
                ("ip", Window::Minute, 3), ("ip", Window::Hour, 8), ("ip", Window::Day, 15),
                ("sender", Window::Minute, 2), ("sender", Window::Hour, 6),
                ("domain", Window::Hour, 9),
                ("rcpt", Window::Minute, 1), ("rcpt", Window::Day, 4),
            ];
            for ((quota, key), times) in &seen {
                for &(q, window, limit) in limits {
                    if q != *quota {
                        continue;
                    }
                    let mut per: HashMap<u64, u64> = HashMap::new();
                    for t in times {
                        *per.entry(window.index(*t)).or_default() += 1;
                    }
                    let worst = per.values().max().copied().unwrap_or(0);
                    prop_assert!(worst <= limit, "{quota} {key}: {worst} in one {window}, limit {limit}");
                }
            }
        }

        /// With a tiny cap, the policy tracks no more keys than the cap, unless the keys
        /// that must stay (blocks in force) leave no room: then no more than those and
        /// the keys of the message at hand (at most 8 here).
        #[test]
        fn the_cap_gives_way_only_to_keys_that_must_stay(ops in proptest::collection::vec(op(), 1..120)) {
            const CAP: usize = 6;
            let mut p = policy(&format!("{LIMITS}[memory]\nmax_tracked_keys = {CAP}\n"));
            let mut now = t0();
            for op in ops {
                match op {
                    Op::Advance(secs) => now += Duration::from_secs(secs),
                    Op::Send { ip: last, sender, rcpts } => {
                        let from = format!("s{sender}@d{}.org", sender % 2);
                        let rcpts: Vec<String> = rcpts.iter().map(|r| format!("1000{r}@qq.com")).collect();
                        let refs: Vec<&str> = rcpts.iter().map(String::as_str).collect();
                        send_to(&mut p, ip(last + 2), &from, &refs, now);
                        let t = crate::clock::unix_secs(now);
                        let blocked = p.counters.values().filter(|c| c.blocked(t)).count();
                        prop_assert!(
                            p.tracked_keys() <= CAP.max(blocked + 8),
                            "{} keys, {blocked} blocked", p.tracked_keys()
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_new_tier_gets_the_block_of_its_own_quota() {
    let mut p = policy("[quotas.recipient]\nenabled = true\nminute = \"off\"\nday = \"off\"\n");
    p.set_limit(QuotaName::Recipient, Window::Minute, Some(1));
    p.set_limit(QuotaName::Recipient, Window::Day, Some(9));
    let q = &p.quotas.recipient;
    let defaults = Quotas::default().recipient;
    assert_eq!(q.minute.map(|t| t.block), defaults.minute.map(|t| t.block));
    assert_eq!(q.day.map(|t| t.block), defaults.day.map(|t| t.block));
    assert_eq!(
        q.minute.map(|t| t.block),
        Some(crate::config::Block::For(Duration::from_secs(300))),
        "the recipient quota blocks for 5 minutes, not ip_messages' 10"
    );
}

#[test]
fn a_short_idle_expiry_does_not_reset_the_day_quota() {
    let mut p = policy(
        "[quotas.sender]\nenabled = true\nminute = \"off\"\nhour = \"off\"\nday = { limit = 2 }\n\
         [memory]\nidle_counters = \"1h\"\n",
    );
    let mut send_at = |secs| send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], at(secs));
    assert!(send_at(0).is_accept());
    assert!(send_at(1).is_accept());
    // Two hours of silence: the counter is idle past `idle_counters` but its day is
    // not over, so it must not be forgotten.
    let d = send_at(2 * 3600);
    assert_eq!(reply(&d), Some(SenderFrequency), "{d}");
    let d = send_at(5 * 3600);
    assert_eq!(
        reply(&d),
        Some(SenderFrequency),
        "blocked until midnight: {d}"
    );
    assert!(send_at(15 * 3600).is_accept(), "a new day (UTC+8)");
}

#[test]
fn refused_keys_leave_no_state_behind() {
    let mut p = policy(
        "[quotas.sender]\nenabled = true\n[quotas.domain]\nenabled = true\n\
         [quotas.recipient]\nenabled = true\n[quotas.ip_messages]\nenabled = true\n\
         [content]\nbulk_recipients = 1\nphrases = [{ phrase = \"cheap pills\" }]\n\
         [blacklist]\nrandom_domain_probability = 0.001\n\
         [reputation]\ncontent_complaints = false\nwarmup = false\n",
    );
    let before = p.tracked_keys();
    for i in 0..1000 {
        let from = format!("s{i}@d{i}.org");
        let rcpts = [
            format!("{}@qq.com", 10_000 + i),
            format!("{}@qq.com", 20_000 + i),
        ];
        let mail = Facts::new(ip(2)).from(&from);
        // Looked at at MAIL and RCPT, then refused by content at the end of data.
        assert!(p.check(Stage::Mail, &mail, t0()).is_accept());
        for r in &rcpts {
            p.check(Stage::Rcpt, &mail.rcpt(r), t0());
        }
        let spam = mail
            .rcpts(&rcpts[..1])
            .message(b"Subject: cheap pills\r\n\r\nx");
        assert!(!p.end_of_data(&spam, t0()).is_accept());
        // A new body to two recipients, over the bulk limit of one.
        let body = format!("Subject: hi\r\n\r\nbody {i}");
        let bulk = mail.rcpts(&rcpts).message(body.as_bytes());
        assert_eq!(p.end_of_data(&bulk, t0()).rule, "content.bulk");
    }
    let grown = p.tracked_keys() - before;
    assert!(
        grown <= 5,
        "{grown} keys remembered for 1000 refused senders"
    );
}

#[test]
fn repeat_refusals_under_the_warm_up_report_its_allowance() {
    let mut p = policy("[quotas.recipient]\nenabled = false\n[reputation]\nwarmup = true\n");
    for i in 0..50 {
        assert!(send(&mut p, ip(9), "a@x.org", &["10001@qq.com"], at(i)).is_accept());
    }
    let first = send(&mut p, ip(9), "a@x.org", &["10001@qq.com"], at(60));
    let again = send(&mut p, ip(9), "a@x.org", &["10001@qq.com"], at(120));
    for d in [&first, &again] {
        assert_eq!(d.rule, "reputation.warmup", "{d}");
        assert_eq!(
            (d.counter, d.limit, d.window),
            (Some(50), Some(50), Some(Window::Day)),
            "{d}"
        );
        assert_eq!(d.block_until, Some(at(15 * 3600)), "midnight UTC+8");
    }
}

#[test]
fn a_reputation_listing_ends_when_enough_complaints_have_aged_out() {
    let mut p = policy(
        "[reputation]\ninitial = 30\ncomplaint_penalty = 10\ncomplaint_window = \"60d\"\nwarmup = false\n",
    );
    // Five complaints on days 0 to 4: reputation 0 until only two count, i.e. until the
    // third (day 2) is 60 days old.
    for day in 0..5 {
        p.complain(ip(4), None, at(day * 86_400));
    }
    let d = send(&mut p, ip(4), "a@x.org", &["10001@qq.com"], at(5 * 86_400));
    assert_eq!(d.rule, "blacklist.ip.reputation");
    assert_eq!(d.block_until, Some(at(62 * 86_400)));
    let d = send(
        &mut p,
        ip(4),
        "a@x.org",
        &["10001@qq.com"],
        at(62 * 86_400 - 1),
    );
    assert!(!d.is_accept(), "still listed a second before");
    let d = send(&mut p, ip(4), "a@x.org", &["10001@qq.com"], at(62 * 86_400));
    assert!(d.is_accept(), "{d}");
}

#[test]
fn a_whitelist_lets_mail_through_to_its_recipient_among_others() {
    let mut p = policy("[blacklist]\nips = [\"127.0.0.5\"]\n");
    p.whitelist("10001@qq.com", "a@x.org");
    let (d, accepted) = send_to(
        &mut p,
        ip(5),
        "a@x.org",
        &["10002@qq.com", "10001@qq.com", "10003@qq.com"],
        t0(),
    );
    assert!(d.is_accept(), "{d}");
    assert_eq!(accepted, ["10001@qq.com"], "the others are refused at RCPT");
    let refused = p.check(
        Stage::Rcpt,
        &Facts::new(ip(5)).from("a@x.org").rcpt("10002@qq.com"),
        t0(),
    );
    assert_eq!(
        (reply(&refused), refused.rule.as_ref()),
        (Some(IpFrequency), "blacklist.ip")
    );
    // A sender nobody whitelisted is still refused at the configured stage.
    let (d, accepted) = send_to(&mut p, ip(5), "b@x.org", &["10001@qq.com"], t0());
    assert_eq!((reply(&d), d.stage), (Some(IpFrequency), Stage::EndOfData));
    assert_eq!(accepted, ["10001@qq.com"]);
}

#[test]
fn a_whitelist_beats_an_ip_blacklist_answered_before_rcpt() {
    for stage in ["connect", "helo", "mail"] {
        let mut p = policy(&format!(
            "[blacklist]\nips = [\"127.0.0.5\"]\nip_stage = \"{stage}\"\n\
             senders = [\"a@x.org\"]\nsender_stage = \"mail\"\n"
        ));
        p.whitelist("10001@qq.com", "x.org");
        let (d, accepted) = send_to(
            &mut p,
            ip(5),
            "a@x.org",
            &["10001@qq.com", "10002@qq.com"],
            t0(),
        );
        assert!(d.is_accept(), "{stage}: {d}");
        assert_eq!(accepted, ["10001@qq.com"], "{stage}");
        let d = send(&mut p, ip(5), "a@x.org", &["10002@qq.com"], t0());
        assert_eq!(reply(&d), Some(IpFrequency), "{stage}: {d}");
        assert_eq!(d.stage, Stage::Rcpt, "{stage}: postponed to RCPT");
        let d = send(&mut p, ip(5), "c@y.org", &["10001@qq.com"], t0());
        assert!(!d.is_accept(), "{stage}: a sender nobody whitelisted: {d}");
    }
}

#[test]
fn content_complaints_drop_whitelists() {
    let mut p = policy(
        "[blacklist]\nips = [\"127.0.0.5\"]\n\
         [content]\nphrases = [{ phrase = \"cheap pills\" }]\n",
    );
    p.whitelist("10001@qq.com", "a@x.org");
    assert!(send(&mut p, ip(5), "a@x.org", &["10001@qq.com"], t0()).is_accept());
    let rcpts = ["10001@qq.com".to_owned()];
    let spam = Facts::new(ip(5))
        .from("a@x.org")
        .rcpts(&rcpts)
        .message(b"Subject: cheap pills\r\n\r\nx");
    assert_eq!(reply(&p.end_of_data(&spam, at(1))), Some(SuspectedSpam));
    let d = send(&mut p, ip(5), "a@x.org", &["10001@qq.com"], at(2));
    assert_eq!(
        (reply(&d), d.rule.as_ref()),
        (Some(IpFrequency), "blacklist.ip"),
        "the complaint ended the whitelisting: {d}"
    );
}

#[test]
fn only_connect_disconnects() {
    // The session closes on `Disconnect` only at connect; a rule that disconnects later
    // would need the session to close after its reply too.
    let mut p = policy(
        "[quotas.ip_connections]\nenabled = true\nstage = \"helo\"\nminute = { limit = 1 }\n\
         [quotas.ip_concurrent]\nenabled = true\nlimit = 1\nstage = \"mail\"\n\
         [quotas.ip_messages]\nenabled = true\nstage = \"helo\"\nminute = { limit = 1 }\n\
         [quotas]\ndeny_after = 1\n\
         [blacklist]\nips = [\"127.0.0.9\"]\nip_stage = \"helo\"\nip_reply = \"connection_denied\"\n",
    );
    let mut later = Vec::new();
    for (i, last) in [2, 2, 2, 2, 9].into_iter().enumerate() {
        let now = at(i as u64);
        let connect = p.connect(ip(last), now);
        later.extend(connect.deferred.clone());
        let extra = p.connect(ip(last), now);
        later.extend(extra.deferred);
        for stage in [Stage::Helo, Stage::Mail, Stage::Rcpt, Stage::Data] {
            let facts = Facts::new(ip(last)).from("a@x.org").rcpt("10001@qq.com");
            later.push(p.check(stage, &facts, now));
        }
        let rcpts = ["10001@qq.com".to_owned()];
        let facts = Facts::new(ip(last))
            .from("a@x.org")
            .rcpts(&rcpts)
            .message(b"x");
        later.push(p.end_of_data(&facts, now));
        p.disconnect(ip(last));
        p.disconnect(ip(last));
    }
    assert!(
        later.iter().any(|d| !d.is_accept()),
        "some refusals happened"
    );
    for d in later {
        assert!(!matches!(d.verdict, Verdict::Disconnect(_)), "{d}");
    }
}

// ---- the cap on tracked keys ------------------------------------------------------------

const CAP_100: &str = "[memory]\nmax_tracked_keys = 100\n";

/// Client `n` of many.
fn client(n: u32) -> IpAddr {
    IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n))
}

/// Client `n` sends one message from its own sender domain to its own recipient,
/// checking after every step that the policy tracks no more than `cap` keys.
fn newcomer(p: &mut Policy, n: u32, now: SystemTime, cap: usize) {
    let from = format!("news@d{n}.example");
    let rcpts = [format!("{}@qq.com", 100_000 + n)];
    let within = |p: &Policy| {
        assert!(
            p.tracked_keys() <= cap,
            "{} keys tracked, cap {cap}",
            p.tracked_keys()
        );
    };
    assert!(p.connect(client(n), now).decision.is_accept());
    within(p);
    let mail = Facts::new(client(n)).from(&from);
    assert!(p.check(Stage::Mail, &mail, now).is_accept());
    within(p);
    assert!(p.check(Stage::Rcpt, &mail.rcpt(&rcpts[0]), now).is_accept());
    within(p);
    let d = p.end_of_data(&mail.rcpts(&rcpts).message(b"Subject: hi\r\n\r\nhi"), now);
    assert!(d.is_accept(), "{d}");
    within(p);
    p.disconnect(client(n));
}

#[test]
fn the_cap_bounds_the_keys_tracked() {
    let mut p = policy(&format!("{MINUTE_3}{CAP_100}"));
    newcomer(&mut p, 0, t0(), 100);
    let per_client = p.tracked_keys();
    assert!(
        per_client >= 5,
        "IP, its counters, sender, domain, recipient"
    );
    for n in 1..10_000 {
        newcomer(&mut p, n, t0(), 100);
    }
    assert_eq!(p.tracked_keys(), 100);
    assert_eq!(
        p.evictions() + 100,
        10_000 * per_client as u64,
        "every key made is tracked or was evicted, and counted"
    );
}

#[test]
fn a_blocked_key_is_never_evicted() {
    let mut p = policy(&format!("{MINUTE_3}{CAP_100}"));
    let blocked = client(0);
    for _ in 0..3 {
        assert!(send(&mut p, blocked, "a@x.org", &["10001@qq.com"], t0()).is_accept());
    }
    let d = send(&mut p, blocked, "a@x.org", &["10001@qq.com"], t0());
    assert_eq!(
        (reply(&d), d.block_until),
        (Some(IpFrequency), Some(at(600)))
    );
    // 10,000 newcomers in the next nine minutes: a hundred times the cap in keys.
    for n in 1..=10_000 {
        let now = at(u64::from(n) * 540 / 10_000);
        newcomer(&mut p, n, now, 100);
        if n % 1_000 == 0 {
            let d = send(&mut p, blocked, "a@x.org", &["10001@qq.com"], now);
            assert!(!d.is_accept(), "{n} newcomers in: {d}");
            assert_eq!(d.block_until, Some(at(600)), "{d}");
        }
    }
    assert!(p.evictions() > 50_000);
    let blocks = p.blocks(at(599));
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(
        (blocks[0].key.as_str(), blocks[0].until),
        ("10.0.0.0", at(600))
    );
    assert!(!send(&mut p, blocked, "a@x.org", &["10001@qq.com"], at(599)).is_accept());
    assert!(send(&mut p, blocked, "a@x.org", &["10001@qq.com"], at(600)).is_accept());
    // Once its block is over, the key may go like any other.
    for n in 10_001..10_100 {
        newcomer(&mut p, n, at(601), 100);
    }
    assert!(p.blocks(at(601)).is_empty());
}

#[test]
fn listed_and_complained_about_keys_stay_even_past_the_cap() {
    let mut p = policy(&format!(
        "[reputation]\ninitial = 20\ncomplaint_penalty = 10\ncomplaint_window = \"30d\"\nwarmup = false\n\
         [blacklist]\nrandom_domain_probability = 0.01\nrandom_domain_duration = \"1h\"\n{CAP_100}"
    ));
    let listed = (0..)
        .map(|i| format!("d{i}.example"))
        .find(|d| lists::draw(p.seed, "domain", d.as_bytes(), 0.01))
        .expect("one domain in a hundred is listed");
    let open = (0..)
        .map(|i| format!("o{i}.example"))
        .find(|d| !lists::draw(p.seed, "domain", d.as_bytes(), 0.01))
        .expect("most domains are not listed");
    let d = send(
        &mut p,
        ip(2),
        &format!("a@{listed}"),
        &["10001@qq.com"],
        t0(),
    );
    assert_eq!(d.rule, "blacklist.domain.random", "{d}");
    // 150 IPs complained about twice: more than the cap, none forgotten.
    for n in 0..150 {
        p.complain(client(n), None, t0());
        p.complain(client(n), None, t0());
    }
    assert!(p.tracked_keys() > 150);
    for n in 150..1_150 {
        let from = format!("news{n}@{open}");
        assert!(send(&mut p, client(n), &from, &["10001@qq.com"], at(60)).is_accept());
    }
    assert!(p.evictions() > 1_000);
    for n in 0..150 {
        assert_eq!(p.reputation(client(n), at(60)), 0, "client {n}");
    }
    let d = send(
        &mut p,
        ip(2),
        &format!("a@{listed}"),
        &["10001@qq.com"],
        at(60),
    );
    assert_eq!(d.rule, "blacklist.domain.random", "{d}");
    assert_eq!(d.block_until, Some(at(3600)));
    // When the complaints age out, those IPs are ordinary keys again.
    for n in 1_150..1_400 {
        let from = format!("news{n}@{open}");
        assert!(send(&mut p, client(n), &from, &["10001@qq.com"], at(31 * 86_400)).is_accept());
    }
    assert!(p.tracked_keys() <= 100, "{} keys", p.tracked_keys());
    assert_eq!(p.reputation(client(0), at(31 * 86_400)), 20);
}

#[test]
fn eviction_forgets_the_least_recently_used_keys_first() {
    let mut p = policy(CAP_100);
    let busy = client(0);
    let messages_of = |p: &Policy, ip| {
        p.counters
            .get(Subject::Ip(ip).id(QuotaName::IpMessages))
            .map(|c| c.count(Window::Day, crate::clock::unix_secs(t0())))
    };
    assert!(send(&mut p, busy, "a@x.org", &["10001@qq.com"], t0()).is_accept());
    for n in 1..=1_000 {
        newcomer(&mut p, n, t0(), 100);
        if n % 10 == 0 {
            assert!(send(&mut p, busy, "a@x.org", &["10001@qq.com"], t0()).is_accept());
        }
    }
    assert!(p.evictions() > 4_000);
    assert_eq!(
        messages_of(&p, busy),
        Some(101),
        "used often, never forgotten"
    );
    assert_eq!(messages_of(&p, client(1)), None, "used once, long ago");
    assert_eq!(messages_of(&p, client(1_000)), Some(1), "used last");
}

#[test]
fn an_idle_key_evicted_by_the_cap_loses_its_count() {
    // The trade-off of the cap: a key that is not blocked may be forgotten, and with it
    // the messages it counted in windows that are not over.
    let mut p = policy(&format!("{MINUTE_3}{CAP_100}"));
    for _ in 0..3 {
        assert!(send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], t0()).is_accept());
    }
    for n in 1..=100 {
        newcomer(&mut p, n, t0(), 100);
    }
    assert!(
        send(&mut p, ip(2), "a@x.org", &["10001@qq.com"], t0()).is_accept(),
        "a fourth message in the minute: the count of three was forgotten"
    );
}

#[test]
fn bulk_recipients_count_toward_the_cap() {
    let mut p = policy(&format!("[content]\nbulk_recipients = 1000\n{CAP_100}"));
    let recount = |p: &Policy| p.bulk.values().map(|b| b.recipients.len()).sum::<usize>();
    for n in 0..300 {
        // One body (the sender is part of it) to a new recipient each time.
        let rcpt = format!("{}@qq.com", 100_000 + n);
        assert!(send(&mut p, ip(2), "a@x.org", &[&rcpt], t0()).is_accept());
        assert!(p.tracked_keys() <= 100, "{} keys", p.tracked_keys());
        assert_eq!(p.bulk_recipients, recount(&p));
    }
    assert!(p.evictions() > 0);
    p.reset_counters();
    assert_eq!((p.bulk_recipients, recount(&p)), (0, 0));
}

#[test]
fn only_the_complaints_that_can_matter_are_kept() {
    // 30 - 10 per complaint: three complaints take the reputation to 0, and a fourth or
    // older one changes neither the reputation nor when it rises again.
    let mut p = policy(
        "[reputation]\ninitial = 30\ncomplaint_penalty = 10\ncomplaint_window = \"60d\"\nwarmup = false\n",
    );
    let day = |d: u64| at(d * 86_400);
    for d in 0..10 {
        p.complain(ip(4), None, day(d));
    }
    let history = p.ip_history(ip(4)).expect("complained about");
    assert_eq!(history.complaints.len(), 3);
    assert_eq!(p.reputation(ip(4), day(66)), 0);
    assert_eq!(
        p.reputation(ip(4), day(67)),
        10,
        "day 7's complaint aged out"
    );
    let d = send(&mut p, ip(4), "a@x.org", &["10001@qq.com"], day(10));
    assert_eq!(d.rule, "blacklist.ip.reputation", "{d}");
    assert_eq!(d.block_until, Some(day(67)));
}

#[test]
fn the_cap_must_be_positive() {
    let err = Config::from_toml("[memory]\nmax_tracked_keys = 0\n").expect_err("no keys at all");
    assert!(err.to_string().contains("memory.max_tracked_keys"), "{err}");
    let config = Config::from_toml("").expect("default config");
    assert_eq!(config.memory.max_tracked_keys, 200_000);
}
