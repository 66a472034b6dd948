//! Replicas that share their policy state in a real `redis-server`: one global limit
//! whatever the interleaving, a blacklisting through one replica answered by another,
//! every owner shared, one virtual clock, the path through HAProxy with the PROXY
//! protocol, the round trips a message costs, and Redis killed, stopped and restarted
//! under load (`451`, no panic, no lost `250`, recovery).
//!
//! Each test starts its own `redis-server` (and one its own HAProxy) on a free port with
//! a temporary directory, and stops it: Debian's `redis-server` and `haproxy` packages,
//! which scripts/test.sh and .ci/run install. Set QQMX_SKIP_REDIS_TEST=1 to skip these
//! tests on a machine without them.

#![cfg(feature = "redis")]

#[cfg(feature = "cli")]
mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use qqmx::config::{Block, StateBackend, Tier};
use qqmx::event::EventKind;
use qqmx::units::{QuotaName, Window};
use qqmx::{Clock, Config, QqMx};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpSocket;

/// How long anything that must happen may take on a loaded 2-core machine before the
/// test calls it a hang.
const HANG: Duration = Duration::from_secs(30);

/// A `redis-server` of the test's own.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
    /// Arguments beyond the test defaults (a Cluster node's).
    extra: Vec<String>,
}

fn skip() -> bool {
    let skip = std::env::var_os("QQMX_SKIP_REDIS_TEST").is_some_and(|v| !v.is_empty());
    if skip {
        eprintln!("QQMX_SKIP_REDIS_TEST is set: qqmx is not tested with Redis");
    }
    skip
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl RedisServer {
    fn start(name: &str) -> Self {
        Self::start_with(name, &[])
    }

    fn start_with(name: &str, extra: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("qqmx-redis-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        let mut server = Self {
            child: None,
            port: free_port(),
            dir,
            extra: extra.iter().map(|a| (*a).to_owned()).collect(),
        };
        server.restart();
        server
    }

    /// Starts (again) on the same port, empty.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start redis-server ({e}): these tests need Debian's redis-server \
                     package (apt-get install redis-server); set QQMX_SKIP_REDIS_TEST=1 to skip them"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + HANG;
        while self.ping().is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer on port {}",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(self.url())?.get_connection_with_timeout(Duration::from_secs(5))
    }

    fn ping(&self) -> redis::RedisResult<()> {
        redis::cmd("PING").query::<String>(&mut self.connection()?)?;
        Ok(())
    }

    /// Sends `signal` (`-KILL`, `-STOP`, `-CONT`) to the server.
    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("running").id();
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Every key, with its TTL in seconds (-1: none).
    fn ttls(&self) -> Vec<(String, i64)> {
        let mut conn = self.connection().expect("redis answers");
        let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).expect("KEYS");
        keys.into_iter()
            .map(|k| {
                let ttl = redis::cmd("TTL").arg(&k).query(&mut conn).expect("TTL");
                (k, ttl)
            })
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A replica of a QQ whose state is in `redis` under `prefix`; no limits but those the
/// test sets.
fn config(redis: &RedisServer, prefix: &str, replica: &str) -> Config {
    let mut config = Config::default().no_limits();
    config.state.backend = StateBackend::Redis;
    config.state.url = redis.url();
    config.state.prefix = prefix.to_owned();
    config.state.replica = replica.to_owned();
    // Far longer than a round trip to a local Redis on a loaded machine.
    config.state.timeout = Duration::from_secs(2);
    config
}

fn replicas(configs: Vec<Config>) -> Vec<QqMx> {
    // One virtual time for all, as replicas behind one balancer share the real one.
    let clock = Clock::manual_at_unix(1_748_826_000);
    configs
        .into_iter()
        .map(|c| QqMx::builder().config(c).clock(clock.clone()).start())
        .collect()
}

/// What became of one message: the code of the reply that ended it (250 after the data),
/// or 0 when the connection broke.
async fn send(addr: SocketAddr, source: Ipv4Addr, from: &str, to: &str) -> u16 {
    let body = format!("from {source} to {to}");
    send_body(addr, source, from, to, &body).await
}

/// [`send`] with a body of the test's choosing.
async fn send_body(addr: SocketAddr, source: Ipv4Addr, from: &str, to: &str, body: &str) -> u16 {
    tokio::time::timeout(HANG, attempt(addr, source, from, to, body))
        .await
        .unwrap_or_else(|_| panic!("qqmx did not answer {source} within {HANG:?}"))
}

async fn attempt(addr: SocketAddr, source: Ipv4Addr, from: &str, to: &str, body: &str) -> u16 {
    let Ok(socket) = TcpSocket::new_v4() else {
        return 0;
    };
    if socket.bind(SocketAddr::new(IpAddr::V4(source), 0)).is_err() {
        return 0;
    }
    let Ok(stream) = socket.connect(addr).await else {
        return 0;
    };
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut reply = async || -> u16 {
        let mut line = String::new();
        loop {
            line.clear();
            match read.read_line(&mut line).await {
                Ok(n) if n >= 4 => {}
                _ => return 0,
            }
            if line.as_bytes()[3] != b'-' {
                return line[..3].parse().unwrap_or(0);
            }
        }
    };
    let greeting = reply().await;
    if greeting != 220 {
        return greeting;
    }
    let data = format!("Subject: hello\r\n\r\n{body}\r\n.\r\n");
    let steps = [
        ("EHLO client.example\r\n".to_owned(), 250),
        (format!("MAIL FROM:<{from}>\r\n"), 250),
        (format!("RCPT TO:<{to}>\r\n"), 250),
        ("DATA\r\n".to_owned(), 354),
        (data, 250),
    ];
    let mut last = 0;
    for (line, ok) in steps {
        if write.write_all(line.as_bytes()).await.is_err() {
            return 0;
        }
        last = reply().await;
        if last != ok {
            break;
        }
    }
    let _ = write.write_all(b"QUIT\r\n").await;
    last
}

/// A small seeded generator (xorshift), so that a failing interleaving can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

const IP_LIMIT: u64 = 5;
const SENDER_LIMIT: u64 = 7;

fn limited(redis: &RedisServer, prefix: &str, replica: &str) -> Config {
    let mut config = config(redis, prefix, replica);
    let block = Block::For(Duration::from_secs(600));
    config.quotas.ip_messages.enabled = true;
    config.quotas.ip_messages.minute = Some(Tier {
        limit: IP_LIMIT,
        block,
    });
    config.quotas.sender.enabled = true;
    config.quotas.sender.minute = Some(Tier {
        limit: SENDER_LIMIT,
        block,
    });
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_never_accept_more_than_one_limit_in_a_window() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("limit");
    let seeds: Vec<u64> = match std::env::var("QQMX_REDIS_SEED") {
        Ok(seed) => vec![seed.parse().expect("QQMX_REDIS_SEED is a number")],
        Err(_) => vec![1, 2, 3],
    };
    for seed in seeds {
        let prefix = format!("limit-{seed}");
        let servers = replicas(
            ["a", "b", "c"]
                .iter()
                .map(|r| limited(&redis, &prefix, r))
                .collect(),
        );
        let ips: Vec<Ipv4Addr> = (2..5).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect();
        let senders = ["s1@sender.example", "s2@sender.example"];
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        // Rounds of concurrent sends: in each, messages from random IPs and senders go
        // to random replicas at once.
        let mut sent = Vec::new();
        for round in 0..6 {
            let mut batch = Vec::new();
            for n in 0..6 {
                let (ip, sender) = (ips[rng.below(ips.len())], senders[rng.below(2)]);
                let addr = servers[rng.below(servers.len())].addr();
                let to = format!("{}@qq.com", 10_000 + round * 10 + n);
                batch.push(tokio::spawn(async move {
                    (ip, sender, send(addr, ip, sender, &to).await)
                }));
            }
            for task in batch {
                sent.push(task.await.expect("a sender task"));
            }
        }
        let accepted = |pick: &dyn Fn(&(Ipv4Addr, &str, u16)) -> bool| {
            sent.iter().filter(|s| s.2 == 250 && pick(s)).count() as u64
        };
        let mut at_limit = 0;
        for ip in &ips {
            let n = accepted(&|s| s.0 == *ip);
            assert!(
                n <= IP_LIMIT,
                "seed {seed}: {n} accepted from {ip}: {sent:?}"
            );
            at_limit += usize::from(n == IP_LIMIT);
        }
        println!(
            "seed {seed}: {} sent, {} accepted, {at_limit} IPs at the limit",
            sent.len(),
            accepted(&|_| true)
        );
        // 36 messages from 3 IPs: the limit is reached, not merely respected.
        assert!(
            at_limit > 0,
            "seed {seed}: no IP reached its limit: {sent:?}"
        );
        for sender in senders {
            let n = accepted(&|s| s.1 == sender);
            assert!(
                n <= SENDER_LIMIT,
                "seed {seed}: {n} accepted from {sender}: {sent:?}"
            );
        }
        // Every 250 is a message in one replica's store, and nothing else is.
        let stored: usize = servers.iter().map(|s| s.messages().len()).sum();
        assert_eq!(stored as u64, accepted(&|_| true), "seed {seed}");
        // Exact, not merely bounded: an IP that sent more than its limit got exactly it,
        // unless its sender ran out first.
        let total = accepted(&|_| true);
        assert!(total > 0, "seed {seed}: nothing accepted: {sent:?}");
        let codes: Vec<u16> = sent.iter().map(|s| s.2).collect();
        assert!(
            codes.iter().all(|c| [250, 550].contains(c)),
            "seed {seed}: only 250 and QQ's 550s: {codes:?}"
        );
    }
    // Every key the replicas wrote expires.
    let ttls = redis.ttls();
    assert!(!ttls.is_empty());
    for (key, ttl) in &ttls {
        // -2: the key went between the listing and the question (a lease given back
        // by a connection that closed after its client's last reply): nothing stays.
        assert!(*ttl > 0 || *ttl == -2, "{key} has no TTL ({ttl})");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_alternating_client_gets_exactly_the_limit_then_ip_frequency() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("alternate");
    let servers = replicas(vec![
        limited(&redis, "alt", "a"),
        limited(&redis, "alt", "b"),
    ]);
    let ip = Ipv4Addr::new(127, 0, 0, 9);
    let mut codes = Vec::new();
    for i in 0..8 {
        let addr = servers[i % 2].addr();
        let from = format!("s{i}@sender.example");
        codes.push(send(addr, ip, &from, &format!("{}@qq.com", 20_000 + i)).await);
    }
    assert_eq!(codes, [250, 250, 250, 250, 250, 550, 550, 550]);
    let blocks = servers[1].blocks();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0].key, "ip:127.0.0.9");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_blacklisting_through_one_replica_holds_on_another() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("blacklist");
    let servers = replicas(vec![config(&redis, "bl", "a"), config(&redis, "bl", "b")]);
    let (listed, other) = (Ipv4Addr::new(127, 0, 0, 21), Ipv4Addr::new(127, 0, 0, 22));
    let b = servers[1].addr();
    assert_eq!(
        send(b, listed, "x@sender.example", "10001@qq.com").await,
        250
    );
    servers[0].blacklist_ip(IpAddr::V4(listed), None);
    assert_eq!(
        send(b, listed, "x@sender.example", "10001@qq.com").await,
        550
    );
    assert_eq!(
        send(b, other, "x@sender.example", "10001@qq.com").await,
        250
    );
    servers[0].blacklist_sender("bad@sender.example", None);
    assert_eq!(
        send(b, other, "bad@sender.example", "10001@qq.com").await,
        550
    );
    // Lifted through the other replica, for both.
    servers[1].unblacklist_ip(IpAddr::V4(listed));
    assert_eq!(
        send(
            servers[0].addr(),
            listed,
            "x@sender.example",
            "10001@qq.com"
        )
        .await,
        250
    );
}

