//! Message data: reading it within the size limit, and storing what is accepted with the
//! headers QQ adds (`Received` with NewMX, `X-QQ-mid`, `X-QQ-XMRINFO`).

use std::io::Write as _;
use std::sync::Arc;

use base64::Engine as _;
use rand::{Rng, RngCore};
use tracing::debug;

use super::body::{Body, Dropped, Ended};
use super::input::{Mode, Reading};
use super::verdict::{Staged, message_facts};
use super::{Pending, Session, Submission};
use crate::auth::results_header;
use crate::clock::{Rfc5322Cst, unix_secs};
use crate::event::EventKind;
use crate::policy::{AuthReport, Verdict};
use crate::reply::ReplyKind;
use crate::store::{EventRef, Folder, Message};
use crate::units::Stage;

impl Session {
    /// Feeds message data from `input` to `reading`, which stays the mode until the data
    /// ends. Returns the bytes used and whether the data ended.
    pub(super) fn data(&mut self, mut reading: Reading, input: &[u8]) -> (usize, bool) {
        let (used, ended) = reading.incoming.feed(input);
        let Some(ended) = ended else {
            self.mode = Mode::Data(reading);
            return (used, false);
        };
        // The transaction ends here, with the message or with its refusal; what the
        // message holds of the in-flight budget is in its body now, if anywhere.
        let Reading { incoming, tx } = reading;
        drop(incoming);
        match ended {
            Ended::Complete(body) => self.end_of_data(Submission { tx, body }),
            Ended::Dropped {
                why: Dropped::TooLarge,
                received,
            } => self.refuse_oversize(received),
            Ended::Dropped {
                why: Dropped::Busy,
                received,
            } => {
                debug!(session = self.id, received, "over the in-flight budget");
                self.reply(ReplyKind::SystemBusy);
            }
        }
        (used, true)
    }

    /// Ends a transaction whose message was over the size limit.
    fn refuse_oversize(&mut self, received: u64) {
        let decision = self.engine.policy().oversize(received);
        self.decide(decision);
    }

    /// Answers a complete message: at once, after the checks it waits for, or after the
    /// fault due at the end of data.
    pub(super) fn end_of_data(&mut self, submission: Submission) {
        if let Some(fault) = self.fault_before(Stage::EndOfData) {
            self.hold(fault, submission);
            return;
        }
        let auth = self.engine.auth.clone();
        if auth.is_some() || self.waits(Stage::EndOfData) {
            self.pending = Some(Pending::Message { auth, submission });
        } else {
            self.finish_message(submission, None, None);
        }
    }

    /// Decides and stores a complete message once DKIM and DMARC are known, after its
    /// stage's round trip when `staged`.
    pub(super) fn finish_message(
        &mut self,
        submission: Submission,
        report: Option<AuthReport>,
        staged: Option<Staged>,
    ) {
        let Submission { tx, body } = submission;
        if let Some(report) = &report {
            self.record_ref(EventRef::Authenticated(report));
        }
        let facts = message_facts(self.peer.ip(), &tx, &body, report.as_ref());
        let folder = match self.verdict(Stage::EndOfData, &facts, staged) {
            Verdict::Accept => Folder::Inbox,
            Verdict::Junk => Folder::Junk,
            _ => return,
        };
        let now = self.engine.clock.now();
        let helo = self.helo.clone().unwrap_or_default();
        // The headers are written into the session's reusable buffer, then in front of
        // the body where it is (no second buffer); the store makes its one copy, and the
        // body's share of the in-flight budget is given back once that copy is made.
        let mut headers = std::mem::take(&mut self.headers);
        headers.clear();
        self.qq_headers(&mut headers, &helo, &tx.rcpts, now);
        if let Some(report) = &report {
            let value = results_header(&self.engine.config.auth.authserv_id, &tx.from, report);
            headers.extend_from_slice(b"Authentication-Results: ");
            headers.extend_from_slice(value.as_bytes());
            headers.extend_from_slice(b"\r\n");
        }
        let Body { mut bytes, charge } = body;
        let len = bytes.len();
        bytes.resize(len + headers.len(), 0);
        bytes.copy_within(..len, headers.len());
        bytes[..headers.len()].copy_from_slice(&headers);
        self.headers = headers;
        let raw = Arc::<[u8]>::from(bytes.as_slice());
        let (session, client, tls) = (self.id, self.peer, self.tls);
        // The message is in the store before the 250 is queued, let alone written.
        let mx = self.mx.to_string();
        let id = self.engine.store.accept(|id| Message {
            id,
            session,
            mx,
            received_at: now,
            client: client.ip(),
            client_port: client.port(),
            helo,
            mail_from: tx.from,
            rcpt_to: tx.rcpts,
            tls,
            folder,
            auth: report,
            raw,
        });
        drop(bytes);
        drop(charge);
        self.record(EventKind::Accepted { message: id });
        self.reply(ReplyKind::Queued);
    }

    /// Writes the trace headers QQ puts on top of an accepted message to `out`.
    fn qq_headers(
        &mut self,
        out: &mut Vec<u8>,
        helo: &str,
        rcpts: &[String],
        now: std::time::SystemTime,
    ) {
        let host = self.catalogue.host();
        let ip = self.peer.ip();
        let queue_id = self.rng.next_u32();
        // Writing to a `Vec` cannot fail.
        let _ = write!(
            out,
            "Received: from {helo} ({helo} [{ip}])\r\n\tby {host} (NewMX) with SMTP id {queue_id:08X}\r\n\t"
        );
        if let [only] = rcpts {
            let _ = write!(out, "for <{only}>; ");
        }
        let _ = write!(out, "{}\r\n", Rfc5322Cst(now));
        let short = host
            .strip_prefix("new")
            .unwrap_or(host)
            .trim_end_matches(".qq.com");
        let _ = write!(out, "X-QQ-mid: {short}t{}t", unix_secs(now));
        for _ in 0..8 {
            let n = self.rng.random_range(0..36u32);
            let digit = char::from_digit(n, 36).expect("below 36");
            out.push(u8::try_from(digit).expect("an ASCII digit or letter"));
        }
        // 17 bytes: 24 base64 characters ending in a single `=`, like QQ's
        // `X-QQ-XMRINFO: NgToQqU5s31XQ+vYT/V7+uk=`.
        let mut info = [0u8; 17];
        self.rng.fill_bytes(&mut info);
        let mut encoded = [0u8; 24];
        let len = base64::engine::general_purpose::STANDARD
            .encode_slice(info, &mut encoded)
            .expect("24 bytes hold the base64 of 17");
        out.extend_from_slice(b"\r\nX-QQ-XMRINFO: ");
        out.extend_from_slice(&encoded[..len]);
        out.extend_from_slice(b"\r\n");
    }
}
