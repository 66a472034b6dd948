//! Blacklists (static and random), whitelists and backscatter.

use super::*;

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
