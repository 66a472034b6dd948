//! Properties of the quotas over random sequences of messages and time.

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
                    let blocked = p.state.memory().blocked_counters(t);
                    prop_assert!(
                        p.tracked_keys() <= CAP.max(blocked + 8),
                        "{} keys, {blocked} blocked", p.tracked_keys()
                    );
                }
            }
        }
    }
}
