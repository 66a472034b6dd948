//! The auth rules: what the `auth` layer's checks ([`AuthReport`](super::AuthReport), [`SpfCheck`]) make of
//! a message: `SPF check failed` at MAIL for QQ's own domains and after DATA for the
//! others, `DMARC check failed` or the junk folder at the end of data.

use super::hash::{finish, mix};
use super::{AuthResult, Decision, DmarcPolicy, Facts, SpfCheck};
use crate::config::{AuthConfig, SpfStage};
use crate::reply::ReplyKind;
use crate::units::Stage;

/// What DMARC and the exmail rule make of a message at the end of data.
#[derive(Debug)]
pub(super) enum Disposition {
    /// Deliver to the inbox.
    Inbox,
    /// Deliver to the junk folder, for this reason.
    Junk(String),
    /// Refuse.
    Reject(Decision),
}

/// The auth rules: SPF at MAIL, PTR, DMARC and the exmail local-domain rule.
#[derive(Debug)]
pub(super) struct AuthRules {
    config: AuthConfig,
    seed: u64,
    /// DMARC failures under a `pct` below 100 seen so far: the draw for each is a hash of
    /// the seed and this count.
    draws: u64,
}

impl AuthRules {
    pub(super) fn new(config: &AuthConfig, seed: u64) -> Self {
        Self {
            config: config.clone(),
            seed,
            draws: 0,
        }
    }

    /// SPF for the envelope sender, and the client's PTR record when one is required.
    pub(super) fn at_mail(&self, facts: &Facts<'_>) -> Option<Decision> {
        const STAGE: Stage = Stage::Mail;
        if facts.ptr_matches == Some(false) {
            return Some(Decision::reject(
                STAGE,
                ReplyKind::NoPtr,
                "auth.ptr",
                format!("{} has no PTR record that resolves back to it", facts.ip),
            ));
        }
        let spf = facts.spf?;
        if spf.result != AuthResult::Fail {
            return None;
        }
        let kind = if self.config.rejects_spf_at_mail(&spf.domain) {
            ReplyKind::SpfFailed
        } else if self.config.spf_reject_others == SpfStage::Mail {
            ReplyKind::SpfFailedOther
        } else {
            return None;
        };
        Some(
            Decision::reject(STAGE, kind, "auth.spf", spf.reason.clone())
                .keyed(format!("domain:{}", spf.domain)),
        )
    }

    /// QQ's refusal after DATA of a sender outside its own domains whose SPF fails.
    fn spf_at_end_of_data(&self, spf: &SpfCheck) -> Option<Decision> {
        (spf.result == AuthResult::Fail
            && self.config.spf_reject_others == SpfStage::EndOfData
            && !self.config.rejects_spf_at_mail(&spf.domain))
        .then(|| {
            Decision::reject(
                Stage::EndOfData,
                ReplyKind::SpfFailedOther,
                "auth.spf",
                spf.reason.clone(),
            )
            .keyed(format!("domain:{}", spf.domain))
        })
    }

    /// DMARC's verdict on a message, and exmail's refusal of unsigned mail claiming a
    /// hosted domain. `hosted` tells whether a domain is a hosted customer domain.
    pub(super) fn at_end_of_data(
        &mut self,
        facts: &Facts<'_>,
        hosted: impl Fn(&str) -> bool,
    ) -> Disposition {
        const STAGE: Stage = Stage::EndOfData;
        let Some(report) = facts.auth else {
            return Disposition::Inbox;
        };
        if let Some(d) = self.spf_at_end_of_data(&report.spf) {
            return Disposition::Reject(d);
        }
        let dmarc = &report.dmarc;
        if self.config.mime_from_local
            && !dmarc.domain.is_empty()
            && hosted(&dmarc.domain)
            && !report.dkim_passed_for(&dmarc.domain)
        {
            return Disposition::Reject(
                Decision::reject(
                    STAGE,
                    ReplyKind::MimeFromLocal,
                    "auth.mime_from_local",
                    format!(
                        "From names hosted domain {} without a valid DKIM signature of it",
                        dmarc.domain
                    ),
                )
                .keyed(format!("domain:{}", dmarc.domain)),
            );
        }
        if dmarc.result != AuthResult::Fail {
            return Disposition::Inbox;
        }
        let policy = match dmarc.policy {
            Some(policy) if self.sampled(dmarc.pct) => policy,
            // Outside pct, RFC 7489 6.6.4 applies the next policy down.
            Some(DmarcPolicy::Reject) => DmarcPolicy::Quarantine,
            _ => DmarcPolicy::None,
        };
        let detail = format!(
            "DMARC fail for {} (p={policy}, pct={}): {}",
            dmarc.domain, dmarc.pct, dmarc.reason
        );
        match policy {
            DmarcPolicy::Reject => Disposition::Reject(
                Decision::reject(STAGE, ReplyKind::DmarcFailed, "auth.dmarc", detail)
                    .keyed(format!("domain:{}", dmarc.domain)),
            ),
            DmarcPolicy::Quarantine => Disposition::Junk(detail),
            DmarcPolicy::None => Disposition::Inbox,
        }
    }

