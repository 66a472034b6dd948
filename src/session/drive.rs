//! Driving a session over a stream: reading under the idle, command, session and data-rate
//! timeouts, answering what was read, writing the replies, and closing. Every time here
//! is real time (it is about sockets), not the server's clock.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tokio::time::Instant;

use super::channel::Channel;
use super::input::{Action, Mode};
use super::{Conn, LAST_WORDS, READ_CHUNK, Session, transfer_time};
use crate::event::CloseReason;
use crate::reply::ReplyKind;

/// How a session ends.
#[derive(Debug, Clone, Copy)]
pub(super) enum End {
    Closed(CloseReason),
    /// Close with a TCP reset.
    Reset,
}

/// Why the conversation on one channel stopped.
enum Stop<U> {
    Ended(End),
    /// STARTTLS was answered: the channel's upgrade.
    Upgrade(U),
}

impl Session {
    /// Reads, answers and writes until the session ends or asks for the channel's upgrade;
    /// records the end and closes the stream unless it returns the upgrade.
    pub(super) async fn drive<S, C>(
        &mut self,
        stream: &mut S,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<C::Upgrade>
    where
        S: Conn,
        C: Channel,
    {
        match self.converse::<S, C>(stream, shutdown).await {
            Stop::Upgrade(upgrade) => Some(upgrade),
            Stop::Ended(end) => {
                self.end(stream, end).await;
                None
            }
        }
    }

    /// Records the end and closes the stream, with a reset for [`End::Reset`].
    pub(super) async fn end<S: Conn>(&mut self, stream: &mut S, end: End) {
        match end {
            End::Closed(reason) => {
                self.closed(reason);
                let _ = tokio::time::timeout(LAST_WORDS, stream.shutdown()).await;
            }
            End::Reset => {
                self.closed(CloseReason::FaultReset);
                stream.reset_on_close();
            }
        }
    }

    async fn converse<S, C>(
        &mut self,
        stream: &mut S,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Stop<C::Upgrade>
    where
        S: Conn,
        C: Channel,
    {
        loop {
            let mut action = self.process::<C>();
            loop {
                match action {
                    Action::Authenticate(pending) => self.authenticate(pending).await,
                    Action::Fault => {
                        // What was answered before the fault goes out first.
                        if !self.flush(stream).await {
                            return Stop::Ended(End::Closed(CloseReason::WriteFailed));
                        }
                        if let Some(end) = self.carry_out_fault(stream, shutdown).await {
                            return Stop::Ended(end);
                        }
                    }
                    _ => break,
                }
                // A message held by a fault may now wait for its checks.
                action = match self.pending.take() {
                    Some(pending) => Action::Authenticate(pending),
                    None => self.process::<C>(),
                };
            }
            if !self.flush(stream).await {
                return Stop::Ended(End::Closed(CloseReason::WriteFailed));
            }
            self.start_clocks();
            match action {
                Action::Continue | Action::Authenticate(_) | Action::Fault => {}
                Action::StartTls(upgrade) => return Stop::Upgrade(upgrade),
                Action::Close(reason) => return Stop::Ended(End::Closed(reason)),
            }
            let (until, reason) = self.read_deadline();
            self.input.reserve(READ_CHUNK);
            let read = tokio::select! {
                read = tokio::time::timeout_at(until, stream.read_buf(&mut self.input)) => read,
                () = stopping(shutdown) => {
                    let end = self.last_words(stream, ReplyKind::ShuttingDown, CloseReason::ShuttingDown).await;
                    return Stop::Ended(end);
                }
            };
            match read {
                Ok(Ok(0)) => return Stop::Ended(End::Closed(CloseReason::ClientClosed)),
                Ok(Ok(n)) => {
                    let crawled = Instant::now();
                    self.crawl(n).await;
                    self.paced(n, crawled.elapsed());
                }
                Ok(Err(_)) => return Stop::Ended(End::Closed(CloseReason::ReadFailed)),
                Err(_) => {
                    return Stop::Ended(self.last_words(stream, ReplyKind::Timeout, reason).await);
                }
            }
        }
    }

    /// After the replies are written: the wait for the next command starts if something
    /// was answered, and the data rate is measured from the start of message data.
    fn start_clocks(&mut self) {
        if std::mem::take(&mut self.answered) {
            self.awaiting_since = Instant::now();
        }
        let limits = &self.engine.config.limits;
        match self.mode {
            Mode::Data(_) if limits.min_data_rate > 0 => {
                if self.data_deadline.is_none() {
                    self.data_deadline = Instant::now().checked_add(limits.min_data_rate_window);
                }
            }
            _ => self.data_deadline = None,
        }
    }

    /// When the next read times out, and why.
    fn read_deadline(&self) -> (Instant, CloseReason) {
        let limits = &self.engine.config.limits;
        let mut until = (self.deadline, CloseReason::SessionTimeout);
        let idle = Instant::now() + limits.idle_timeout;
        if idle < until.0 {
            until = (idle, CloseReason::IdleTimeout);
        }
        let stage = match (&self.mode, self.data_deadline) {
            (Mode::Data(_), Some(data)) => Some((data, CloseReason::DataRateTooLow)),
            (Mode::Data(_), None) => None,
            (Mode::Commands | Mode::SkipLine, _) => self
                .awaiting_since
                .checked_add(limits.command_timeout)
                .map(|command| (command, CloseReason::CommandTimeout)),
        };
        match stage {
            Some(stage) if stage.0 < until.0 => stage,
            _ => until,
        }
    }

    /// Credits `n` bytes of message data against `limits.min_data_rate`: each byte buys
    /// `1 / rate` seconds, and no more than the window can be saved up. Time the server
    /// spent on a simulated slow link (`slept`) is not the client's.
    fn paced(&mut self, n: usize, slept: Duration) {
        let limits = &self.engine.config.limits;
        if let (Mode::Data(_), Some(deadline)) = (&self.mode, self.data_deadline) {
            let earned = transfer_time(n, limits.min_data_rate);
            let later = deadline.checked_add(earned + slept);
            let cap = Instant::now().checked_add(limits.min_data_rate_window);
            self.data_deadline = match (later, cap) {
                (Some(later), Some(cap)) => Some(later.min(cap)),
                (later, cap) => later.or(cap),
            };
        }
    }

    /// Sends a closing reply and ends the session.
    pub(super) async fn last_words<S>(
        &mut self,
        stream: &mut S,
        kind: ReplyKind,
        reason: CloseReason,
    ) -> End
    where
        S: AsyncWrite + Unpin,
    {
        self.reply(kind);
        let _ = tokio::time::timeout(LAST_WORDS, stream.write_all(&self.output)).await;
        self.output.clear();
        End::Closed(reason)
    }

    /// Writes the queued replies (at the link's speed); returns whether they went out.
    pub(super) async fn flush<S>(&mut self, stream: &mut S) -> bool
    where
        S: AsyncWrite + Unpin,
    {
        if self.output.is_empty() {
            return true;
        }
        let idle = self.engine.config.limits.idle_timeout;
        let written = tokio::time::timeout(idle, self.write_out(stream)).await;
        self.output.clear();
        matches!(written, Ok(Ok(())))
    }
}

/// Completes when the server starts shutting down.
pub(super) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`: drop it here, not in the caller.
    let _ = shutdown.wait_for(|stop| *stop).await.is_ok();
}
