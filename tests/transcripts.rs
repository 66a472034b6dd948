//! Whole transcripts, per QQ generation, pinned with insta snapshots; and the transcripts
//! of `qq-reference.md` compared line for line.

mod common;

use common::{Smtp, deliver};
use qqmx::reply::{Catalogue, Context};
use qqmx::{Config, Generation, QqMx, ReplyKind};
use rand::SeedableRng;
use rand::rngs::StdRng;

const GENERATIONS: [Generation; 3] = [Generation::G2017, Generation::G2019, Generation::G2025];

fn server(generation: Generation) -> QqMx {
    QqMx::builder().generation(generation).seed(2025).start()
}

#[tokio::test]
async fn the_2019_delivery_matches_qq_byte_for_byte() {
    let server = server(Generation::G2019);

    let mut smtp = Smtp::connect(server.addr()).await;
    let ehlo = smtp.send("EHLO kali.lan").await;
    let mail = smtp.send("MAIL FROM:<root@kali.lan>").await;
    let rcpt = smtp.send("RCPT TO:<1871973389@qq.com>").await;
    let data = smtp.send("DATA").await;
    let queued = smtp.data("Subject: hi\r\n\r\nhello").await;
    let bye = smtp.send("QUIT").await;

    assert!(
        smtp.transcript
            .starts_with("S: 220 newxmmxsza22.qq.com MX QQ Mail Server.\n")
    );
    assert_eq!(
        ehlo,
        "250-newxmmxsza22.qq.com\r\n250-STARTTLS\r\n250-SIZE 73400320\r\n250 OK"
    );
    assert_eq!(mail, "250 OK.");
    assert_eq!(rcpt, "250 OK 1");
    assert_eq!(data, "354 End data with <CR><LF>.<CR><LF>.");
    assert_eq!(queued, "250 Ok: queued as ", "with its trailing space");
    assert_eq!(bye, "221 Bye.");
}

#[tokio::test]
async fn the_2025_greeting_and_ehlo_match_qq() {
    let server = server(Generation::G2025);

    let mut smtp = Smtp::connect(server.addr()).await;
    let ehlo = smtp.send("EHLO qq.com").await;

    assert_eq!(
        smtp.transcript,
        "S: 220 newxmmxszc23-0.qq.com MX QQ Mail Server.\n\
         C: EHLO qq.com\n\
         S: 250-newxmmxszc23-0.qq.com\n\
         S: 250-STARTTLS\n\
         S: 250-8BITMIME\n\
         S: 250-SMTPUTF8\n\
         S: 250-SIZE 73400320\n\
         S: 250 OK\n"
    );
    assert!(ehlo.ends_with("250 OK"));
}

#[tokio::test]
async fn the_2017_lines_have_no_final_dots() {
    let server = server(Generation::G2017);

    let mut smtp = Smtp::connect(server.addr()).await;
    let helo = smtp.send("HELO chacuo.net").await;
    let ehlo = smtp.send("EHLO chacuo.net").await;
    smtp.send("MAIL FROM:<a@chacuo.net>").await;
    let data_before_rcpt = smtp.send("RCPT TO:<10001@qq.com>").await;
    let data = smtp.send("DATA").await;

    assert!(
        smtp.transcript
            .starts_with("S: 220 newmx17.qq.com MX QQ Mail Server\n")
    );
    assert_eq!(helo, "250 newmx17.qq.com");
    assert_eq!(
        ehlo,
        "250-newmx17.qq.com\r\n250-SIZE 73400320\r\n250-STARTTLS\r\n250 OK"
    );
    assert_eq!(data_before_rcpt, "250 Ok");
    assert_eq!(data, "354 End data with <CR><LF>.<CR><LF>");
}

#[tokio::test]
async fn successful_delivery_snapshots() {
    for generation in GENERATIONS {
        let server = server(generation);
        let transcript = deliver(
            server.addr(),
            "sender@example.org",
            "10001@qq.com",
            "Subject: hello\r\n\r\nHi there.",
        )
        .await;
        insta::assert_snapshot!(format!("delivery_{generation}"), transcript);
    }
}

