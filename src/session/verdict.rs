//! Asking and answering: the checks a command waits for, the policy's decision at each
//! stage (or the refusal deferred to it from connect), and the reply that renders it
//! through the listener's catalogue.

use tracing::debug;

use super::{Pending, Session};
use crate::event::EventKind;
use crate::policy::{Decision, Facts, Verdict};
use crate::reply::{Context, ReplyKind};
use crate::store::EventRef;
use crate::units::Stage;

impl Session {
    /// Runs the checks `pending` waits for, then answers it.
    pub(super) async fn authenticate(&mut self, pending: Pending) {
        let ip = self.peer.ip();
        match pending {
            Pending::Mail {
                auth,
                from,
                size,
                smtputf8,
            } => {
                let helo = self.helo.as_deref().unwrap_or_default();
                let spf = auth.spf(ip, helo, &from).await;
                let ptr = if self.engine.config.auth.require_ptr {
                    Some(auth.ptr_matches(ip).await)
                } else {
                    None
                };
                self.finish_mail(from, size, smtputf8, Some(spf), ptr);
            }
            Pending::Message { auth, submission } => {
                let tx = &submission.tx;
                let report = match &tx.spf {
                    Some(spf) => Some(auth.message(spf, &tx.from, &submission.body.bytes).await),
                    None => None,
                };
                self.finish_message(submission, report);
            }
        }
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
    pub(super) fn ask(&mut self, stage: Stage, facts: &Facts<'_>) -> bool {
        matches!(self.verdict(stage, facts), Verdict::Accept | Verdict::Junk)
    }

    /// [`ask`](Self::ask), returning the verdict.
    pub(super) fn verdict(&mut self, stage: Stage, facts: &Facts<'_>) -> Verdict {
        let decision = self.judge(stage, facts);
        let verdict = decision.verdict;
        self.decide(decision);
        verdict
    }

    /// The policy's decision at `stage`, or the refusal deferred to it; not yet recorded.
    pub(super) fn judge(&self, stage: Stage, facts: &Facts<'_>) -> Decision {
        match self.deferred.iter().find(|d| d.stage == stage) {
            Some(deferred) => deferred.clone(),
            None => {
                let now = self.engine.clock.now();
                let mut policy = self.engine.policy();
                if stage == Stage::EndOfData {
                    policy.end_of_data(facts, now)
                } else {
                    policy.check(stage, facts, now)
                }
            }
        }
    }
}
