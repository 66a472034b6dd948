//! Warm-up allowances, complaints and reputation.

use super::*;

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
    assert_eq!(d.until, Some(at(60 * 86_400)));

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
        assert_eq!(d.until, Some(at(15 * 3600)), "midnight UTC+8");
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
    assert_eq!(d.until, Some(at(62 * 86_400)));
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
fn a_second_day_refusal_names_the_second_day() {
    let mut p = policy("[quotas.recipient]\nenabled = false\n[reputation]\nwarmup = true\n");
    // t0 is 09:00 in China; the IP's first day ends at 16:00 UTC. A naive sender goes on
    // through the block and into the next day.
    let mut details = Vec::new();
    for minute in 0..(20 * 60) {
        let d = send(&mut p, ip(9), "a@x.org", &["10001@qq.com"], at(minute * 60));
        if !d.is_accept() {
            details.push((minute, d.rule.to_string(), d.detail.clone()));
        }
    }
    let day2: Vec<_> = details
        .iter()
        .filter(|(minute, _, _)| *minute >= 15 * 60)
        .collect();
    assert!(
        day2.iter()
            .any(|(_, _, detail)| detail.starts_with("day 2 of a new IP")),
        "{day2:?}"
    );
    assert!(
        !day2
            .iter()
            .any(|(_, _, detail)| detail.starts_with("day 1")),
        "{day2:?}"
    );
}