/// Sends from a few IPs to every replica in turn until `stop`; returns the codes seen.
async fn load(addrs: Vec<SocketAddr>, stop: tokio::sync::watch::Receiver<bool>) -> Vec<u16> {
    let mut codes = Vec::new();
    let mut i = 0usize;
    while !*stop.borrow() {
        let ip = Ipv4Addr::new(127, 0, 1, 1 + (i % 4) as u8);
        let addr = addrs[i % addrs.len()];
        codes.push(
            send(
                addr,
                ip,
                "load@sender.example",
                &format!("{}@qq.com", 30_000 + i),
            )
            .await,
        );
        i += 1;
    }
    codes
}

fn count(codes: &[u16], code: u16) -> usize {
    codes.iter().filter(|c| **c == code).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_killed_stopped_and_restarted_under_load() {
    if skip() {
        return;
    }
    let mut redis = RedisServer::start("faults");
    // A short timeout, for the Redis that hangs: the test waits for it to pass.
    let fast = |replica| {
        let mut config = config(&redis, "faults", replica);
        config.state.timeout = Duration::from_millis(300);
        config
    };
    let servers = replicas(vec![fast("a"), fast("b")]);
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr()).collect();
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let loader = tokio::spawn(load(addrs.clone(), stopped));
    wait_until(|| load_in_stores(&servers) >= 10).await;
    let probe = Ipv4Addr::new(127, 0, 2, 1);
    let probe_code = async |addr| send(addr, probe, "probe@sender.example", "10001@qq.com").await;

    // Killed: every stage that needs the state is answered 451, and nothing panics.
    redis.kill();
    let mut seen = Vec::new();
    for addr in [addrs[0], addrs[1], addrs[0]] {
        seen.push(probe_code(addr).await);
    }
    assert!(
        seen.iter().all(|c| *c == 451),
        "while Redis is down: {seen:?}"
    );

    // Restarted, empty: service comes back by itself on every replica.
    redis.restart();
    for addr in addrs.clone() {
        wait_until_async(|| async { probe_code(addr).await == 250 }).await;
    }

    // Stopped (a Redis that hangs): a call gives up after `state.timeout`: 451.
    redis.signal("-STOP");
    let code = probe_code(addrs[0]).await;
    redis.signal("-CONT");
    assert_eq!(code, 451, "while Redis hangs");
    wait_until_async(|| async { probe_code(addrs[0]).await == 250 }).await;

    stop.send_replace(true);
    let codes = loader.await.expect("the load task");
    // No 250 lost: every message acknowledged is in a store, and nothing else is.
    assert_eq!(
        load_in_stores(&servers),
        count(&codes, 250),
        "codes {codes:?}"
    );
    assert!(
        codes.iter().all(|c| [250, 451].contains(c)),
        "only 250 and 451 under load: {codes:?}"
    );
    println!(
        "under load: {} accepted, {} answered 451",
        count(&codes, 250),
        count(&codes, 451)
    );
    assert!(count(&codes, 451) > 0, "the load met the fault: {codes:?}");
}