    /// Whether a failing message falls within `pct` percent: a seeded draw.
    fn sampled(&mut self, pct: u8) -> bool {
        if pct >= 100 {
            return true;
        }
        self.draws += 1;
        let draw = finish(mix(mix(self.seed, 0xD3A2C), self.draws));
        draw % 100 < u64::from(pct)
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;
    use crate::config::Config;
    use crate::policy::{AuthReport, DkimCheck, DmarcCheck, Policy, Verdict};

    const IP: &str = "127.0.0.2";

    fn policy(edit: impl FnOnce(&mut Config)) -> Policy {
        let mut config = Config::default().no_limits();
        edit(&mut config);
        Policy::new(&config).expect("valid config")
    }

    fn ip() -> IpAddr {
        IP.parse().expect("ip")
    }

    fn now() -> std::time::SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_750_000_000)
    }

    fn report(result: AuthResult, policy: Option<DmarcPolicy>, pct: u8) -> AuthReport {
        AuthReport {
            spf: SpfCheck::new(AuthResult::None, "example.com", "no record"),
            dkim: Vec::new(),
            dmarc: DmarcCheck {
                result,
                domain: "example.com".into(),
                policy,
                pct,
                spf_aligned: false,
                dkim_aligned: false,
                reason: "neither aligned".into(),
            },
        }
    }

    fn at_mail(p: &mut Policy, from: &str, spf: &SpfCheck) -> Decision {
        let facts = Facts::new(ip()).from(from).spf(spf);
        p.check(Stage::Mail, &facts, now())
    }

    fn at_end(p: &mut Policy, report: &AuthReport) -> Decision {
        let rcpts = ["10001@qq.com".to_owned()];
        let facts = Facts::new(ip())
            .from("a@example.com")
            .rcpts(&rcpts)
            .message(b"From: a@example.com\r\n\r\nhi\r\n")
            .auth(report);
        p.end_of_data(&facts, now())
    }

    #[test]
    fn a_forged_qq_sender_is_refused_at_mail_and_others_go_on() {
        let mut p = policy(|_| {});
        let forged = SpfCheck::new(AuthResult::Fail, "qq.com", "127.0.0.2 is not permitted");
        let d = at_mail(&mut p, "admin@qq.com", &forged);
        assert_eq!(d.verdict, Verdict::Reject(ReplyKind::SpfFailed));
        assert_eq!(d.rule, "auth.spf");
        let soft = SpfCheck::new(AuthResult::SoftFail, "qq.com", "~all");
        assert!(at_mail(&mut p, "admin@qq.com", &soft).is_accept());
        let other = SpfCheck::new(AuthResult::Fail, "example.com", "-all");
        assert!(at_mail(&mut p, "a@example.com", &other).is_accept());
        let mut everyone = policy(|c| c.auth.spf_reject_at_mail = vec!["*".into()]);
        assert!(!at_mail(&mut everyone, "a@example.com", &other).is_accept());
    }

    #[test]
    fn an_spf_fail_outside_qqs_domains_is_refused_after_data_where_configured() {
        let failing = |mut r: AuthReport| {
            r.spf = SpfCheck::new(
                AuthResult::Fail,
                "example.com",
                "127.0.0.2 is not permitted",
            );
            r
        };
        let r = failing(report(AuthResult::None, None, 100));
        let fail = SpfCheck::new(AuthResult::Fail, "example.com", "-all");
        let mut p = policy(|_| {});
        assert!(at_mail(&mut p, "a@example.com", &fail).is_accept());
        let d = at_end(&mut p, &r);
        assert_eq!(d.verdict, Verdict::Reject(ReplyKind::SpfFailedOther));
        assert_eq!((d.stage, &*d.rule), (Stage::EndOfData, "auth.spf"));
        let mut soft = r.clone();
        soft.spf.result = AuthResult::SoftFail;
        assert!(at_end(&mut p, &soft).is_accept());
        let mut off = policy(|c| c.auth.spf_reject_others = SpfStage::Off);
        assert!(at_end(&mut off, &r).is_accept());
        let mut at_mail_stage = policy(|c| c.auth.spf_reject_others = SpfStage::Mail);
        let d = at_mail(&mut at_mail_stage, "a@example.com", &fail);
        assert_eq!(d.verdict, Verdict::Reject(ReplyKind::SpfFailedOther));
        assert!(at_end(&mut at_mail_stage, &r).is_accept());
    }

    #[test]
    fn dmarc_policies_map_to_reject_junk_and_inbox() {
        let mut p = policy(|_| {});
        let reject = at_end(
            &mut p,
            &report(AuthResult::Fail, Some(DmarcPolicy::Reject), 100),
        );
        assert_eq!(reject.verdict, Verdict::Reject(ReplyKind::DmarcFailed));
        assert_eq!(reject.key.as_deref(), Some("domain:example.com"));
        let junk = at_end(
            &mut p,
            &report(AuthResult::Fail, Some(DmarcPolicy::Quarantine), 100),
        );
        assert_eq!(junk.verdict, Verdict::Junk);
        assert!(junk.is_accept());
        let none = at_end(
            &mut p,
            &report(AuthResult::Fail, Some(DmarcPolicy::None), 100),
        );
        assert_eq!(none.verdict, Verdict::Accept);
        let pass = at_end(
            &mut p,
            &report(AuthResult::Pass, Some(DmarcPolicy::Reject), 100),
        );
        assert_eq!(pass.verdict, Verdict::Accept);
        let no_record = at_end(&mut p, &report(AuthResult::None, None, 100));
        assert_eq!(no_record.verdict, Verdict::Accept);
    }

    #[test]
    fn pct_samples_failures_with_the_seed_and_quarantines_the_rest() {
        let count = |seed: u64| {
            let mut p = policy(|c| c.seed = seed);
            let r = report(AuthResult::Fail, Some(DmarcPolicy::Reject), 30);
            (0..400)
                .map(|_| at_end(&mut p, &r).verdict)
                .fold((0, 0), |(rej, junk), v| match v {
                    Verdict::Reject(_) => (rej + 1, junk),
                    Verdict::Junk => (rej, junk + 1),
                    other => panic!("seed {seed}: unexpected {other:?}"),
                })
        };
        let (rejected, junked) = count(7);
        assert_eq!(rejected + junked, 400);
        assert!(
            (80..=160).contains(&rejected),
            "seed 7: {rejected} of 400 rejected at pct=30"
        );
        assert_eq!(count(7), (rejected, junked), "seed 7 replays");
        let mut zero = policy(|_| {});
        let r = report(AuthResult::Fail, Some(DmarcPolicy::Reject), 0);
        assert_eq!(at_end(&mut zero, &r).verdict, Verdict::Junk);
    }

    #[test]
    fn unsigned_mail_claiming_a_hosted_domain_is_refused_when_asked() {
        let hosted = |on: bool| {
            policy(|c| {
                c.mailboxes.hosted_domains = vec!["example.com".into()];
                c.auth.mime_from_local = on;
            })
        };
        let r = report(AuthResult::None, None, 100);
        let d = at_end(&mut hosted(true), &r);
        assert_eq!(d.verdict, Verdict::Reject(ReplyKind::MimeFromLocal));
        assert!(at_end(&mut hosted(false), &r).is_accept());
        let mut signed = r.clone();
        signed.dkim.push(DkimCheck {
            result: AuthResult::Pass,
            domain: "example.com".into(),
            selector: "s".into(),
            algorithm: "ed25519-sha256".into(),
            reason: String::new(),
        });
        assert!(at_end(&mut hosted(true), &signed).is_accept());
    }

    #[test]
    fn a_client_without_a_matching_ptr_is_refused_at_mail() {
        let mut p = policy(|_| {});
        let facts = Facts::new(ip()).from("a@example.com").ptr_matches(false);
        let d = p.check(Stage::Mail, &facts, now());
        assert_eq!(d.rule, "auth.ptr");
        assert!(!d.is_accept());
    }
}
