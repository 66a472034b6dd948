//! Debian's Postfix requiring verified TLS for QQ, as a careful sender does: it trusts
//! qqmx's test CA (`smtp_tls_CAfile`) and its TLS policy for the route to qqmx says
//! `secure match=mx1.qq.com` (or `verify`). A listener whose certificate that CA issued
//! gets the message over TLS; a listener whose certificate comes from another CA, or is
//! the default self-signed one, gets nothing, and Postfix keeps the message deferred with
//! its certificate-verification reason.
//!
//! The first test runs the private Postfix instance of `tests/common/postfix.rs` with no
//! DNS (a transport map routes each recipient to its qqmx server); the second lets
//! Postfix find the MX hosts through qqmx's DNS, as tests/postfix_dns.rs does. Both need
//! Postfix and root like tests/postfix.rs (the second also util-linux's `unshare`);
//! QQMX_SKIP_POSTFIX_TEST=1 skips them. Every wait is bounded by a hang limit of
//! minutes, never asserted on.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::postfix::{Options, Postfix, Queued, deferred};
use qqmx::event::Verb;
use qqmx::{EventKind, QqMx, TestCa};

/// How long Postfix gets to deliver or defer: far beyond the seconds it needs.
const HANG: Duration = Duration::from_secs(180);

/// What Postfix says when a certificate does not verify at `secure` or `verify` level.
const NOT_VERIFIED: &str = "Server certificate not verified";

/// One qqmx server, the recipient routed to it, and the TLS policy of that route.
struct Route {
    name: &'static str,
    server: QqMx,
    rcpt: &'static str,
    policy: &'static str,
}

impl Route {
    fn nexthop(&self) -> String {
        format!("[127.0.0.1]:{}", self.server.addr().port())
    }
}

