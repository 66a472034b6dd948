//! Debian's Postfix requiring verified TLS for QQ, as a careful sender does: it trusts
//! qqmx's test CA (`smtp_tls_CAfile`) and its TLS policy for the route to qqmx says
//! `secure match=mx1.qq.com` (or `verify`). A listener whose certificate that CA issued
//! gets the message over TLS; a listener whose certificate comes from another CA, or is
//! the default self-signed one, gets nothing, and Postfix keeps the message deferred with
//! its certificate-verification reason.
//!
//! It runs the private Postfix instance of `tests/common/postfix.rs` (no DNS: a
//! transport map routes each recipient to its qqmx server), so it needs Postfix and root
//! like tests/postfix.rs; QQMX_SKIP_POSTFIX_TEST=1 skips it. Every wait is bounded by a
//! hang limit of minutes, never asserted on.

mod common;

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::postfix::{Extra, Postfix, Queued, TLSMGR, deferred};
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
    let ca_pem = ca.cert_pem().to_owned();
    let postfix = Postfix::start_with(&transport, |dir| {
        let cafile = dir.join("qqmx-ca.pem");
        std::fs::write(&cafile, &ca_pem).expect("the CA file");
        Extra {
            main_cf: format!(
                "smtp_tls_CAfile = {}\nsmtp_tls_policy_maps = inline:{{ {} }}\nsmtp_tls_loglevel = 1\n",
                cafile.display(),
                policies.join(", ")
            ),
            master_cf: TLSMGR.to_owned(),
        }
    })
    .unwrap_or_else(|e| {
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
}
