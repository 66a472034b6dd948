//! SPF, DKIM and DMARC: messages signed by dkimpy (an independent implementation), checked
//! by qqmx against a zone the test writes, with no DNS lookup leaving the process.

mod common;

use std::net::IpAddr;
use std::process::Command;

use qqmx::auth::Authenticator;
use qqmx::policy::{AuthReport, AuthResult, DmarcPolicy};
use qqmx::{Config, EventKind, Folder, QqMx};

use common::Smtp;

const RSA_KEY: &str = "tests/keys/rsa2048.key";
const RSA_DNS: &str = include_str!("keys/rsa2048.dns");
const ED25519_KEY: &str = "tests/keys/ed25519.key";
const ED25519_DNS: &str = include_str!("keys/ed25519.dns");

const SENDER_IP: &str = "127.0.0.2";

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

fn message(from: &str, body: &str) -> String {
    format!(
        "From: Sender <{from}>\r\nTo: 10001@qq.com\r\nSubject: order 42\r\n\
         Date: Mon, 02 Jun 2025 09:00:00 +0800\r\nMessage-ID: <42@example.com>\r\n\r\n{body}\r\n"
    )
}

/// Signs `message` with dkimpy.
fn sign(message: &str, key: &str, algorithm: &str, domain: &str, selector: &str) -> String {
    let mut child = Command::new("python3")
        .args([
            "tests/clients/dkim_sign.py",
            "--key",
            key,
            "--algorithm",
            algorithm,
            "--domain",
            domain,
            "--selector",
            selector,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs (scripts/test.sh installs dkimpy)");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(message.as_bytes()).expect("write message");
    }
    let out = child.wait_with_output().expect("signer finishes");
    assert!(
        out.status.success(),
        "dkim_sign.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("signed message is text")
}

fn rsa(message: &str, domain: &str, selector: &str) -> String {
    sign(message, RSA_KEY, "rsa-sha256", domain, selector)
}

fn ed25519(message: &str, domain: &str, selector: &str) -> String {
    sign(message, ED25519_KEY, "ed25519-sha256", domain, selector)
}

/// example.com: SPF allows 127.0.0.2 only, keys `rsa` and `ed` published, DMARC reject.
fn zone() -> Config {
    let mut config = Config::default();
    config
        .dns
        .txt("example.com", "v=spf1 ip4:127.0.0.2 -all")
        .txt("rsa._domainkey.example.com", RSA_DNS.trim())
        .txt("ed._domainkey.example.com", ED25519_DNS.trim())
        .txt("_dmarc.example.com", "v=DMARC1; p=reject");
    config
}

async fn check(config: &Config, ip: &str, mail_from: &str, raw: &str) -> AuthReport {
    let auth = Authenticator::new(config).expect("authenticator");
    let spf = auth.spf(self::ip(ip), "mail.example.com", mail_from).await;
    auth.message(&spf, mail_from, raw.as_bytes()).await
}

#[tokio::test]
async fn rsa_and_ed25519_signatures_pass_and_align() {
    let config = zone();
    for (signed, algorithm) in [
        (
            rsa(&message("a@example.com", "Hello"), "example.com", "rsa"),
            "rsa-sha256",
        ),
        (
            ed25519(&message("a@example.com", "Hello"), "example.com", "ed"),
            "ed25519-sha256",
        ),
    ] {
        let report = check(&config, SENDER_IP, "a@example.com", &signed).await;
        assert_eq!(report.spf.result, AuthResult::Pass, "{report:?}");
        assert_eq!(report.dkim.len(), 1, "{report:?}");
        let dkim = &report.dkim[0];
        assert_eq!(dkim.result, AuthResult::Pass, "{report:?}");
        assert_eq!(dkim.algorithm, algorithm);
        assert_eq!(dkim.domain, "example.com");
        assert_eq!(report.dmarc.result, AuthResult::Pass, "{report:?}");
        assert_eq!(report.dmarc.policy, Some(DmarcPolicy::Reject));
        assert!(report.dmarc.spf_aligned && report.dmarc.dkim_aligned);
    }
}

#[tokio::test]
async fn each_dkim_failure_has_its_reason() {
    let mut config = zone();
    config
        .dns
        .txt("revoked._domainkey.example.com", "v=DKIM1; k=rsa; p=");
    let original = message("a@example.com", "Pay 10 yuan");
    let cases = [
        (
            rsa(&original, "example.com", "rsa").replace("Pay 10 yuan", "Pay 99 yuan"),
            AuthResult::Fail,
            "body hash mismatch",
        ),
        (
            ed25519(&original, "example.com", "ed").replace("order 42", "order 43"),
            AuthResult::Fail,
            "signature does not verify",
        ),
        (
            rsa(&original, "example.com", "nosuch"),
            AuthResult::PermError,
            "no key at nosuch._domainkey.example.com",
        ),
        (
            rsa(&original, "example.com", "revoked"),
            AuthResult::PermError,
            "key revoked",
        ),
        (
            // The Ed25519 key published under the RSA selector: the wrong key.
            ed25519(&original, "example.com", "rsa"),
            AuthResult::Fail,
            "",
        ),
    ];
    for (raw, result, reason) in cases {
        let report = check(&config, SENDER_IP, "a@example.com", &raw).await;
        let dkim = &report.dkim[0];
        assert_eq!(dkim.result, result, "{reason}: {report:?}");
        assert!(dkim.reason.contains(reason), "{reason}: {report:?}");
        // SPF still passes aligned, so DMARC passes: DKIM alone does not decide.
        assert_eq!(report.dmarc.result, AuthResult::Pass, "{report:?}");
        assert!(!report.dmarc.dkim_aligned);
    }
}

#[tokio::test]
async fn unsigned_mail_from_an_unlisted_ip_fails_dmarc() {
    let report = check(
        &zone(),
        "127.0.0.9",
        "a@example.com",
        &message("a@example.com", "Hello"),
    )
    .await;
    assert!(report.dkim.is_empty(), "{report:?}");
    assert_eq!(report.spf.result, AuthResult::Fail);
    assert_eq!(
        report.spf.reason,
        "127.0.0.9 is not permitted by example.com"
    );
    assert_eq!(report.dmarc.result, AuthResult::Fail);
    assert_eq!(
        report.dmarc.reason,
        "neither SPF nor DKIM passed aligned with example.com"
    );
}

#[tokio::test]
async fn spf_softfail_is_not_fail() {
    let mut config = Config::default();
    config
        .dns
        .txt("soft.example", "v=spf1 ip4:192.0.2.1 ~all")
        .txt("hard.example", "v=spf1 ip4:192.0.2.1 -all")
        .txt("open.example", "v=spf1 ?all");
    let auth = Authenticator::new(&config).expect("authenticator");
    let at = |domain: &str| format!("x@{domain}");
    for (domain, result) in [
        ("soft.example", AuthResult::SoftFail),
        ("hard.example", AuthResult::Fail),
        ("open.example", AuthResult::Neutral),
        ("unknown.example", AuthResult::None),
    ] {
        let spf = auth.spf(ip(SENDER_IP), "helo.example", &at(domain)).await;
        assert_eq!(spf.result, result, "{domain}: {spf:?}");
    }
}

#[tokio::test]
async fn a_from_domain_that_is_not_aligned_fails_dmarc() {
    let mut config = zone();
    config
        .dns
        .txt("esp.example", "v=spf1 ip4:127.0.0.2 -all")
        .txt("rsa._domainkey.esp.example", RSA_DNS.trim());
    // Signed by the ESP and sent from its envelope: both pass, neither aligns.
    let raw = rsa(&message("a@example.com", "Hello"), "esp.example", "rsa");
    let report = check(&config, SENDER_IP, "bounce@esp.example", &raw).await;
    assert_eq!(report.spf.result, AuthResult::Pass);
    assert_eq!(report.dkim[0].result, AuthResult::Pass);
    assert_eq!(report.dmarc.result, AuthResult::Fail, "{report:?}");
    assert!(!report.dmarc.spf_aligned && !report.dmarc.dkim_aligned);
}

#[tokio::test]
async fn alignment_is_relaxed_unless_the_record_says_strict() {
    let raw = rsa(&message("a@news.example.com", "Hi"), "example.com", "rsa");
    let relaxed = check(&zone(), "127.0.0.9", "a@news.example.com", &raw).await;
    assert_eq!(relaxed.dmarc.result, AuthResult::Pass, "{relaxed:?}");
    let mut strict = zone();
    strict
        .dns
        .records
        .get_mut("_dmarc.example.com")
        .expect("record")
        .txt = vec!["v=DMARC1; p=reject; adkim=s".into()];
    let report = check(&strict, "127.0.0.9", "a@news.example.com", &raw).await;
    assert_eq!(report.dmarc.result, AuthResult::Fail, "{report:?}");
}

#[tokio::test]
async fn subdomains_follow_sp() {
    let mut config = Config::default();
    config
        .dns
        .txt("_dmarc.example.org", "v=DMARC1; p=none; sp=reject; pct=40");
    let raw = message("a@news.example.org", "Hi");
    let report = check(&config, SENDER_IP, "a@news.example.org", &raw).await;
    assert_eq!(report.dmarc.result, AuthResult::Fail);
    assert_eq!(report.dmarc.policy, Some(DmarcPolicy::Reject));
    assert_eq!(report.dmarc.pct, 40);
    let top = check(
        &config,
        SENDER_IP,
        "a@example.org",
        &message("a@example.org", "Hi"),
    )
    .await;
    assert_eq!(top.dmarc.policy, Some(DmarcPolicy::None));
}

#[tokio::test]
async fn a_forged_qq_sender_fails_spf_against_the_builtin_records() {
    let auth = Authenticator::new(&Config::default()).expect("authenticator");
    let spf = auth.spf(ip("127.0.0.1"), "localhost", "admin@qq.com").await;
    assert_eq!(spf.result, AuthResult::Fail, "{spf:?}");
    let spf = auth
        .spf(ip("192.0.2.7"), "localhost", "admin@foxmail.com")
        .await;
    assert_eq!(
        spf.result,
        AuthResult::Pass,
        "the stand-in range passes: {spf:?}"
    );
}

/// Every check above, with an empty zone and with names nobody publishes: with the
/// network unplugged (the resolver has no name servers), every answer still comes from
/// the zone, so nothing is a temporary DNS error.
#[tokio::test]
async fn no_lookup_leaves_the_process() {
    let mut config = Config::default();
    config.dns.builtin = false;
    config
        .dns
        .txt("chain.example", "v=spf1 include:a.example mx a ptr -all")
        .txt(
            "a.example",
            "v=spf1 a:host.nowhere.example mx:nowhere.example -all",
        );
    let raw = rsa(
        &message("someone@chain.example", "Hello"),
        "nowhere.example",
        "sel",
    );
    let report = check(&config, SENDER_IP, "someone@chain.example", &raw).await;
    let text = format!("{report:?}");
    assert!(!text.contains("TempError"), "{text}");
    assert!(!text.to_lowercase().contains("resolution"), "{text}");
    assert_eq!(report.spf.result, AuthResult::Fail, "{text}");
    assert_eq!(report.dkim[0].result, AuthResult::PermError, "{text}");
    assert_eq!(report.dmarc.result, AuthResult::None, "{text}");
}

// ---- over SMTP ---------------------------------------------------------------------

/// Sends `raw` from `source` as `mail_from`; returns the replies to MAIL and to the final dot.
async fn send(server: &QqMx, source: &str, mail_from: &str, raw: &str) -> (String, String) {
    let mut smtp = Smtp::connect_from(ip(source), server.addr()).await;
    smtp.send("EHLO mail.example.com").await;
    let mail = smtp.send(&format!("MAIL FROM:<{mail_from}>")).await;
    if !mail.starts_with("250") {
        return (mail, String::new());
    }
    assert!(smtp.send("RCPT TO:<10001@qq.com>").await.starts_with("250"));
    assert!(smtp.send("DATA").await.starts_with("354"));
    let stuffed = raw.replace("\r\n.", "\r\n..");
    let end = smtp.data(&stuffed).await;
    smtp.send("QUIT").await;
    (mail, end)
}

#[tokio::test]
async fn a_forged_qq_sender_from_127_0_0_1_gets_qqs_spf_text_at_mail() {
    let server = QqMx::start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO qq.com").await;
    let reply = smtp.send("MAIL FROM:<admin@qq.com>").await;
    let prefix = "550 SPF check failed. \
        http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1001445 [";
    let rest = reply
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{reply}"));
    let (token, tail) = rest.split_once(' ').expect("token then IP");
    assert_eq!(token.len(), 68, "{reply}");
    assert!(token.starts_with('M'), "{reply}");
    assert_eq!(tail, "IP: 127.0.0.1]");
    let why = server
        .explain(ip("127.0.0.1"), server.clock().now())
        .expect("a refusal");
    assert_eq!(why.rule, "auth.spf");
    assert_eq!(why.detail, "127.0.0.1 is not permitted by qq.com");
}

#[tokio::test]
async fn dmarc_reject_is_refused_at_the_end_of_data_with_qqs_text() {
    let mut config = zone();
    // About DMARC: SPF's own refusal after DATA (tested in tests/faithful.rs) is off.
    config.auth.spf_reject_others = qqmx::config::SpfStage::Off;
    let server = QqMx::builder().config(config).start();
    let (mail, end) = send(
        &server,
        "127.0.0.9",
        "a@example.com",
        &message("a@example.com", "Hello"),
    )
    .await;
    assert!(
        mail.starts_with("250"),
        "SPF does not refuse example.com at MAIL: {mail}"
    );
    assert_eq!(
        end,
        "550 DMARC check failed. http://service.mail.qq.com/cgi-bin/help?subtype=1&&no=1001508&&id=16."
    );
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn signed_mail_is_delivered_with_its_results() {
    let server = QqMx::builder().config(zone()).start();
    let raw = ed25519(&message("a@example.com", "Hello"), "example.com", "ed");
    let (_, end) = send(&server, SENDER_IP, "a@example.com", &raw).await;
    assert!(end.starts_with("250"), "{end}");
    let stored = &server.messages()[0];
    assert_eq!(stored.folder, Folder::Inbox);
    assert_eq!(
        stored.header("Authentication-Results").as_deref(),
        Some(
            "mx.qq.com; spf=pass smtp.mailfrom=a@example.com; dkim=pass header.d=example.com; \
             dmarc=pass(p=reject) header.from=example.com"
        )
    );
    let auth = stored.auth.as_ref().expect("results kept with the message");
    assert_eq!(auth.dkim[0].algorithm, "ed25519-sha256");
    assert!(server.events().iter().any(|e| matches!(
        &e.kind,
        EventKind::Authenticated(r) if r.dmarc.result == AuthResult::Pass
    )));
}

#[tokio::test]
async fn quarantine_delivers_to_the_junk_folder() {
    let mut config = zone();
    config
        .dns
        .records
        .get_mut("_dmarc.example.com")
        .expect("record")
        .txt = vec!["v=DMARC1; p=quarantine".into()];
    // About DMARC: SPF's own refusal after DATA (tested in tests/faithful.rs) is off.
    config.auth.spf_reject_others = qqmx::config::SpfStage::Off;
    let server = QqMx::builder().config(config).start();
    let raw = rsa(
        &message("a@example.com", "Pay 10 yuan"),
        "example.com",
        "rsa",
    )
    .replace("Pay 10 yuan", "Pay 99 yuan");
    let (_, end) = send(&server, "127.0.0.9", "a@example.com", &raw).await;
    assert!(end.starts_with("250"), "{end}");
    let stored = &server.messages()[0];
    assert_eq!(stored.folder, Folder::Junk);
    let auth = stored.auth.as_ref().expect("results");
    assert_eq!(auth.dkim[0].reason, "body hash mismatch");
    assert_eq!(
        stored.header("Authentication-Results").as_deref(),
        Some(
            "mx.qq.com; spf=fail smtp.mailfrom=a@example.com; dkim=fail header.d=example.com; \
             dmarc=fail(p=quarantine) header.from=example.com"
        )
    );
}

#[tokio::test]
async fn auth_can_be_switched_off() {
    let mut config = zone();
    config.auth.enabled = false;
    let server = QqMx::builder().config(config).start();
    let (mail, end) = send(
        &server,
        "127.0.0.9",
        "admin@qq.com",
        &message("a@example.com", "Hi"),
    )
    .await;
    assert!(
        mail.starts_with("250") && end.starts_with("250"),
        "{mail} / {end}"
    );
    let stored = &server.messages()[0];
    assert!(stored.auth.is_none());
    assert!(stored.header("Authentication-Results").is_none());
}

#[tokio::test]
async fn a_client_needs_a_ptr_record_that_resolves_back_when_asked() {
    let mut config = zone();
    config.auth.require_ptr = true;
    config
        .dns
        .ptr(ip(SENDER_IP), "mail.example.com")
        .ip("mail.example.com", ip(SENDER_IP))
        .ptr(ip("127.0.0.3"), "liar.example.com");
    let server = QqMx::builder().config(config).start();
    let raw = message("a@example.com", "Hi");
    let (mail, _) = send(&server, SENDER_IP, "a@example.com", &raw).await;
    assert!(mail.starts_with("250"), "{mail}");
    for source in ["127.0.0.9", "127.0.0.3"] {
        let (mail, _) = send(&server, source, "a@example.com", &raw).await;
        assert_eq!(
            mail,
            format!("550 Connection denied: {source} has no PTR record")
        );
    }
}

#[tokio::test]
async fn unsigned_mail_claiming_a_hosted_domain_gets_exmails_text() {
    let mut config = zone();
    config.mailboxes.hosted_domains = vec!["corp.example".into()];
    config.mailboxes.listed = vec!["boss@corp.example".into()];
    config.auth.mime_from_local = true;
    let server = QqMx::builder().config(config).start();
    let mut smtp = Smtp::connect_from(ip("127.0.0.9"), server.addr()).await;
    smtp.send("EHLO outside.example").await;
    smtp.send("MAIL FROM:<x@outside.example>").await;
    assert!(
        smtp.send("RCPT TO:<boss@corp.example>")
            .await
            .starts_with("250")
    );
    smtp.send("DATA").await;
    let end = smtp
        .data(&message("ceo@corp.example", "Wire the money"))
        .await;
    assert_eq!(end, "550 Mime from domain is a local domain");
}
