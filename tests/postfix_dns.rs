//! A real MTA that finds QQ's MX hosts itself: Debian's Postfix, its resolver pointed at
//! qqmx's DNS server, delivers to `@qq.com` with no route but the port. It looks up
//! qq.com's MX records, connects to the host with the best (lowest) preference, `mx3`;
//! with `mx3` down, its port refuses connections and Postfix moves on to `mx2`, the next.
//!
//! Postfix's resolver reads /etc/resolv.conf, which names a name server but no port, so
//! qqmx's DNS answers on port 53 of a loopback address of its own, the MX hosts listen on
//! three more addresses with one shared port, and Postfix runs in a mount namespace of
//! its own (`unshare --mount`) where a private resolv.conf is bound over
//! /etc/resolv.conf: the host's file is not touched. The transport of qq.com is
//! `smtp:qq.com:PORT` (no brackets: an MX lookup, with that port).
//!
//! It needs Postfix and util-linux's `unshare` (`.ci/run` and scripts/test.sh install
//! Postfix on Debian), and root, which Postfix's master, the mount namespace and port 53
//! need; without them it fails and says why. Set QQMX_SKIP_POSTFIX_TEST=1 to skip it on
//! a machine without them.
#![cfg(all(feature = "dns", feature = "control"))]

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::thread;
use std::time::{Duration, Instant, UNIX_EPOCH};

mod common;

use common::postfix::{Postfix, run};
use qqmx::sidecar::{Sidecar, SidecarOptions};
use qqmx::{Clock, Config, Message};

/// How long Postfix gets to deliver one message. Far beyond what it needs (seconds):
/// only a hang reaches it, on a loaded 2-core machine.
const HANG: Duration = Duration::from_secs(180);

/// A loopback network of this run's own, `127.A.B.0/24`, so that port 53 and the shared
/// SMTP port are free on it whatever else runs on the machine.
fn network() -> [u8; 3] {
    let pid = std::process::id();
    let a = 100 + (pid % 100) as u8;
    let b = 1 + ((pid / 100) % 250) as u8;
    [127, a, b]
}

fn ip(host: u8) -> IpAddr {
    let [x, a, b] = network();
    IpAddr::V4(Ipv4Addr::new(x, a, b, host))
}

/// A port free on the MX hosts' first address (and so, on a network of this run's own,
/// on the others).
fn shared_port() -> u16 {
    std::net::TcpListener::bind((ip(11), 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind on {}: {e}", ip(11)))
}

fn config(port: u16) -> Config {
    let mut config = Config::from_toml(&format!(
        r#"
        [listeners.mx1]
        addr = "{}:{port}"
        [listeners.mx2]
        addr = "{}:{port}"
        [listeners.mx3]
        addr = "{}:{port}"
        [tls]
        enabled = false
        "#,
        ip(11),
        ip(12),
        ip(13),
    ))
    .expect("a valid config")
    .no_limits();
    config.dns.listen = Some(SocketAddr::new(ip(53), 53));
    config
}

/// Waits for the message whose Subject is `subject`; on a hang, fails with Postfix's log.
fn arrival(sidecar: &Sidecar, postfix: &Postfix, subject: &str) -> Message {
    let start = Instant::now();
    loop {
        let found =
            sidecar.server().store().messages().into_iter().find(|m| {
                String::from_utf8_lossy(&m.raw).contains(&format!("Subject: {subject}\r\n"))
            });
        if let Some(message) = found {
            return message;
        }
        assert!(
            start.elapsed() < HANG,
            "`{subject}` did not arrive within {HANG:?}; Postfix's log:\n{}",
            postfix.log()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

fn message(subject: &str) -> String {
    format!("From: sender@pfx.test\nTo: 123456@qq.com\nSubject: {subject}\n\nHello.\n")
}

#[test]
fn postfix_delivers_to_the_best_mx_and_fails_over_to_the_next() {
    if std::env::var_os("QQMX_SKIP_POSTFIX_TEST").is_some_and(|v| !v.is_empty()) {
        eprintln!("QQMX_SKIP_POSTFIX_TEST is set: skipped");
        return;
    }
    let root = run(std::process::Command::new("id").arg("-u"), None)
        .unwrap_or_else(|e| panic!("cannot tell the user: {e}"));
    assert_eq!(
        root, "0",
        "this test needs root (Postfix's master, a mount namespace, port 53); \
         set QQMX_SKIP_POSTFIX_TEST=1 to skip it"
    );
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let port = shared_port();
    let options = SidecarOptions::default().clock(Clock::manual(
        UNIX_EPOCH + Duration::from_secs(1_750_000_000),
    ));
    let sidecar = runtime
        .block_on(Sidecar::start(config(port), options))
        .unwrap_or_else(|e| panic!("qqmx does not start: {e}"));
    let dns = sidecar.dns_addr().expect("DNS runs");

    let routes = vec![("qq.com".to_owned(), format!("smtp:qq.com:{port}"))];
    let postfix = Postfix::resolving_through(dns.ip(), &routes, "");

    let rcpt = vec!["123456@qq.com".to_owned()];
    postfix
        .send("sender@pfx.test", &rcpt, &message("best"))
        .expect("sendmail takes the message");
    let best = arrival(&sidecar, &postfix, "best");

    sidecar.server().set_mx_up("mx3", false);
    postfix
        .send("sender@pfx.test", &rcpt, &message("failover"))
        .expect("sendmail takes the message");
    let next = arrival(&sidecar, &postfix, "failover");
    sidecar.server().set_mx_up("mx3", true);
    let log = postfix.log();
    drop(postfix);
    runtime.block_on(sidecar.shutdown());

    assert_eq!(best.mx, "mx3", "qq.com's best MX is mx3 (10)");
    assert_eq!(next.mx, "mx2", "with mx3 down, the next is mx2 (20)");
    assert!(
        log.contains(&format!("relay=mx3.qq.com[{}]:{port}", ip(13))),
        "Postfix found mx3 by name:\n{log}"
    );
    assert!(
        log.contains(&format!("relay=mx2.qq.com[{}]:{port}", ip(12))),
        "and mx2 by name:\n{log}"
    );
}
