//! Content rules: phrases and bulk detection.

use super::*;

#[test]
fn content_rules() {
    let mut p = policy(
        "[content]\nbulk_recipients = 2\nbulk_window = \"1h\"\n\
         phrases = [{ phrase = \"cheap pills\" }, { phrase = \"lottery\", reply = \"spam_embedded\" }]\n\
         [content.personal_blacklists]\n\"10009@qq.com\" = [\"x.org\"]\n",
    );
    let eod = |p: &mut Policy, rcpts: &[String], body: &str, secs| {
        let facts = Facts::new(ip(2))
            .from("a@x.org")
            .rcpts(rcpts)
            .message(body.as_bytes());
        p.end_of_data(&facts, at(secs))
    };
    let one = |r: &str| vec![r.to_owned()];
    let news = "Subject: news\r\n\r\nThe same news for everyone.";
    assert!(eod(&mut p, &one("10001@qq.com"), news, 0).is_accept());
    assert!(eod(&mut p, &one("10002@qq.com"), news, 1).is_accept());
    assert!(
        eod(&mut p, &one("10001@qq.com"), news, 2).is_accept(),
        "not a new recipient"
    );
    let bulk = eod(&mut p, &one("10003@qq.com"), news, 3);
    assert_eq!(
        (reply(&bulk), bulk.counter, bulk.limit),
        (Some(ContentDenied), Some(3), Some(2))
    );
    assert!(
        eod(&mut p, &one("10003@qq.com"), news, 3600).is_accept(),
        "a new window"
    );
    let pills = eod(
        &mut p,
        &one("10001@qq.com"),
        "Subject: CHEAP PILLS\r\n\r\nx",
        3601,
    );
    assert_eq!(reply(&pills), Some(SuspectedSpam));
    let lottery = eod(
        &mut p,
        &one("10001@qq.com"),
        "Subject: y\r\n\r\nYou won the Lottery",
        3602,
    );
    assert_eq!(reply(&lottery), Some(SpamEmbedded));
    assert_eq!(
        p.reputation(ip(2), at(3603)),
        70,
        "three content complaints"
    );
    let personal = p.check(
        Stage::Rcpt,
        &Facts::new(ip(2)).from("a@X.org").rcpt("10009@qq.com"),
        t0(),
    );
    assert_eq!(reply(&personal), Some(RejectedByRecipients));
}

#[test]
fn refused_keys_leave_no_state_behind() {
    let mut p = policy(
        "[quotas.sender]\nenabled = true\n[quotas.domain]\nenabled = true\n\
         [quotas.recipient]\nenabled = true\n[quotas.ip_messages]\nenabled = true\n\
         [content]\nbulk_recipients = 1\nphrases = [{ phrase = \"cheap pills\" }]\n\
         [blacklist]\nrandom_domain_probability = 0.001\n\
         [reputation]\ncontent_complaints = false\nwarmup = false\n",
    );
    let before = p.tracked_keys();
    for i in 0..1000 {
        let from = format!("s{i}@d{i}.org");
        let rcpts = [
            format!("{}@qq.com", 10_000 + i),
            format!("{}@qq.com", 20_000 + i),
        ];
        let mail = Facts::new(ip(2)).from(&from);
        // Looked at at MAIL and RCPT, then refused by content at the end of data.
        assert!(p.check(Stage::Mail, &mail, t0()).is_accept());
        for r in &rcpts {
            p.check(Stage::Rcpt, &mail.rcpt(r), t0());
        }
        let spam = mail
            .rcpts(&rcpts[..1])
            .message(b"Subject: cheap pills\r\n\r\nx");
        assert!(!p.end_of_data(&spam, t0()).is_accept());
        // A new body to two recipients, over the bulk limit of one.
        let body = format!("Subject: hi\r\n\r\nbody {i}");
        let bulk = mail.rcpts(&rcpts).message(body.as_bytes());
        assert_eq!(p.end_of_data(&bulk, t0()).rule, "content.bulk");
    }
    let grown = p.tracked_keys() - before;
    assert!(
        grown <= 5,
        "{grown} keys remembered for 1000 refused senders"
    );
}