/// A session waiting for Redis holds up no other use of the policy: a stage's round
/// trip is made without the policy's lock. (While the lock was held for it, a change of
/// a limit waited for the stage's `state.timeout`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_waiting_for_redis_holds_up_no_other() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("unlocked");
    let mut slow = config(&redis, "unlocked", "a");
    // Far past the margin below: a lock held through the round trip would show.
    slow.state.timeout = Duration::from_secs(30);
    let servers = replicas(vec![slow]);
    let a = &servers[0];
    let (first, waiting) = (Ipv4Addr::new(127, 0, 5, 1), Ipv4Addr::new(127, 0, 5, 2));
    assert_eq!(
        send(a.addr(), first, "u@sender.example", "10001@qq.com").await,
        250
    );

    redis.signal("-STOP");
    let addr = a.addr();
    let client =
        tokio::spawn(async move { send(addr, waiting, "u@sender.example", "10001@qq.com").await });
    // Its connect stage is waiting for Redis once its connection is recorded.
    wait_until(|| {
        a.events().iter().any(|e| {
            e.client == IpAddr::V4(waiting) && matches!(e.kind, EventKind::Connected { .. })
        })
    })
    .await;
    let asked = Instant::now();
    a.set_limit(QuotaName::Sender, Window::Minute, Some(1_000));
    let took = asked.elapsed();
    redis.signal("-CONT");
    // A margin no loaded machine comes near, far below the stage's timeout.
    assert!(
        took < Duration::from_secs(10),
        "changing a limit waited {took:?} for a stage waiting on Redis"
    );
    assert_eq!(client.await.expect("the client task"), 250);
}

