//! Asking and answering: the checks a command waits for, the policy's decision at each
//! stage (or the refusal deferred to it from connect), and the reply that renders it
//! through the listener's catalogue.

use std::net::IpAddr;
use std::time::SystemTime;

use tracing::debug;

use super::body::Body;
use super::{Engine, Pending, Session, Transaction};
use crate::event::EventKind;
use crate::policy::{AuthReport, Connect, Decision, Facts, Fetch, Fetched, SpfCheck, Verdict};
use crate::reply::{Context, ReplyKind};
use crate::store::EventRef;
use crate::units::Stage;

/// A stage decided after its round trip to a shared store: the time it was planned for,
/// which it is decided at, and what the round trip brought (`None` when the stage asks
/// the store nothing).
pub(super) struct Staged {
    now: SystemTime,
    fetched: Option<Fetched>,
}

/// A stage's round trip, planned under the policy's lock at the clock's time, not yet
/// sent.
struct Planned {
    now: SystemTime,
    fetch: Option<Fetch>,
}

impl Planned {
    /// Plans the round trip `stage` needs to be decided on `facts`, now.
    fn new(engine: &Engine, stage: Stage, facts: &Facts<'_>) -> Self {
        let now = engine.clock.now();
        let fetch = engine.policy().prepare(stage, facts, now);
        Self { now, fetch }
    }

    /// No round trip: the state is not shared, or the stage has nothing to be decided on
    /// (its transaction is gone).
    fn nothing(engine: &Engine) -> Self {
        Self {
            now: engine.clock.now(),
            fetch: None,
        }
    }

    /// Sends the round trip, without the policy's lock, and waits for it.
    async fn send(self) -> Staged {
        let fetched = match self.fetch {
            Some(fetch) => Some(fetch.send().await),
            None => None,
        };
        Staged {
            now: self.now,
            fetched,
        }
    }
}

/// The policy's decision at connect, after the stage's round trip when the state is
/// shared.
pub(super) async fn connect(engine: &Engine, ip: IpAddr) -> Connect {
    let planned = if engine.shared {
        Planned::new(engine, Stage::Connect, &Facts::new(ip))
    } else {
        Planned::nothing(engine)
    };
    let Staged { now, fetched } = planned.send().await;
    engine.policy().connect_fetched(ip, now, fetched)
}

/// What MAIL is decided on.
pub(super) fn mail_facts<'a>(
    ip: IpAddr,
    from: &'a str,
    size: u64,
    smtputf8: bool,
    spf: Option<&'a SpfCheck>,
    ptr_matches: Option<bool>,
) -> Facts<'a> {
    let mut facts = Facts::new(ip).from(from).mail_params(size, smtputf8);
    if let Some(spf) = spf {
        facts = facts.spf(spf);
    }
    if let Some(matches) = ptr_matches {
        facts = facts.ptr_matches(matches);
    }
    facts
}

/// What the end of data is decided on.
pub(super) fn message_facts<'a>(
    ip: IpAddr,
    tx: &'a Transaction,
    body: &'a Body,
    report: Option<&'a AuthReport>,
) -> Facts<'a> {
    let facts = Facts::new(ip)
        .from(&tx.from)
        .rcpts(&tx.rcpts)
        .message(&body.bytes);
    match report {
        Some(report) => facts.auth(report),
        None => facts,
    }
}

impl Session {
    /// Runs the checks `pending` waits for and its stage's round trip, then answers it.
    pub(super) async fn authenticate(&mut self, pending: Pending) {
        let ip = self.peer.ip();
        match pending {
            Pending::Helo { host, kind } => {
                let planned = Planned::new(&self.engine, Stage::Helo, &Facts::new(ip));
                let staged = planned.send().await;
                self.finish_hello(host, kind, Some(staged));
            }
            Pending::Mail {
                auth,
                from,
                size,
                smtputf8,
            } => {
                let (spf, ptr) = match auth {
                    Some(auth) => {
                        let helo = self.helo.as_deref().unwrap_or_default();
                        let spf = auth.spf(ip, helo, &from).await;
                        let ptr = if self.engine.config.auth.require_ptr {
                            Some(auth.ptr_matches(ip).await)
                        } else {
                            None
                        };
                        (Some(spf), ptr)
                    }
                    None => (None, None),
                };
                let staged = match self.waits(Stage::Mail) {
                    true => {
                        let facts = mail_facts(ip, &from, size, smtputf8, spf.as_ref(), ptr);
                        let planned = Planned::new(&self.engine, Stage::Mail, &facts);
                        Some(planned.send().await)
                    }
                    false => None,
                };
                self.finish_mail(from, size, smtputf8, spf, ptr, staged);
            }
            Pending::Rcpt { address } => {
                let planned = match self.rcpt_facts(&address) {
                    Some(facts) => Planned::new(&self.engine, Stage::Rcpt, &facts),
                    None => Planned::nothing(&self.engine),
                };
                let staged = planned.send().await;
                self.finish_rcpt(address.into(), Some(staged));
            }
            Pending::Data => {
                let planned = match &self.tx {
                    Some(tx) => {
                        let facts = Facts::new(ip).from(&tx.from).rcpts(&tx.rcpts);
                        Planned::new(&self.engine, Stage::Data, &facts)
                    }
                    None => Planned::nothing(&self.engine),
                };
                let staged = planned.send().await;
                self.finish_data(Some(staged));
            }
            Pending::Message { auth, submission } => {
                let tx = &submission.tx;
                let report = match (&auth, &tx.spf) {
                    (Some(auth), Some(spf)) => {
                        Some(auth.message(spf, &tx.from, &submission.body.bytes).await)
                    }
                    _ => None,
                };
                let staged = match self.waits(Stage::EndOfData) {
                    true => {
                        let facts =
                            message_facts(ip, &submission.tx, &submission.body, report.as_ref());
                        let planned = Planned::new(&self.engine, Stage::EndOfData, &facts);
                        Some(planned.send().await)
                    }
                    false => None,
                };
                self.finish_message(submission, report, staged);
            }
        }
    }

