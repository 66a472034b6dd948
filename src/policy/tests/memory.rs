//! What the policy remembers: idle expiry and the cap on tracked keys.

use super::*;

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
    assert_eq!((reply(&d), d.until), (Some(IpFrequency), Some(at(600))));
    // 10,000 newcomers in the next nine minutes: a hundred times the cap in keys.
    for n in 1..=10_000 {
        let now = at(u64::from(n) * 540 / 10_000);
        newcomer(&mut p, n, now, 100);
        if n % 1_000 == 0 {
            let d = send(&mut p, blocked, "a@x.org", &["10001@qq.com"], now);
            assert!(!d.is_accept(), "{n} newcomers in: {d}");
            assert_eq!(d.until, Some(at(600)), "{d}");
        }
    }
    assert!(p.evictions() > 50_000);
    let blocks = p.blocks(at(599));
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(
        (blocks[0].key.as_str(), blocks[0].until),
        ("ip:10.0.0.0", at(600))
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
        .find(|d| crate::policy::lists::draw(Config::default().seed, "domain", d.as_bytes(), 0.01))
        .expect("one domain in a hundred is listed");
    let open = (0..)
        .map(|i| format!("o{i}.example"))
        .find(|d| !crate::policy::lists::draw(Config::default().seed, "domain", d.as_bytes(), 0.01))
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
    assert_eq!(d.until, Some(at(3600)));
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
        let key = QuotaKey {
            name: QuotaName::IpMessages,
            subject: Subject::Ip(ip),
        };
        p.state
            .memory()
            .counted(key, Window::Day, crate::clock::unix_secs(t0()))
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
    for n in 0..300 {
        // One body (the sender is part of it) to a new recipient each time.
        let rcpt = format!("{}@qq.com", 100_000 + n);
        assert!(send(&mut p, ip(2), "a@x.org", &[&rcpt], t0()).is_accept());
        assert!(p.tracked_keys() <= 100, "{} keys", p.tracked_keys());
        let (counted, recounted) = p.state.memory().bulk_recipients();
        assert_eq!(counted, recounted);
    }
    assert!(p.evictions() > 0);
    p.reset_counters();
    assert_eq!(p.state.memory().bulk_recipients(), (0, 0));
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
    assert_eq!(p.state.memory().complaints_kept(ip(4)), Some(3));
    assert_eq!(p.reputation(ip(4), day(66)), 0);
    assert_eq!(
        p.reputation(ip(4), day(67)),
        10,
        "day 7's complaint aged out"
    );
    let d = send(&mut p, ip(4), "a@x.org", &["10001@qq.com"], day(10));
    assert_eq!(d.rule, "blacklist.ip.reputation", "{d}");
    assert_eq!(d.until, Some(day(67)));
}

#[test]
fn the_cap_must_be_positive() {
    let err = Config::from_toml("[memory]\nmax_tracked_keys = 0\n").expect_err("no keys at all");
    assert!(err.to_string().contains("memory.max_tracked_keys"), "{err}");
    let config = Config::from_toml("").expect("default config");
    assert_eq!(config.memory.max_tracked_keys, 200_000);
}
