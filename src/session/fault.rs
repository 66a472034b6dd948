//! Chaos faults in a session: the fault due before a reply and its carrying out (a delay,
//! a close, a `421`, a reset, a stall), the message a fault at the end of data holds
//! back, the failed TLS handshake, and the pacing of a slow link. Which fault fires, and
//! when, is for [`Faults`](crate::chaos::Faults) to say; this carries it out.

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;

use super::drive::{End, stopping};
use super::{Conn, LAST_WORDS, Session, Submission, transfer_time};
use crate::chaos::{Action as FaultAction, FaultKind};
use crate::event::{CloseReason, EventKind};
use crate::reply::ReplyKind;
use crate::units::Stage;

/// A TLS alert record: fatal (2), handshake_failure (40).
const HANDSHAKE_FAILURE: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

/// The faults of one session.
#[derive(Default)]
pub(super) struct FaultState {
    /// A fault to carry out before the next reply.
    due: Option<(FaultKind, FaultAction)>,
    /// The fault before the next command (or end of data) has been carried out.
    passed: bool,
    /// A complete message held back by a fault at the end of data.
    held: Option<Submission>,
    /// Bytes per second of a slow link.
    link_speed: Option<u64>,
}

impl FaultState {
    /// Makes `fault` the one to carry out before the next reply.
    pub(super) fn set_due(&mut self, fault: (FaultKind, FaultAction)) {
        self.due = Some(fault);
    }

    /// A fault waits to be carried out.
    pub(super) fn is_due(&self) -> bool {
        self.due.is_some()
    }

    /// The message a fault holds back.
    pub(super) fn held(&self) -> Option<&Submission> {
        self.held.as_ref()
    }
}

impl Session {
    /// Reads the link speed of a `slow_link` fault, once per session.
    pub(super) fn measure_link(&mut self) {
        self.fault.link_speed = self.engine.faults().link_speed(&self.mx);
    }

    /// The fault that fires before the reply at `stage`, if any.
    pub(super) fn fault_before(&mut self, stage: Stage) -> Option<(FaultKind, FaultAction)> {
        if std::mem::take(&mut self.fault.passed) {
            return None;
        }
        self.engine.faults().before_reply(stage, &self.mx)
    }

    /// Carries out the fault before the greeting, if one fires: `None` to go on, or how
    /// the session ends.
    pub(super) async fn fault_at_connect<S: Conn>(
        &mut self,
        stream: &mut S,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<End> {
        let fault = self.fault_before(Stage::Connect)?;
        self.fault.set_due(fault);
        self.carry_out_fault(stream, shutdown).await
    }

    /// Holds back a complete message until the fault due at the end of data is carried
    /// out; it is dropped if the fault ends the session.
    pub(super) fn hold(&mut self, fault: (FaultKind, FaultAction), submission: Submission) {
        self.fault.set_due(fault);
        self.fault.held = Some(submission);
    }

    /// Carries out the fault due: `None` to go on, or how the session ends.
    pub(super) async fn carry_out_fault<S: Conn>(
        &mut self,
        stream: &mut S,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<End> {
        let (kind, action) = self.fault.due.take()?;
        self.record(EventKind::Fault {
            fault: kind,
            stage: None,
        });
        match action {
            FaultAction::Delay(delay) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stopping(shutdown) => {
                        return Some(self.last_words(stream, ReplyKind::ShuttingDown, CloseReason::ShuttingDown).await);
                    }
                }
                self.fault.passed = true;
                if let Some(submission) = self.fault.held.take() {
                    self.end_of_data(submission);
                }
                None
            }
            FaultAction::Close => Some(End::Closed(CloseReason::FaultClose)),
            FaultAction::Unavailable => Some(
                self.last_words(
                    stream,
                    ReplyKind::ShuttingDown,
                    CloseReason::FaultUnavailable,
                )
                .await,
            ),
            FaultAction::Reset => Some(End::Reset),
            FaultAction::Stall => {
                let idle = self.engine.config.limits.idle_timeout;
                tokio::select! {
                    () = tokio::time::sleep(idle) => {}
                    () = stopping(shutdown) => {}
                }
                Some(End::Closed(CloseReason::FaultStall))
            }
        }
    }

    /// Fails the TLS handshake if a `tls_failure` fault fires: answers the client's hello
    /// with a fatal handshake_failure alert, as a server that cannot agree on anything
    /// does, and closes. Returns whether it did.
    pub(super) async fn tls_fault<S: Conn>(&mut self, stream: &mut S) -> bool {
        if !self.engine.faults().tls_fails(&self.mx) {
            return false;
        }
        self.record(EventKind::Fault {
            fault: FaultKind::TlsFailure,
            stage: None,
        });
        let idle = self.engine.config.limits.idle_timeout;
        let mut hello = [0u8; 4096];
        let _ = tokio::time::timeout(idle, stream.read(&mut hello)).await;
        let _ = tokio::time::timeout(LAST_WORDS, stream.write_all(&HANDSHAKE_FAILURE)).await;
        self.closed(CloseReason::FaultTlsFailure);
        let _ = tokio::time::timeout(LAST_WORDS, stream.shutdown()).await;
        true
    }

    /// Writes the queued replies; on a slow link, a tenth of a second's worth at a time.
    pub(super) async fn write_out<S>(&self, stream: &mut S) -> std::io::Result<()>
    where
        S: AsyncWrite + Unpin,
    {
        match self.fault.link_speed {
            None => stream.write_all(&self.output).await?,
            Some(speed) => {
                let chunk = usize::try_from(speed / 10).unwrap_or(usize::MAX).max(1);
                for piece in self.output.chunks(chunk) {
                    stream.write_all(piece).await?;
                    stream.flush().await?;
                    tokio::time::sleep(transfer_time(piece.len(), speed)).await;
                }
            }
        }
        stream.flush().await
    }

    /// On a slow link, waits as long as `n` bytes take to arrive.
    pub(super) async fn crawl(&self, n: usize) {
        if let Some(speed) = self.fault.link_speed {
            tokio::time::sleep(transfer_time(n, speed)).await;
        }
    }
}