    /// Whether `stage` waits for a round trip to a shared store before it is decided;
    /// not when a refusal is deferred to it, which the store is not asked about.
    pub(super) fn waits(&self, stage: Stage) -> bool {
        self.engine.shared && !self.deferred.iter().any(|d| d.stage == stage)
    }

    fn context(&self) -> Context {
        Context {
            ip: self.peer.ip(),
            n: self.open_transaction().map_or(0, |tx| tx.rcpts.len()),
            starttls: self.engine.tls.is_some() && !self.tls,
        }
    }

    /// Queues the reply of `kind` and records it.
    pub(super) fn reply(&mut self, kind: ReplyKind) {
        let ctx = self.context();
        // Rendered into the session's reused buffer, and recorded from it.
        let mut text = std::mem::take(&mut self.reply_text);
        text.clear();
        let (kind, code) = self
            .catalogue
            .render_into(kind, &ctx, &mut self.rng, &mut text);
        debug!(session = self.id, reply = %text, "reply");
        self.output.extend_from_slice(text.as_bytes());
        self.output.extend_from_slice(b"\r\n");
        self.answered = true;
        self.record_ref(EventRef::Reply {
            kind,
            code,
            text: &text,
        });
        self.reply_text = text;
        // The reply that leaves no transaction open ends the one it answers.
        if self.open_transaction().is_none() && self.pending.is_none() {
            self.transaction = None;
        }
    }

    /// Records `decision` and, when it rejects, queues its reply. Returns whether it accepts.
    pub(super) fn decide(&mut self, decision: Decision) -> bool {
        let accepted = decision.is_accept();
        let verdict = decision.verdict;
        debug!(session = self.id, %decision, "decision");
        self.record(EventKind::Decision(decision));
        if let Verdict::Reject(kind) | Verdict::Disconnect(kind) = verdict {
            self.reply(kind);
        }
        accepted
    }

    /// Asks the policy about `stage`, after any refusal deferred to it; records the
    /// decision and queues a refusal. Returns whether the client may go on.
    pub(super) fn ask(&mut self, stage: Stage, facts: &Facts<'_>, staged: Option<Staged>) -> bool {
        matches!(
            self.verdict(stage, facts, staged),
            Verdict::Accept | Verdict::Junk
        )
    }

    /// [`ask`](Self::ask), returning the verdict.
    pub(super) fn verdict(
        &mut self,
        stage: Stage,
        facts: &Facts<'_>,
        staged: Option<Staged>,
    ) -> Verdict {
        let decision = self.judge(stage, facts, staged);
        let verdict = decision.verdict;
        self.decide(decision);
        verdict
    }

    /// The policy's decision at `stage` (after its round trip, when `staged`), or the
    /// refusal deferred to it; not yet recorded.
    pub(super) fn judge(
        &self,
        stage: Stage,
        facts: &Facts<'_>,
        staged: Option<Staged>,
    ) -> Decision {
        match self.deferred.iter().find(|d| d.stage == stage) {
            Some(deferred) => deferred.clone(),
            None => {
                let (now, fetched) = match staged {
                    Some(Staged { now, fetched }) => (now, fetched),
                    None => (self.engine.clock.now(), None),
                };
                let mut policy = self.engine.policy();
                if stage == Stage::EndOfData {
                    policy.end_of_data_fetched(facts, now, fetched)
                } else {
                    policy.check_fetched(stage, facts, now, fetched)
                }
            }
        }
    }
}
