//! How long one policy decision takes while the policy tracks 100,000 keys, and how much
//! memory the policy holds per client.
//!
//! Run with `cargo bench --bench policy`. Every rule is on (quotas with all tiers,
//! warm-up, blacklists, complaints, bulk detection, phrases), with limits high enough
//! that the measured decisions are acceptances, which walk every rule. The figure is the
//! median over rounds of the mean time per decision: for clients the policy knows, then
//! for new clients, each with a new sender domain (which, once the policy is full, makes
//! it forget keys to stay under `memory.max_tracked_keys`).
//!
//! Memory: a fresh policy gets a flood of new clients, each sending 3 messages from 3 new
//! sender domains, and the bytes it holds are counted by this benchmark's allocator (the
//! bytes asked for, without the allocator's own overhead), per client while under the
//! cap, then in all once far past it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use qqmx::Config;
use qqmx::policy::{Facts, Policy};
use qqmx::units::Stage;

const KEYS: u32 = 100_000;
const ROUNDS: usize = 15;
const PER_ROUND: u32 = 20_000;
/// Clients in the memory flood, each sending 3 messages.
const FLOOD: u32 = 20_000;

/// The system allocator, counting the bytes held.
struct Counting;

static HELD: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call goes to the system allocator with the caller's arguments; the
// counter is only arithmetic beside it.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is `GlobalAlloc::alloc`'s.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            HELD.fetch_add(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract is `GlobalAlloc::dealloc`'s.
        unsafe { System.dealloc(ptr, layout) };
        HELD.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract is `GlobalAlloc::realloc`'s.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            HELD.fetch_add(new_size, Ordering::Relaxed);
            HELD.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

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

/// The median of `rounds`, with the smallest and largest.
fn report(name: &str, mut rounds: Vec<f64>, policy: &Policy) {
    rounds.sort_by(f64::total_cmp);
    println!(
        "{name}: median {:.0} ns (min {:.0}, max {:.0}) with {} tracked keys",
        rounds[rounds.len() / 2],
        rounds[0],
        rounds[rounds.len() - 1],
        policy.tracked_keys()
    );
}

/// Client `n` of a flood connects and sends 3 messages from 3 new sender domains.
fn flood_client(policy: &mut Policy, n: u32, now: SystemTime, body: &[u8]) {
    let client = IpAddr::V4(Ipv4Addr::from(0x6400_0000 + n));
    policy.connect(client, now);
    for m in 0..3 {
        let from = format!("news@n{n}-{m}.example.com");
        let rcpts = [format!("{}@qq.com", 200_000 + (n * 3 + m) % 1000)];
        let facts = Facts::new(client).from(&from).rcpts(&rcpts).message(body);
        let decision = policy.end_of_data(&facts, now);
        assert!(decision.is_accept(), "{decision}");
    }
    policy.disconnect(client);
}

fn main() {
    decisions();
    memory();
}

fn decisions() {
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
        let rounds: Vec<f64> = (0..ROUNDS)
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
        report(name, rounds, &policy);
    }

    // New clients, one connection and 3 messages each: 9 new keys per client.
    let rounds: Vec<f64> = (0..ROUNDS as u32)
        .map(|round| {
            let start = Instant::now();
            for i in 0..PER_ROUND / 4 {
                flood_client(&mut policy, round * PER_ROUND + i, now, body);
            }
            start.elapsed().as_nanos() as f64 / f64::from(PER_ROUND / 4 * 4)
        })
        .collect();
    report(
        "new-client decision (connect or end of data)",
        rounds,
        &policy,
    );
}

fn memory() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_748_826_000);
    let body = b"Subject: hello\r\n\r\nYour order has shipped.\r\n";
    let before = HELD.load(Ordering::Relaxed);
    let mut policy = Policy::new(&config()).expect("valid config");
    for n in 0..FLOOD {
        flood_client(&mut policy, n, now, body);
    }
    let held = HELD.load(Ordering::Relaxed) - before;
    println!(
        "memory: {FLOOD} new clients x 3 messages from new sender domains: {} tracked keys, \
         {:.1} MiB held, {:.0} bytes per client",
        policy.tracked_keys(),
        held as f64 / f64::from(1 << 20),
        held as f64 / f64::from(FLOOD)
    );
    // Five times as many: past `memory.max_tracked_keys`, what is held stops growing.
    for n in FLOOD..FLOOD * 5 {
        flood_client(&mut policy, n, now, body);
    }
    let held = HELD.load(Ordering::Relaxed) - before;
    println!(
        "memory: {} new clients: {} tracked keys, {} evicted, {:.1} MiB held",
        FLOOD * 5,
        policy.tracked_keys(),
        policy.evictions(),
        held as f64 / f64::from(1 << 20),
    );
}
