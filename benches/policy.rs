//! How long one policy decision takes while the policy tracks 100,000 keys.
//!
//! Run with `cargo bench --bench policy`. Every rule is on (quotas with all tiers,
//! warm-up, blacklists, complaints, bulk detection, phrases), with limits high enough
//! that the measured decisions are acceptances, which walk every rule. The figure is the
//! median over rounds of the mean time per decision.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant, SystemTime};

use qqmx::Config;
use qqmx::policy::{Facts, Policy, Stage};

const KEYS: u32 = 100_000;
const ROUNDS: usize = 15;
const PER_ROUND: u32 = 20_000;

fn config() -> Config {
    let mut config = Config::from_toml(
        "[quotas.ip_messages]\nminute = { limit = 1000000 }\nhour = { limit = 1000000 }\nday = { limit = 1000000 }\n\
         [quotas.sender]\nminute = { limit = 1000000 }\nhour = { limit = 1000000 }\nday = { limit = 1000000 }\n\
         [quotas.domain]\nminute = { limit = 1000000 }\nhour = { limit = 1000000 }\nday = { limit = 1000000 }\n\
         [quotas.recipient]\nminute = { limit = 1000000 }\nhour = { limit = 1000000 }\nday = { limit = 1000000 }\n\
         [blacklist]\nips = [\"203.0.113.0/24\"]\nsenders = [\"spam@example.net\"]\ndomains = [\"spam.example\"]\n\
         [reputation]\nwarmup_schedule = [{ until_day = 1, daily = 1000000 }]\n\
         [content]\nbulk_recipients = 1000000\nphrases = [{ phrase = \"cheap pills\" }]\n",
    )
    .expect("benchmark config");
    config.mailboxes.existing = qqmx::config::Existing::All;
    config
}

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

fn main() {
    let mut policy = Policy::new(&config()).expect("valid config");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_748_826_000);
    let body = b"Subject: hello\r\n\r\nYour order has shipped.\r\n";

    // Track 100,000 keys: 25,000 clients, each with its own sender and recipient.
    let addresses: Vec<(String, String)> = (0..KEYS / 4)
        .map(|n| {
            (
                format!("s{n}@d{}.example.org", n % 1000),
                format!("{}@qq.com", 100_000 + n),
            )
        })
        .collect();
    for (n, (from, rcpt)) in addresses.iter().enumerate() {
        let client = ip(n as u32);
        policy.connect(client, now);
        let rcpts = [rcpt.clone()];
        let facts = Facts::new(client).from(from).rcpts(&rcpts).message(body);
        policy.end_of_data(&facts, now);
        policy.disconnect(client);
    }
    println!("tracked keys: {}", policy.tracked_keys());
    assert!(policy.tracked_keys() >= KEYS as usize);

    for (stage, name) in [
        (Stage::Rcpt, "RCPT decision"),
        (Stage::EndOfData, "end-of-data decision"),
    ] {
        let mut rounds: Vec<f64> = (0..ROUNDS)
            .map(|round| {
                let start = Instant::now();
                for i in 0..PER_ROUND {
                    // A spread of tracked clients, the same in every run.
                    let n = (i.wrapping_mul(7919) + round as u32 * 104_729) % (KEYS / 4);
                    let (from, rcpt) = &addresses[n as usize];
                    let rcpts = [rcpt.clone()];
                    let facts = Facts::new(ip(n)).from(from);
                    let decision = match stage {
                        Stage::Rcpt => policy.check(Stage::Rcpt, &facts.rcpt(rcpt), now),
                        _ => policy.end_of_data(&facts.rcpts(&rcpts).message(body), now),
                    };
                    assert!(decision.is_accept(), "{decision}");
                    black_box(decision);
                }
                start.elapsed().as_nanos() as f64 / f64::from(PER_ROUND)
            })
            .collect();
        rounds.sort_by(f64::total_cmp);
        println!(
            "{name}: median {:.0} ns (min {:.0}, max {:.0}) with {} tracked keys",
            rounds[ROUNDS / 2],
            rounds[0],
            rounds[ROUNDS - 1],
            policy.tracked_keys()
        );
    }
}
