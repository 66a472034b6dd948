//! QQ's refusals and hosts as the reference shows them: SPF refused after DATA for
//! senders outside QQ's domains, the antispam text, exmail's texts for hosted domains, and
//! the `mxbiz1` listener answering with the 2018 `bizmx17` transcript.

mod common;

use common::Smtp;
use qqmx::{Clock, Config, Generation, QqMx, Server};
use tokio::net::TcpListener;

const GENERATIONS: [Generation; 3] = [Generation::G2017, Generation::G2019, Generation::G2025];

/// Sends one message from `from` to `to` over `smtp` and returns the reply to its end.
async fn send(smtp: &mut Smtp, from: &str, to: &str, body: &str) -> String {
    smtp.send("EHLO client.example.org").await;
    let mail = smtp.send(&format!("MAIL FROM:<{from}>")).await;
    assert!(mail.starts_with("250"), "{mail}");
    let rcpt = smtp.send(&format!("RCPT TO:<{to}>")).await;
    assert!(rcpt.starts_with("250"), "{rcpt}");
    smtp.send("DATA").await;
    smtp.data(body).await
}

#[tokio::test]
async fn a_sender_whose_spf_does_not_list_its_ip_is_refused_after_data_with_qqs_text() {
    let mut config = Config::default();
    config
        .dns
        .txt("stale.example", "v=spf1 ip4:192.0.2.1 -all")
        .txt("good.example", "v=spf1 ip4:127.0.0.0/8 -all");
    let server = QqMx::builder().config(config).seed(5).start();

    let mut smtp = Smtp::connect(server.addr()).await;
    let end = send(
        &mut smtp,
        "news@stale.example",
        "10001@qq.com",
        "From: news@stale.example\r\nSubject: hi\r\n\r\nhello",
    )
    .await;
    let prefix = "550 SPF check failed [";
    let suffix = "  IP: 127.0.0.1]. https://service.mail.qq.com/detail/122/72.";
    assert!(end.starts_with(prefix) && end.ends_with(suffix), "{end:?}");
    let token = &end[prefix.len()..end.len() - suffix.len()];
    assert_eq!(token.len(), 68, "{token}");
    assert!(token.starts_with('M') && token.ends_with("=="), "{token}");

    let mut smtp = Smtp::connect(server.addr()).await;
    let end = send(
        &mut smtp,
        "news@good.example",
        "10001@qq.com",
        "From: news@good.example\r\nSubject: hi\r\n\r\nhello",
    )
    .await;
    assert_eq!(end, "250 Ok: queued as ");
    let stored = server.messages();
    assert_eq!(stored.len(), 1, "only the SPF pass is stored");
}

#[tokio::test]
async fn an_spf_fail_is_only_for_dmarc_when_switched_off() {
    let config = Config::from_toml(
        "[auth]\nspf_reject_others = \"off\"\n[dns.records.\"stale.example\"]\n\
         txt = [\"v=spf1 ip4:192.0.2.1 -all\"]\n",
    )
    .expect("config");
    let server = QqMx::builder().config(config).start();
    let mut smtp = Smtp::connect(server.addr()).await;
    let end = send(
        &mut smtp,
        "news@stale.example",
        "10001@qq.com",
        "From: news@stale.example\r\n\r\nhello",
    )
    .await;
    assert_eq!(end, "250 Ok: queued as ");
    let auth = server.messages()[0].auth.clone().expect("auth");
    assert_eq!(auth.spf.result, qqmx::policy::AuthResult::Fail);
}

#[tokio::test]
async fn a_content_phrase_can_answer_with_the_antispam_text() {
    let config = Config::from_toml(
        "[content]\nphrases = [{ phrase = \"cheap pills\", reply = \"antispam\" }]\n",
    )
    .expect("config");
    let server = QqMx::builder().config(config).start();
    let mut smtp = Smtp::connect(server.addr()).await;
    let end = send(
        &mut smtp,
        "news@example.org",
        "10001@qq.com",
        "Subject: offer\r\n\r\nCheap pills here",
    )
    .await;
    assert_eq!(end, "550 Error: mail rejected by antispam server");
}

#[tokio::test]
async fn a_hosted_domains_unknown_mailbox_gets_exmails_text_on_any_listener() {
    for generation in GENERATIONS {
        let mut config = Config::from_toml("[mailboxes]\nhosted_domains = [\"corp.example\"]\n")
            .expect("config");
        config.generation = generation;
        let server = QqMx::builder().config(config).start();
        let mut smtp = Smtp::connect(server.addr()).await;
        smtp.send("EHLO client.example.org").await;
        smtp.send("MAIL FROM:<a@example.org>").await;
        let rcpt = smtp.send("RCPT TO:<nobody@corp.example>").await;
        assert_eq!(
            rcpt,
            "550 Mailbox not found. http://service.exmail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000728",
            "{generation}"
        );
    }
}

