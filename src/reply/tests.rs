//! The catalogue's tests.

use super::catalogue::validate;
use super::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

fn ctx() -> Context {
    Context {
        ip: "60.233.9.39".parse().expect("ip"),
        n: 1,
        starttls: true,
    }
}

#[test]
fn every_built_in_template_is_valid_in_every_generation() {
    for &kind in ReplyKind::ALL {
        for generation in [Generation::G2017, Generation::G2019, Generation::G2025] {
            assert_eq!(validate(kind, template(kind, generation)), Ok(()), "{kind}");
        }
    }
}

const GENERATIONS: [Generation; 3] = [Generation::G2017, Generation::G2019, Generation::G2025];

#[test]
fn suspected_spam_sender_is_qqs_text_alone() {
    for generation in GENERATIONS {
        assert_eq!(
            template(ReplyKind::SuspectedSpamSender, generation),
            "550 Suspected spam sender.",
            "{generation}"
        );
    }
}

#[test]
fn old_mailbox_unavailable_has_the_detail_url_qq_gives() {
    for generation in [Generation::G2017, Generation::G2019] {
        assert_eq!(
            template(ReplyKind::MailboxUnavailable, generation),
            "550 Mailbox unavailable or access denied. http://service.mail.qq.com/detail/122/166",
            "{generation}"
        );
    }
}

#[test]
fn tokens_have_qq_shape() {
    let mut rng = StdRng::seed_from_u64(7);
    let long = token(&mut rng, 49);
    assert_eq!(long.len(), 68);
    assert!(long.starts_with('M') && long.ends_with("=="));
    let short = token(&mut rng, 40);
    assert_eq!(short.len(), 56);
    assert!(short.starts_with('M'));
    // The token seen in QQ's 2025 SPF rejection has the same shape.
    let seen = "MPdC3ariWK7GZndWaXfsa4eLTsQMO+LiHnoPqVrDu0UG6GBeQl5+eZOslGc9ekY1xQ==";
    assert_eq!(seen.len(), long.len());
}

#[test]
fn renders_the_2025_spf_rejection_like_qq() {
    let cat = Catalogue::new(Generation::G2025, "newxmmxszc23-0.qq.com", 73_400_320);
    let mut rng = StdRng::seed_from_u64(1);
    let reply = cat.render(ReplyKind::SpfFailed, &ctx(), &mut rng);
    assert_eq!(reply.code, 550);
    let prefix = "550 SPF check failed. http://service.mail.qq.com/cgi-bin/help?subtype=1&&id=20022&&no=1001445 [";
    assert!(reply.text.starts_with(prefix), "{}", reply.text);
    assert!(reply.text.ends_with(" IP: 60.233.9.39]"), "{}", reply.text);
    assert_eq!(
        reply.text.len(),
        prefix.len() + 68 + " IP: 60.233.9.39]".len()
    );
}

#[test]
fn ehlo_drops_starttls_when_not_offered() {
    let cat = Catalogue::new(Generation::G2019, "newxmmxsza22.qq.com", 73_400_320);
    let mut rng = StdRng::seed_from_u64(1);
    let no_tls = Context {
        starttls: false,
        ..ctx()
    };
    let reply = cat.render(ReplyKind::Ehlo, &no_tls, &mut rng);
    assert_eq!(
        reply.text,
        "250-newxmmxsza22.qq.com\r\n250-SIZE 73400320\r\n250 OK"
    );
}

#[test]
fn help_drops_starttls_when_not_offered() {
    let cat = Catalogue::new(Generation::G2025, "h", 1);
    let mut rng = StdRng::seed_from_u64(1);
    let no_tls = Context {
        starttls: false,
        ..ctx()
    };
    let offered = cat.render(ReplyKind::Help, &ctx(), &mut rng);
    let hidden = cat.render(ReplyKind::Help, &no_tls, &mut rng);
    assert_eq!(
        offered.text,
        "214 HELO EHLO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT STARTTLS"
    );
    assert_eq!(
        hidden.text,
        "214 HELO EHLO MAIL RCPT DATA RSET NOOP VRFY HELP QUIT"
    );
}

#[test]
fn an_unterminated_placeholder_is_refused() {
    let mut cat = Catalogue::new(Generation::G2025, "h", 1);
    let err = cat
        .set_override(ReplyKind::IpFrequency, "550 Ip frequency limited {ip")
        .expect_err("no closing brace");
    assert!(
        err.problem.contains("unterminated placeholder `{ip`"),
        "{err}"
    );
    assert!(
        cat.set_override(ReplyKind::Bye, "221 {host} {").is_err(),
        "a lone brace at the end"
    );
}

#[test]
fn overrides_are_validated() {
    let mut cat = Catalogue::new(Generation::G2025, "h", 1);
    assert!(cat.set_override(ReplyKind::Bye, "221 See you").is_ok());
    let err = cat
        .set_override(ReplyKind::Bye, "bye")
        .expect_err("no code");
    assert!(err.to_string().starts_with("reply `bye`: line 1"));
    let err = cat
        .set_override(ReplyKind::Bye, "221 {nope}")
        .expect_err("bad placeholder");
    assert!(err.problem.contains("unknown placeholder `{nope}`"));
    for control in ['\0', '\u{1b}', '\u{7f}', '\u{85}'] {
        let err = cat
            .set_override(ReplyKind::Greeting, &format!("220 {{host}} a{control}b"))
            .expect_err("a control character");
        assert!(err.problem.contains("control character"), "{err}");
    }
    assert!(cat.set_override(ReplyKind::Bye, "221 See\tyou").is_ok());
    assert!(cat.set_override(ReplyKind::Bye, "221 See you").is_ok());
    let mut rng = StdRng::seed_from_u64(1);
    assert_eq!(
        cat.render(ReplyKind::Bye, &ctx(), &mut rng).text,
        "221 See you"
    );
}