#[tokio::test]
async fn starttls_delivery_snapshots() {
    for generation in GENERATIONS {
        let server = server(generation);
        let mut smtp = Smtp::connect(server.addr()).await;
        smtp.send("EHLO client.example.org").await;
        smtp.send("STARTTLS").await;
        let mut smtp = smtp.tls().await;
        smtp.send("EHLO client.example.org").await;
        smtp.send("MAIL FROM:<sender@example.org> SIZE=3147").await;
        smtp.send("RCPT TO:<10001@qq.com>").await;
        smtp.send("DATA").await;
        smtp.data("Subject: hello\r\n\r\nHi there.").await;
        smtp.send("QUIT").await;
        insta::assert_snapshot!(format!("starttls_{generation}"), smtp.transcript);
    }
}

/// One session that draws every rejection this server can give today.
async fn rejections(server: &QqMx) -> String {
    let mut smtp = Smtp::connect(server.addr()).await;
    smtp.send("MAIL FROM:<early@example.org>").await;
    smtp.send("EHLO client.example.org").await;
    smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("DATA").await;
    smtp.send("MAIL FROM:<not-an-address>").await;
    smtp.send("MAIL FROM:<big@example.org> SIZE=99999999").await;
    smtp.send("MAIL FROM:<sender@example.org> FROB=1").await;
    smtp.send("MAIL FROM:<sender@example.org>").await;
    smtp.send("DATA").await;
    smtp.send("RCPT TO:<nobody@qq.com>").await;
    smtp.send("RCPT TO:<10001@example.com>").await;
    smtp.send("RCPT TO:<bad@@qq.com>").await;
    smtp.send("RCPT TO:<10001@qq.com>").await;
    smtp.send("RCPT TO:<10002@qq.com>").await;
    smtp.send("RCPT TO:<10003@qq.com>").await;
    smtp.send("DATA").await;
    let body = format!("Subject: big\r\n\r\n{}", "x".repeat(3000));
    smtp.data(&body).await;
    smtp.send("STARTTLS").await;
    smtp.send("EXPN staff").await;
    smtp.send(&format!("NOOP {}", "z".repeat(300))).await;
    smtp.send("QUIT").await;
    smtp.transcript
}

#[tokio::test]
async fn rejection_snapshots() {
    let config = |generation| {
        let mut config = Config::from_toml(
            "seed = 2025\n[limits]\nmax_recipients = 2\nmax_message_size = 2048\nmax_line_length = 256\n[tls]\nenabled = false\n",
        )
        .expect("config");
        config.generation = generation;
        config
    };
    for generation in GENERATIONS {
        let server = QqMx::builder().config(config(generation)).start();
        let transcript = rejections(&server).await;
        insta::assert_snapshot!(format!("rejections_{generation}"), transcript);
    }
}

/// Every reply kind of `generation`, rendered with a fixed host, client address and seed:
/// one line per reply line, quoted so that a trailing space shows.
fn catalogue_of(generation: Generation) -> String {
    let catalogue = Catalogue::new(generation, generation.default_host(), 73_400_320);
    let ctx = Context {
        ip: "60.233.9.39".parse().expect("ip"),
        n: 1,
        starttls: true,
    };
    let mut out = String::new();
    for &kind in ReplyKind::ALL {
        // A fresh generator per kind: adding a kind does not change the others' tokens.
        let mut rng = StdRng::seed_from_u64(2025);
        let reply = catalogue.render(kind, &ctx, &mut rng);
        for line in reply.text.split("\r\n") {
            out.push_str(&format!("{:<22} {line:?}\n", kind.name()));
        }
    }
    out
}

#[test]
fn every_reply_text_is_pinned_per_generation() {
    for generation in GENERATIONS {
        insta::assert_snapshot!(format!("replies_{generation}"), catalogue_of(generation));
    }
}
