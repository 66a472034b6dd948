//! The protocol's own rules: recipients, MAIL FROM, and which stage disconnects.

use super::*;

#[test]
fn recipients_table() {
    let default = policy("");
    let hosted = policy(
        "[mailboxes]\nhosted_domains = [\"Example.COM\"]\nlisted = [\"alice@example.com\"]\n",
    );
    let all = policy("[mailboxes]\nexisting = \"all\"\n");
    let listed = policy("[mailboxes]\nexisting = \"listed\"\nlisted = [\"12345@qq.com\"]\n");
    let rows: &[(&Policy, &str, Option<ReplyKind>)] = &[
        (&default, "10001@qq.com", None),
        (&default, "12345678901@qq.com", None),
        (&default, "123456789012@qq.com", Some(MailboxNotFound)),
        (&default, "1234@qq.com", Some(MailboxNotFound)),
        (&default, "01234@qq.com", Some(MailboxNotFound)),
        (&default, "alice@qq.com", Some(MailboxNotFound)),
        (&default, "10001@FoxMail.com", None),
        (&default, "10001@vip.qq.com", None),
        (&default, "10001@example.com", Some(RelayDenied)),
        (&default, "not an address", Some(BadAddressSyntax)),
        (&default, "a@@qq.com", Some(BadAddressSyntax)),
        (&default, "@qq.com", Some(BadAddressSyntax)),
        (&default, "a@-qq.com", Some(BadAddressSyntax)),
        (&default, "用户@qq.com", Some(BadAddressSyntax)),
        (&hosted, "ALICE@example.com", None),
        (&hosted, "bob@example.com", Some(ExmailMailboxNotFound)),
        (&all, "anyone@foxmail.com", None),
        (&all, "anyone@gmail.com", Some(RelayDenied)),
        (&listed, "12345@qq.com", None),
        (&listed, "12346@qq.com", Some(MailboxNotFound)),
    ];
    for (p, to, expected) in rows {
        let d = p.rcpt_basics(&Facts::new(ip(1)).from("a@example.org").rcpt(to));
        assert_eq!(
            d.as_ref().and_then(Decision::reply),
            *expected,
            "RCPT TO:<{to}>"
        );
    }
}

#[test]
fn mail_from_table() {
    let mut p = policy("[limits]\nmax_message_size = 1000\n");
    let mut mail = |from, size| {
        p.check(
            Stage::Mail,
            &Facts::new(ip(1)).from(from).mail_params(size, false),
            t0(),
        )
    };
    assert!(mail("", 0).is_accept(), "null sender");
    assert!(
        mail("a@example.org", 1000).is_accept(),
        "exactly at the limit"
    );
    let over = mail("a@example.org", 1001);
    assert_eq!(reply(&over), Some(MessageTooLarge));
    assert_eq!(over.detail, "SIZE=1001 is over the limit of 1000");
    assert_eq!(reply(&mail("a.example.org", 0)), Some(BadAddressSyntax));
    let mut p = policy("[limits]\nmax_recipients = 2\n");
    let rcpts = ["10001@qq.com".to_owned(), "10002@qq.com".to_owned()];
    let third = p.check(
        Stage::Rcpt,
        &Facts::new(ip(1))
            .from("a@b.c")
            .rcpts(&rcpts)
            .rcpt("10003@qq.com"),
        t0(),
    );
    assert_eq!(reply(&third), Some(TooManyRecipients));
}

#[test]
fn only_connect_disconnects() {
    // The session closes on `Disconnect` only at connect; a rule that disconnects later
    // would need the session to close after its reply too.
    let mut p = policy(
        "[quotas.ip_connections]\nenabled = true\nstage = \"helo\"\nminute = { limit = 1 }\n\
         [quotas.ip_concurrent]\nenabled = true\nlimit = 1\nstage = \"mail\"\n\
         [quotas.ip_messages]\nenabled = true\nstage = \"helo\"\nminute = { limit = 1 }\n\
         [quotas]\ndeny_after = 1\n\
         [blacklist]\nips = [\"127.0.0.9\"]\nip_stage = \"helo\"\nip_reply = \"connection_denied\"\n",
    );
    let mut later = Vec::new();
    for (i, last) in [2, 2, 2, 2, 9].into_iter().enumerate() {
        let now = at(i as u64);
        let connect = p.connect(ip(last), now);
        later.extend(connect.deferred.clone());
        let extra = p.connect(ip(last), now);
        later.extend(extra.deferred);
        for stage in [Stage::Helo, Stage::Mail, Stage::Rcpt, Stage::Data] {
            let facts = Facts::new(ip(last)).from("a@x.org").rcpt("10001@qq.com");
            later.push(p.check(stage, &facts, now));
        }
        let rcpts = ["10001@qq.com".to_owned()];
        let facts = Facts::new(ip(last))
            .from("a@x.org")
            .rcpts(&rcpts)
            .message(b"x");
        later.push(p.end_of_data(&facts, now));
        p.disconnect(ip(last));
        p.disconnect(ip(last));
    }
    assert!(
        later.iter().any(|d| !d.is_accept()),
        "some refusals happened"
    );
    for d in later {
        assert!(!matches!(d.verdict, Verdict::Disconnect(_)), "{d}");
    }
}