/// A server whose only listener is `mxbiz1`, exmail's front end.
async fn mxbiz1(
    generation: Generation,
) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let mut config = Config::default();
    config.generation = generation;
    config.seed = 2018;
    let server = Server::new(config, Clock::manual_at_unix(1_750_000_000)).expect("server");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        server
            .run_all(vec![("mxbiz1".to_owned(), listener)], async {
                let _ = stopped.await;
            })
            .await;
    });
    (addr, stop)
}

/// The 2018 exmail transcript of `qq-reference.md`, line for line, in every generation
/// (no newer exmail capture is known).
#[tokio::test]
async fn mxbiz1_answers_with_the_2018_bizmx17_transcript_in_every_generation() {
    for generation in GENERATIONS {
        let (addr, _stop) = mxbiz1(generation).await;
        let mut smtp = Smtp::connect(addr).await;
        let ehlo = smtp.send("EHLO client.example.org").await;
        let starttls = smtp.send("STARTTLS").await;
        let mut smtp = smtp.tls().await;
        let ehlo_tls = smtp.send("EHLO client.example.org").await;
        let mail = smtp.send("MAIL FROM:<sender@example.org> SIZE=3147").await;
        let rcpt = smtp.send("RCPT TO:<10001@qq.com>").await;
        let data = smtp.send("DATA").await;
        let queued = smtp.data("Subject: hello\r\n\r\nHi there.").await;
        smtp.send("QUIT").await;

        assert!(
            smtp.transcript
                .starts_with("S: 220 bizmx17.qq.com MX QQ Mail Server\n"),
            "{generation}: {}",
            smtp.transcript
        );
        assert_eq!(
            ehlo, "250-bizmx17.qq.com\r\n250-SIZE 73400320\r\n250-STARTTLS\r\n250 OK",
            "{generation}"
        );
        assert_eq!(starttls, "220 Ready to start TLS", "{generation}");
        assert_eq!(
            ehlo_tls, "250-bizmx17.qq.com\r\n250-SIZE 73400320\r\n250 OK",
            "{generation}"
        );
        assert_eq!(
            (mail.as_str(), rcpt.as_str()),
            ("250 Ok", "250 Ok"),
            "{generation}"
        );
        assert!(data.starts_with("354 "), "{generation}: {data}");
        assert_eq!(queued, "250 Ok: queued as ", "{generation}");
        insta::assert_snapshot!(format!("mxbiz1_starttls_{generation}"), smtp.transcript);
    }
}

#[tokio::test]
async fn mxbiz1_refuses_with_exmails_texts() {
    let (addr, _stop) = mxbiz1(Generation::G2025).await;
    let mut smtp = Smtp::connect(addr).await;
    smtp.send("EHLO client.example.org").await;
    let bad = smtp.send("MAIL FROM:<not an address>").await;
    smtp.send("MAIL FROM:<a@example.org>").await;
    let unknown = smtp.send("RCPT TO:<nobody@qq.com>").await;
    assert_eq!(
        bad,
        "501 Bad address syntax. http://service.exmail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000730"
    );
    assert_eq!(
        unknown,
        "550 Mailbox not found. http://service.exmail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1000728"
    );
}

/// `[stages]` moves the refusals whose stage at QQ is unknown.
#[tokio::test]
async fn stages_qq_was_not_seen_at_are_configurable() {
    let toml = |stages: &str| {
        Config::from_toml(&format!(
            "[limits]\nmax_message_size = 2048\n\
             [content.personal_blacklists]\n\"10001@qq.com\" = [\"example.org\"]\n\
             [stages]\n{stages}"
        ))
        .expect("config")
    };

    let server = QqMx::builder().config(toml("")).start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO client.example.org").await;
    let big = smtp.send("MAIL FROM:<a@example.org> SIZE=99999").await;
    assert!(big.starts_with("552 Message too large"), "{big}");
    smtp.send("MAIL FROM:<a@example.org>").await;
    let rcpt = smtp.send("RCPT TO:<10001@qq.com>").await;
    assert!(
        rcpt.starts_with("550 Mail is rejected by recipients"),
        "{rcpt}"
    );

    let server = QqMx::builder()
        .config(toml(
            "message_too_large = \"end_of_data\"\nrejected_by_recipients = \"end_of_data\"\n",
        ))
        .start();
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("EHLO client.example.org").await;
    let mail = smtp.send("MAIL FROM:<a@example.org> SIZE=99999").await;
    assert!(mail.starts_with("250"), "{mail}");
    let rcpt = smtp.send("RCPT TO:<10001@qq.com>").await;
    assert!(rcpt.starts_with("250"), "{rcpt}");
    smtp.send("DATA").await;
    let end = smtp.data("Subject: hi\r\n\r\nhello").await;
    assert!(
        end.starts_with("550 Mail is rejected by recipients"),
        "{end}"
    );
    assert!(server.messages().is_empty());

    let err = Config::from_toml("[stages]\nbounce_attack = \"mail\"\n").expect_err("not allowed");
    assert!(
        err.to_string()
            .contains("key `stages.bounce_attack`: expected `rcpt` or `end_of_data`"),
        "{err}"
    );
}
