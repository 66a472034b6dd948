//! Quotas: tiers, blocks, stages, connections and runtime changes of limits.

use super::*;

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
    assert_eq!(d.until, Some(at(610)));
    assert_eq!(d.detail, "3 of 3 in this minute; one more is over");
    assert_eq!(
        p.blocks(at(11)),
        [BlockInfo {
            quota: QuotaName::IpMessages,
            key: "ip:127.0.0.3".into(),
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
    assert_eq!(d.until, Some(at(15 * 3600)));
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