/// Messages of the load in the replicas' stores.
fn load_in_stores(servers: &[QqMx]) -> usize {
    servers
        .iter()
        .flat_map(|s| s.messages())
        .filter(|m| m.mail_from == "load@sender.example")
        .count()
}

async fn wait_until(mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + HANG;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "condition not met within {HANG:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_until_async<F, Fut>(mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + HANG;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "condition not met within {HANG:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trips_per_message_are_counted() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("trips");
    // Every rule on, as by default: the most round trips a message costs.
    let mut config = config(&redis, "trips", "a");
    config.quotas = Config::default().quotas;
    config.reputation.warmup = true;
    config.content.bulk_recipients = 100;
    let server = qqmx::Server::new(config, Clock::manual_at_unix(1_748_826_000)).expect("a server");
    let listener = server
        .listen("127.0.0.1:0".parse().expect("an address"))
        .expect("a listener");
    let addr = listener.local_addr().expect("its address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = server.clone();
    let task = tokio::spawn(async move {
        running
            .run(listener, async {
                let _ = stopped.await;
            })
            .await;
    });
    let calls = || server.with_policy(|policy, _| policy.state_calls_by_stage());
    let ip = Ipv4Addr::new(127, 0, 3, 1);
    // The first message loads the scripts into Redis.
    assert_eq!(
        send(addr, ip, "a@sender.example", "10001@qq.com").await,
        250
    );
    let before = calls();
    const N: u64 = 20;
    for i in 0..N {
        let to = format!("{}@qq.com", 40_000 + i);
        assert_eq!(send(addr, ip, "a@sender.example", &to).await, 250);
    }
    let after = calls();
    let per_stage: Vec<(&str, u64)> = after
        .iter()
        .zip(&before)
        .map(|((name, a), (_, b))| (*name, a - b))
        .collect();
    let of = |stage: &str| {
        per_stage
            .iter()
            .find(|(name, _)| *name == stage)
            .map_or(0, |(_, n)| *n)
    };
    let background = of("background");
    let total: u64 = per_stage.iter().map(|(_, n)| n).sum();
    println!(
        "{} round trips to Redis per message (one connection each), {} of them sent alone \
         by the thread that carries held-back writes: {per_stage:?}",
        total as f64 / N as f64,
        background as f64 / N as f64
    );
    // Every rule on, one message per connection: at most one round trip per stage on
    // the way to acceptance, none at EHLO, DATA and the close (their writes ride with
    // the next call), so that a change that adds round trips is seen. Held-back writes
    // no call carried within 50 ms go alone (`background`), as many as the machine's
    // pace lets through: a message holds writes at two points that no call of its own
    // follows at once (a domain's record at RCPT, its lease given back at the close),
    // so a slow machine may send each alone: at most two per message in this test.
    let expected = [
        ("connect", N),
        ("helo", 0),
        ("mail", N),
        ("rcpt", N),
        ("data", 0),
        ("end_of_data", N),
        ("close", 0),
        ("api", 0),
    ];
    for (stage, n) in expected {
        assert_eq!(of(stage), n, "{stage}: {per_stage:?}");
    }
    assert!(background <= 2 * N, "{per_stage:?}");
    assert_eq!(server.with_policy(|policy, _| policy.state_errors()), 0);
    let _ = stop.send(());
    task.await.expect("the server stops");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advancing_one_replicas_clock_moves_them_all() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("clock");
    // Each replica with a clock of its own, as in separate processes.
    let start = 1_748_826_000;
    let servers: Vec<QqMx> = ["a", "b"]
        .iter()
        .map(|r| {
            QqMx::builder()
                .config(limited(&redis, "clock", r))
                .clock(Clock::manual_at_unix(start))
                .start()
        })
        .collect();
    let ip = Ipv4Addr::new(127, 0, 0, 31);
    let mut codes = Vec::new();
    for i in 0..6 {
        let to = format!("{}@qq.com", 50_000 + i);
        codes.push(send(servers[i % 2].addr(), ip, "c@sender.example", &to).await);
    }
    assert_eq!(codes, [250, 250, 250, 250, 250, 550]);
    // Past the 10-minute block, through replica a only.
    servers[0].advance(Duration::from_secs(11 * 60));
    let target = servers[0].now();
    wait_until(|| servers[1].now() >= target).await;
    assert_eq!(servers[1].now(), target, "the clock moves, and only as far");
    let to = "50010@qq.com";
    assert_eq!(
        send(servers[1].addr(), ip, "c@sender.example", to).await,
        250
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_owner_is_shared() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("owners");
    let shared = |replica| {
        let mut config = config(&redis, "owners", replica);
        config.content.bulk_recipients = 2;
        config.quotas.ip_concurrent.enabled = true;
        // Two: a connection whose close the server has not yet seen does not refuse the
        // next message of the same client.
        config.quotas.ip_concurrent.limit = 2;
        config
    };
    let servers = replicas(vec![shared("a"), shared("b")]);
    let (a, b) = (&servers[0], &servers[1]);
    let ip = |last| Ipv4Addr::new(127, 0, 4, last);

    // Reputation: complaints through a, a zero reputation on b.
    for _ in 0..10 {
        a.complain(IpAddr::V4(ip(1)), None);
    }
    assert_eq!(b.reputation(IpAddr::V4(ip(1))), 0);
    assert_eq!(
        send(b.addr(), ip(1), "x@sender.example", "10001@qq.com").await,
        550
    );
    // A whitelist through a beats it on b.
    a.whitelist("10001@qq.com", "w@sender.example");
    assert_eq!(
        send(b.addr(), ip(1), "w@sender.example", "10001@qq.com").await,
        250
    );

    // A personal blacklist through a, answered by b.
    a.block_for_recipient("10002@qq.com", "p@sender.example");
    assert_eq!(
        send(b.addr(), ip(2), "p@sender.example", "10002@qq.com").await,
        550
    );
    assert_eq!(
        send(b.addr(), ip(2), "q@sender.example", "10002@qq.com").await,
        250
    );

    // Bulk: one body to a third recipient, through either replica, is refused.
    let body = "the same body for everyone";
    let mut codes = Vec::new();
    for (i, server) in [a, b, a].into_iter().enumerate() {
        let to = format!("{}@qq.com", 60_000 + i);
        codes.push(send_body(server.addr(), ip(3), "bulk@sender.example", &to, body).await);
    }
    assert_eq!(codes, [250, 250, 550]);

    // Open connections: two held on a count on b (limit 2).
    let mut held = Vec::new();
    for _ in 0..2 {
        let socket = TcpSocket::new_v4().expect("a socket");
        socket
            .bind(SocketAddr::new(IpAddr::V4(ip(4)), 0))
            .expect("bind");
        let mut stream = socket.connect(a.addr()).await.expect("connect");
        let mut greeting = String::new();
        BufReader::new(&mut stream)
            .read_line(&mut greeting)
            .await
            .expect("the greeting");
        assert!(greeting.starts_with("220"), "{greeting}");
        held.push(stream);
    }
    assert_eq!(
        send(b.addr(), ip(4), "c@sender.example", "10003@qq.com").await,
        550
    );
    // Closed on a: the leases are given back, and b accepts again.
    drop(held);
    wait_until_async(|| async {
        send(b.addr(), ip(4), "c@sender.example", "10003@qq.com").await == 250
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_haproxy_with_the_proxy_protocol_one_limit_holds() {
    if skip() {
        return;
    }
    let redis = RedisServer::start("haproxy");
    let behind = |replica| {
        let mut config = limited(&redis, "haproxy", replica);
        config.server.proxy_protocol = true;
        config
    };
    let servers = replicas(vec![behind("a"), behind("b")]);
    let port = free_port();
    let cfg = redis.dir.join("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 1m\n  timeout server 1m\n\
             frontend smtp\n  bind 127.0.0.1:{port}\n  default_backend qqmx\n\
             backend qqmx\n  balance roundrobin\n\
             \x20 server a {} send-proxy-v2\n  server b {} send-proxy-v2\n",
            servers[0].addr(),
            servers[1].addr()
        ),
    )
    .expect("haproxy.cfg");
    let mut haproxy = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start haproxy ({e}): this test needs Debian's haproxy package \
                 (apt-get install haproxy); set QQMX_SKIP_REDIS_TEST=1 to skip it"
            )
        });
    let front = SocketAddr::from(([127, 0, 0, 1], port));
    wait_until(|| std::net::TcpStream::connect(front).is_ok()).await;
    let ip = Ipv4Addr::new(127, 0, 0, 41);
    let mut codes = Vec::new();
    for i in 0..7 {
        let to = format!("{}@qq.com", 70_000 + i);
        codes.push(send(front, ip, "h@sender.example", &to).await);
    }
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    assert_eq!(codes, [250, 250, 250, 250, 250, 550, 550]);
    // Both replicas served, and both saw the client's own address.
    for server in &servers {
        let messages = server.messages();
        assert!(!messages.is_empty(), "round robin reaches every replica");
        assert!(messages.iter().all(|m| m.client == IpAddr::V4(ip)));
    }
}

#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_qqmx_serve_processes_are_one_qq() {
    use common::sidecar::Sidecar;
    if skip() {
        return;
    }
    let redis = RedisServer::start("serve");
    let url = redis.url();
    let serve = |replica: &str| {
        Sidecar::manual(
            &["--state", &url, "--replica", replica],
            &[(
                "QQMX__QUOTAS__IP_MESSAGES__MINUTE",
                r#"{ limit = 5, block = "10m" }"#,
            )],
        )
    };
    let (a, b) = (serve("a"), serve("b"));
    for (sidecar, name) in [(&a, "a"), (&b, "b")] {
        let info = sidecar.json("/api/v1/info");
        assert_eq!(
            (info["replica"].as_str(), info["state"].as_str()),
            (Some(name), Some("redis"))
        );
    }
    let ip = Ipv4Addr::new(127, 0, 0, 51);
    let mut codes = Vec::new();
    for i in 0..7 {
        let mx = if i % 2 == 0 { a.mx("mx1") } else { b.mx("mx1") };
        let to = format!("{}@qq.com", 80_000 + i);
        codes.push(send(mx, ip, &format!("s{i}@sender.example"), &to).await);
    }
    assert_eq!(codes, [250, 250, 250, 250, 250, 550, 550]);
    let (_, metrics) = a.get("/metrics");
    assert!(
        metrics.contains("qqmx_replica_info{replica=\"a\",state=\"redis\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("qqmx_state_errors_total 0"), "{metrics}");

    // A blacklisting through a's API is answered by b.
    let listed = Ipv4Addr::new(127, 0, 0, 52);
    let (status, _) = a.post("/api/v1/blacklist", r#"{"ip": "127.0.0.52"}"#);
    assert_eq!(status, 200);
    assert_eq!(
        send(b.mx("mx1"), listed, "x@sender.example", "10001@qq.com").await,
        550
    );

    // The clock advanced through a moves b's.
    let (status, _) = a.post("/api/v1/clock/advance", r#"{"by": "1h"}"#);
    assert_eq!(status, 200);
    let now = |s: &Sidecar| s.json("/api/v1/clock")["now"].as_str().map(str::to_owned);
    let target = now(&a);
    wait_until(|| now(&b) == target).await;

    // A reset through b starts the shared policy afresh for a too.
    let (status, _) = b.post("/api/v1/reset", "{}");
    assert_eq!(status, 200);
    assert_eq!(
        send(a.mx("mx1"), listed, "x@sender.example", "10001@qq.com").await,
        250
    );

    // With Redis gone, a change through the API is refused, not lost in silence.
    let mut redis = redis;
    redis.kill();
    let (status, body) = a.post("/api/v1/blacklist", r#"{"ip": "127.0.0.53"}"#);
    assert_eq!(status, 503, "{body}");
}

/// The `replica` of every item of `list`.
#[cfg(feature = "cli")]
fn replicas_of(list: &serde_json::Value) -> Vec<&str> {
    list.as_array()
        .expect("a list")
        .iter()
        .map(|m| m["replica"].as_str().expect("every item names its replica"))
        .collect()
}

/// `(replica, ok)` of a merged answer's `replicas`.
#[cfg(feature = "cli")]
fn answered(answer: &serde_json::Value) -> Vec<(String, bool)> {
    answer["replicas"]
        .as_array()
        .expect("a merged answer says which replicas answered")
        .iter()
        .map(|r| {
            let name = r["replica"].as_str().expect("a name").to_owned();
            (name, r["ok"].as_bool().expect("ok"))
        })
        .collect()
}

#[cfg(feature = "cli")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_replicas_api_lists_the_messages_and_events_of_all() {
    use common::sidecar::Sidecar;
    if skip() {
        return;
    }
    let redis = RedisServer::start("fanout");
    let url = redis.url();
    // A replica waits up to 5 s for another's answer, far above what a loaded 2-core
    // machine needs to list a few messages. A registration lasts 15 s (renewed every
    // 5 s): a replica stopped for the 5 s of one unanswered request is still registered
    // when it is then killed, and drops out within the 30 s of `wait_until`.
    let serve = |replica: &str| {
        Sidecar::manual(
            &["--state", &url, "--replica", replica],
            &[
                ("QQMX__STATE__ADVERTISE_TTL", "15s"),
                // A replica asks another with its token: replicas share one.
                ("QQMX_API_TOKEN", "s3cret"),
                ("QQMX__STATE__PEER_TIMEOUT", "5s"),
            ],
        )
    };
    let (a, b) = (serve("a"), serve("b"));
    assert_eq!(
        send(
            a.mx("mx1"),
            Ipv4Addr::new(127, 0, 0, 61),
            "x@sender.example",
            "10001@qq.com"
        )
        .await,
        250
    );
    let (status, _) = a.post("/api/v1/clock/advance", r#"{"by": "1m"}"#);
    assert_eq!(status, 200);
    assert_eq!(
        send(
            b.mx("mx1"),
            Ipv4Addr::new(127, 0, 0, 62),
            "y@sender.example",
            "10002@qq.com"
        )
        .await,
        250
    );

    // A lists B's message (B registers itself as A starts; wait for both to be seen).
    wait_until(|| a.json("/api/v1/messages")["total"] == 2).await;
    let list = a.json("/api/v1/messages");
    assert_eq!(
        replicas_of(&list["messages"]),
        ["a", "b"],
        "oldest first: {list}"
    );
    assert_eq!(answered(&list), [("a".into(), true), ("b".into(), true)]);
    let theirs = &list["messages"][1];
    assert_eq!(
        (
            theirs["ID"].as_str(),
            theirs["id"].as_u64(),
            theirs["mail_from"].as_str()
        ),
        (Some("b:1"), Some(1), Some("y@sender.example")),
        "{theirs}"
    );
    // Its source and its fields through A, by the id that names its replica.
    let (status, raw) = a.get("/api/v1/message/b:1/raw");
    assert_eq!(status, 200, "{raw}");
    assert!(raw.contains("from 127.0.0.62 to 10002@qq.com"), "{raw}");
    let one = a.json("/api/v1/message/b:1");
    assert_eq!(
        (one["replica"].as_str(), one["ReturnPath"].as_str()),
        (Some("b"), Some("y@sender.example"))
    );
    let headers = a.json("/api/v1/message/b:1/headers");
    assert_eq!(headers["Subject"][0], "hello");
    let latest = a.json("/api/v1/message/latest");
    assert_eq!(latest["ID"], "b:1", "B's is the newest by a minute");
    let (status, body) = a.get("/api/v1/message/c:1");
    assert_eq!(status, 404, "{body}");
    // A bare number is the replica's own.
    assert_eq!(a.json("/api/v1/message/1")["mail_from"], "x@sender.example");

    // `scope=local` asks A for its own alone, as A asks B.
    let local = a.json("/api/v1/messages?scope=local");
    assert_eq!(replicas_of(&local["messages"]), ["a"]);
    assert!(local.get("replicas").is_none(), "{local}");
    // Filters and limits apply to the merged list.
    let page = a.json("/api/v1/messages?start=1&limit=1");
    assert_eq!(
        (page["total"].as_u64(), replicas_of(&page["messages"])),
        (Some(2), vec!["b"])
    );
    let filtered = a.json("/api/v1/messages?client=127.0.0.62");
    assert_eq!(replicas_of(&filtered["messages"]), ["b"]);
    let found = a.json("/api/v1/search?query=from:x%40sender.example");
    assert_eq!(replicas_of(&found["messages"]), ["a"]);

    // The Remote client against A sees both (it lists through /api/v1/messages) and the
    // events of both.
    let remote = qqmx::remote::Remote::connect_with_token(&format!("http://{}", a.api), "s3cret")
        .expect("connect");
    let senders: Vec<String> = remote.messages().into_iter().map(|m| m.mail_from).collect();
    assert_eq!(senders, ["x@sender.example", "y@sender.example"]);
    let waited = remote
        .wait_for_messages(2, HANG)
        .expect("both replicas' messages");
    assert_eq!(waited.len(), 2);
    // The counts of both, added up; `scope=local`, A's own.
    let stats = a.json("/api/v1/stats");
    assert_eq!(stats["since_reset"]["messages_accepted"], 2, "{stats}");
    assert_eq!(answered(&stats), [("a".into(), true), ("b".into(), true)]);
    let own = a.json("/api/v1/stats?scope=local");
    assert_eq!(own["since_reset"]["messages_accepted"], 1, "{own}");

    // Events of both, by time then replica, every one naming its replica; paged by the
    // cursor, the same events in the same order.
    let events = a.json("/api/v1/events");
    let all: Vec<(String, u64)> = events["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            (
                e["replica"].as_str().expect("replica").to_owned(),
                e["seq"].as_u64().expect("seq"),
            )
        })
        .collect();
    assert!(
        all.iter().any(|(r, _)| r == "a") && all.iter().any(|(r, _)| r == "b"),
        "{all:?}"
    );
    assert_eq!(remote.events().len(), all.len());
    let mut paged = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = a.json(&format!("/api/v1/events?limit=5&cursor={cursor}"));
        let batch = page["events"].as_array().expect("events").clone();
        if batch.is_empty() {
            break;
        }
        paged.extend(batch.iter().map(|e| {
            (
                e["replica"].as_str().expect("r").to_owned(),
                e["seq"].as_u64().expect("s"),
            )
        }));
        cursor = page["next_cursor"].as_str().expect("a cursor").to_owned();
    }
    assert_eq!(paged, all);
    let decisions = a.json("/api/v1/events?type=decision&client=127.0.0.62");
    assert!(replicas_of(&decisions["events"]).iter().all(|r| *r == "b"));
    let (status, body) = a.get("/api/v1/events?after=3");
    assert_eq!(status, 400, "a merged list pages by cursor: {body}");
    let local = a.json("/api/v1/events?scope=local");
    assert!(replicas_of(&local["events"]).iter().all(|r| *r == "a"));

    // Deletes through A act on B's store: by the id that names B, and by search.
    assert_eq!(
        send(
            b.mx("mx1"),
            Ipv4Addr::new(127, 0, 0, 62),
            "z@sender.example",
            "10003@qq.com"
        )
        .await,
        250
    );
    let delete = |path: &str, body: &str| {
        let (status, body) = common::sidecar::http(a.api, "DELETE", path, a.token.as_deref(), body);
        assert_eq!(status, 200, "DELETE {path}: {body}");
        serde_json::from_str::<serde_json::Value>(&body).expect("JSON")
    };
    assert_eq!(
        delete("/api/v1/messages", r#"{"IDs": ["b:1"]}"#)["deleted"],
        1
    );
    let by_search = delete("/api/v1/search?query=from:z%40sender.example", "");
    assert_eq!(by_search["deleted"], 1, "{by_search}");
    assert_eq!(
        answered(&by_search),
        [("a".into(), true), ("b".into(), true)]
    );
    assert_eq!(replicas_of(&a.json("/api/v1/messages")["messages"]), ["a"]);
    let (status, body) = common::sidecar::http(
        a.api,
        "DELETE",
        "/api/v1/messages?scope=local",
        a.token.as_deref(),
        r#"{"IDs": ["b:2"]}"#,
    );
    assert_eq!(status, 400, "another replica's id with scope=local: {body}");

    // B stopped (it takes connections but answers nothing): A answers within its 5 s
    // timeout with A's own, and says B failed.
    let signal = |signal: &str| {
        let pid = b.child.id().to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} {pid}");
    };
    signal("-STOP");
    let asked = Instant::now();
    let list = a.json("/api/v1/messages");
    // Real time is the subject: the answer comes after the 5 s timeout, not the 30 s
    // the test would call a hang.
    assert!(asked.elapsed() < HANG, "{:?}", asked.elapsed());
    assert_eq!(replicas_of(&list["messages"]), ["a"]);
    let failed = &list["replicas"][1];
    assert_eq!(
        (failed["replica"].as_str(), failed["ok"].as_bool()),
        (Some("b"), Some(false))
    );
    assert!(
        failed["error"]
            .as_str()
            .is_some_and(|e| e.contains("no answer within 5s")),
        "{failed}"
    );
    // B killed: until its registration expires A still asks it, and says it failed.
    signal("-KILL");
    let (status, body) = a.get("/api/v1/message/b:1");
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("replica `b` did not answer: "), "{body}");
    // Then A lists itself alone.
    wait_until(|| answered(&a.json("/api/v1/messages")) == [("a".to_owned(), true)]).await;
    let all = delete("/api/v1/messages", "");
    assert_eq!(
        (all["deleted"].as_u64(), answered(&all)),
        (Some(1), vec![("a".into(), true)])
    );
    drop(b);

    // Redis gone: A still answers, with the replicas it saw last, and says why.
    let mut redis = redis;
    redis.kill();
    let list = a.json("/api/v1/messages");
    let error = list["replicas"][0]["error"].as_str().unwrap_or_default();
    assert!(error.contains("registry in Redis cannot be read"), "{list}");
}

#[cfg(feature = "cli")]
#[test]
fn one_process_names_no_replica() {
    use common::sidecar::Sidecar;
    let sidecar = Sidecar::manual(&[], &[]);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let ip = Ipv4Addr::new(127, 0, 0, 63);
    assert_eq!(
        runtime.block_on(send(
            sidecar.mx("mx1"),
            ip,
            "m@sender.example",
            "10001@qq.com"
        )),
        250
    );
    for path in [
        "/api/v1/messages",
        "/api/v1/events",
        "/api/v1/message/1",
        "/api/v1/search?query=hello",
    ] {
        let (_, body) = sidecar.get(path);
        assert!(!body.contains("\"replica"), "{path}: {body}");
    }
    assert_eq!(sidecar.json("/api/v1/messages")["messages"][0]["ID"], "1");
}

/// Three Redis Cluster masters of the test's own, every slot covered.
fn cluster() -> Vec<RedisServer> {
    let nodes: Vec<RedisServer> = (0..3)
        .map(|i| {
            RedisServer::start_with(
                &format!("cluster{i}"),
                &[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ],
            )
        })
        .collect();
    let status = Command::new("redis-cli")
        .arg("--cluster")
        .arg("create")
        .args(nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)))
        .args(["--cluster-replicas", "0", "--cluster-yes"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("redis-cli runs (Debian's redis-tools, with redis-server)");
    assert!(status.success(), "redis-cli --cluster create");
    let deadline = Instant::now() + HANG;
    for node in &nodes {
        loop {
            let info: String = node
                .connection()
                .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query(&mut c))
                .unwrap_or_default();
            if info.contains("cluster_state:ok") {
                break;
            }
            assert!(Instant::now() < deadline, "the cluster did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    nodes
}

/// Whether `node` holds the slot of the keys under `prefix` (the others redirect).
fn holds(node: &RedisServer, prefix: &str) -> bool {
    let mut conn = node.connection().expect("the node answers");
    redis::cmd("GET")
        .arg(format!("{{{prefix}}}:probe"))
        .query::<Option<String>>(&mut conn)
        .is_ok()
}

/// A replica pointed at a Cluster node that does not hold the state's slot: the first
/// call is redirected (`MOVED`), the replica follows, and from then on its messages are
/// accepted and its state is on the node that holds the slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_follows_the_redis_clusters_redirection() {
    if skip() {
        return;
    }
    let nodes = cluster();
    let prefix = "cluster-test";
    let (owner, other): (Vec<&RedisServer>, Vec<&RedisServer>) =
        nodes.iter().partition(|n| holds(n, prefix));
    assert_eq!(owner.len(), 1, "one node holds the slot");
    let qq = &replicas(vec![config(other[0], prefix, "a")])[0];
    let addr = qq.addr();
    let mut codes = Vec::new();
    let deadline = Instant::now() + HANG;
    while codes.last() != Some(&250) {
        assert!(Instant::now() < deadline, "never accepted: {codes:?}");
        codes.push(send(addr, Ipv4Addr::LOCALHOST, "a@example.org", "10001@qq.com").await);
    }
    assert!(
        codes.iter().all(|c| [250, 451].contains(c)),
        "451 until the redirection is followed, then 250: {codes:?}"
    );
    assert_eq!(
        send(addr, Ipv4Addr::LOCALHOST, "a@example.org", "10001@qq.com").await,
        250,
        "after {codes:?}"
    );
    let keys = |node: &RedisServer| -> Vec<String> {
        let mut conn = node.connection().expect("the node answers");
        redis::cmd("KEYS")
            .arg(format!("{{{prefix}}}:*"))
            .query(&mut conn)
            .expect("KEYS")
    };
    assert!(
        !keys(owner[0]).is_empty(),
        "the state is on the node of its slot"
    );
    for node in &other {
        assert!(
            keys(node).is_empty(),
            "no state elsewhere: {:?}",
            keys(node)
        );
    }
}