#[test]
fn postfix_delivers_over_tls_verified_with_the_ca_and_defers_without_it() {
    if std::env::var_os("QQMX_SKIP_POSTFIX_TEST").is_some_and(|v| !v.is_empty()) {
        eprintln!("QQMX_SKIP_POSTFIX_TEST is set: qqmx is not tested with Postfix");
        return;
    }
    let ca = Arc::new(TestCa::generate().expect("a CA"));
    let server = |ca: Option<Arc<TestCa>>| {
        let builder = QqMx::builder().no_limits();
        match ca {
            Some(ca) => builder.tls_ca(ca),
            None => builder,
        }
        .start()
    };
    let routes = [
        Route {
            name: "the CA's certificate, secure",
            server: server(Some(ca.clone())),
            rcpt: "10001@qq.com",
            policy: "secure match=mx1.qq.com",
        },
        Route {
            name: "the CA's certificate, verify",
            server: server(Some(ca.clone())),
            rcpt: "10002@qq.com",
            policy: "verify match=mx1.qq.com",
        },
        Route {
            name: "another CA's certificate",
            server: server(Some(Arc::new(TestCa::generate().expect("another CA")))),
            rcpt: "10003@qq.com",
            policy: "secure match=mx1.qq.com",
        },
        Route {
            name: "the default self-signed certificate",
            server: server(None),
            rcpt: "10004@qq.com",
            policy: "secure match=mx1.qq.com",
        },
    ];
    let transport: Vec<(String, String)> = routes
        .iter()
        .map(|r| (r.rcpt.to_owned(), format!("smtp:{}", r.nexthop())))
        .collect();
    let policies: Vec<String> = routes
        .iter()
        .map(|r| format!("{{{} = {}}}", r.nexthop(), r.policy))
        .collect();
    // The CA file, where Postfix's daemons (user `postfix`) can read it.
    let dir = std::env::temp_dir().join(format!("qqmx-postfix-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a directory for the CA file");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let cafile = dir.join("qqmx-ca.pem");
    std::fs::write(&cafile, ca.cert_pem()).expect("the CA file");
    let options = Options {
        main_cf: format!(
            "smtp_tls_CAfile = {}\nsmtp_tls_policy_maps = inline:{{ {} }}\nsmtp_tls_loglevel = 1\n",
            cafile.display(),
            policies.join(", ")
        ),
        ..Options::default()
    };
    let postfix = Postfix::start_with(&transport, &options).unwrap_or_else(|e| {
        panic!(
            "Postfix does not start: {e}\nThe test needs Debian's postfix package \
             (apt-get install postfix) and root; set QQMX_SKIP_POSTFIX_TEST=1 to skip it"
        )
    });
    for route in &routes {
        let message = format!(
            "From: sender@pfx.test\r\nTo: {}\r\nSubject: {}\r\n\r\nOver verified TLS only.\r\n",
            route.rcpt, route.name
        );
        postfix
            .send("sender@pfx.test", &[route.rcpt.to_owned()], &message)
            .unwrap_or_else(|e| panic!("{}: sendmail: {e}", route.name));
    }

    let (trusted, untrusted) = routes.split_at(2);
    for route in trusted {
        let delivered = route
            .server
            .wait_for_messages(1, HANG)
            .unwrap_or_else(|e| panic!("{}: {e}\nPostfix's log:\n{}", route.name, postfix.log()));
        assert_eq!(delivered[0].rcpt_to, [route.rcpt], "{}", route.name);
        assert!(delivered[0].tls, "{}: stored as not over TLS", route.name);
        let events = route.server.events();
        assert!(
            events
                .iter()
                .any(|e| matches!(e.kind, EventKind::TlsStarted)),
            "{}: no tls_started event",
            route.name
        );
    }

    let deadline = Instant::now() + HANG;
    let queue: Vec<Queued> = loop {
        let queue = postfix.queue().unwrap_or_else(|e| panic!("postqueue: {e}"));
        if untrusted.iter().all(|r| deferred(&queue, r.rcpt).is_some()) {
            break queue;
        }
        assert!(
            Instant::now() < deadline,
            "after {HANG:?}, Postfix has not deferred every message of an untrusted \
             certificate\nqueue: {queue:#?}\nPostfix's log:\n{}",
            postfix.log()
        );
        thread::sleep(Duration::from_millis(200));
    };
    for route in untrusted {
        let (_, reason) = deferred(&queue, route.rcpt).expect("deferred");
        assert!(
            reason.contains(NOT_VERIFIED),
            "{}: delay reason {reason:?}",
            route.name
        );
        assert!(
            route.server.messages().is_empty(),
            "{}: a message reached the store",
            route.name
        );
        // Postfix finishes the handshake, finds the certificate unverified, and says
        // only QUIT inside TLS.
        let verbs: Vec<Verb> = route
            .server
            .events()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Command(command) => Some(command.verb),
                _ => None,
            })
            .collect();
        assert_eq!(
            verbs,
            [Verb::Ehlo, Verb::Starttls, Verb::Quit],
            "{}",
            route.name
        );
    }
    let log = postfix.log();
    for route in trusted {
        let verified = format!(
            "Verified TLS connection established to 127.0.0.1[127.0.0.1]:{}",
            route.server.addr().port()
        );
        assert!(
            log.contains(&verified),
            "{}: not in the log:\n{log}",
            route.name
        );
    }
    drop(postfix);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Postfix resolving QQ's MX hosts through qqmx's DNS (as in tests/postfix_dns.rs: DNS on
/// port 53 of a loopback network of this run's own, Postfix in a mount namespace with a
/// private resolv.conf), with verified TLS for every destination: `secure` for qq.com
/// (the certificate must name a subdomain of qq.com) and `verify` for foxmail.com (it
/// must name the MX host found in DNS). The policy's keys are the next hops as the
/// transport names them, port included (`qq.com:PORT`). Trusting qqmx's CA, both arrive at the best MX,
/// `mx3`, over TLS; trusting another CA, a second instance defers both with its
/// certificate-verification reason.
#[cfg(all(feature = "dns", feature = "control"))]
#[test]
fn postfix_resolving_mx_through_qqmx_dns_verifies_tls_with_the_ca() {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};

    use qqmx::sidecar::{Sidecar, SidecarOptions};
    use qqmx::{Clock, Config};

    if std::env::var_os("QQMX_SKIP_POSTFIX_TEST").is_some_and(|v| !v.is_empty()) {
        eprintln!("QQMX_SKIP_POSTFIX_TEST is set: skipped");
        return;
    }
    let root = common::postfix::run(std::process::Command::new("id").arg("-u"), None)
        .unwrap_or_else(|e| panic!("cannot tell the user: {e}"));
    assert_eq!(
        root, "0",
        "this test needs root (Postfix's master, a mount namespace, port 53); \
         set QQMX_SKIP_POSTFIX_TEST=1 to skip it"
    );
    // 127.A.B.0/24 of this run's own; A from 200 up, apart from tests/postfix_dns.rs's.
    let pid = std::process::id();
    let net = [127, 200 + (pid % 50) as u8, 1 + ((pid / 50) % 250) as u8];
    let ip = |host: u8| IpAddr::V4(Ipv4Addr::new(net[0], net[1], net[2], host));
    let port = std::net::TcpListener::bind((ip(11), 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("cannot bind on {}: {e}", ip(11)));
    let mut config = Config::from_toml(&format!(
        "[listeners.mx1]\naddr = \"{}:{port}\"\n[listeners.mx2]\naddr = \"{}:{port}\"\n\
         [listeners.mx3]\naddr = \"{}:{port}\"\n[tls]\nca = true\n",
        ip(11),
        ip(12),
        ip(13),
    ))
    .expect("a valid config")
    .no_limits();
    config.dns.listen = Some(SocketAddr::new(ip(53), 53));
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let options = SidecarOptions::default().clock(Clock::manual_at_unix(1_750_000_000));
    let sidecar = runtime
        .block_on(Sidecar::start(config, options))
        .unwrap_or_else(|e| panic!("qqmx does not start: {e}"));
    let dns = sidecar.dns_addr().expect("DNS runs");

    let dir = std::env::temp_dir().join(format!("qqmx-postfix-tls-dns-{pid}"));
    std::fs::create_dir_all(&dir).expect("a directory for the CA files");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (ours, other) = (dir.join("qqmx-ca.pem"), dir.join("other-ca.pem"));
    let pem = sidecar.server().ca_pem().expect("a test CA");
    std::fs::write(&ours, pem).expect("the CA file");
    let stranger = TestCa::generate().expect("another CA");
    std::fs::write(&other, stranger.cert_pem()).expect("the other CA file");

    let routes = vec![
        ("qq.com".to_owned(), format!("smtp:qq.com:{port}")),
        ("foxmail.com".to_owned(), format!("smtp:foxmail.com:{port}")),
    ];
    let rcpts = ["123456@qq.com", "654321@foxmail.com"];
    let start = |cafile: &std::path::Path| {
        let postfix = Postfix::resolving_through(
            dns.ip(),
            &routes,
            &format!(
                "smtp_tls_CAfile = {}\nsmtp_tls_loglevel = 1\n\
                 smtp_tls_policy_maps = inline:{{ {{qq.com:{port} = secure}}, \
                 {{foxmail.com:{port} = verify}} }}",
                cafile.display()
            ),
        );
        for rcpt in rcpts {
            let message = format!(
                "From: sender@pfx.test\r\nTo: {rcpt}\r\nSubject: TLS via DNS\r\n\r\nHello.\r\n"
            );
            postfix
                .send("sender@pfx.test", &[rcpt.to_owned()], &message)
                .expect("sendmail takes the message");
        }
        postfix
    };

    // Trusting qqmx's CA: both arrive at mx3, over TLS.
    let postfix = start(&ours);
    let deadline = Instant::now() + HANG;
    let arrived = loop {
        let messages = sidecar.server().store().messages();
        if messages.len() >= rcpts.len() {
            break messages;
        }
        assert!(
            Instant::now() < deadline,
            "after {HANG:?}, {} of {} messages arrived; Postfix's log:\n{}",
            messages.len(),
            rcpts.len(),
            postfix.log()
        );
        thread::sleep(Duration::from_millis(100));
    };
    let log = postfix.log();
    drop(postfix);
    for rcpt in rcpts {
        let message = arrived
            .iter()
            .find(|m| m.rcpt_to == [rcpt])
            .unwrap_or_else(|| panic!("no message for {rcpt}:\n{log}"));
        assert_eq!(message.mx, "mx3", "{rcpt}: the best MX");
        assert!(message.tls, "{rcpt}: not over TLS");
    }
    let verified = format!(
        "Verified TLS connection established to mx3.qq.com[{}]:{port}",
        ip(13)
    );
    assert_eq!(log.matches(&verified).count(), 2, "{log}");

    // Trusting another CA: both deferred, nothing more stored.
    let postfix = start(&other);
    let deadline = Instant::now() + HANG;
    let queue = loop {
        let queue = postfix.queue().unwrap_or_else(|e| panic!("postqueue: {e}"));
        if rcpts.iter().all(|r| deferred(&queue, r).is_some()) {
            break queue;
        }
        assert!(
            Instant::now() < deadline,
            "after {HANG:?}, Postfix has not deferred both messages\nqueue: {queue:#?}\n\
             Postfix's log:\n{}",
            postfix.log()
        );
        thread::sleep(Duration::from_millis(200));
    };
    for rcpt in rcpts {
        let (_, reason) = deferred(&queue, rcpt).expect("deferred");
        assert!(
            reason.contains(NOT_VERIFIED),
            "{rcpt}: delay reason {reason:?}"
        );
    }
    assert_eq!(sidecar.server().store().messages().len(), rcpts.len());
    drop(postfix);
    runtime.block_on(sidecar.shutdown());
    let _ = std::fs::remove_dir_all(&dir);
}
