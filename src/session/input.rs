//! What arrives: command lines framed at the line-length limit (the limit is ours, not
//! smtp-proto's), the rest of an over-long line thrown away, and message data fed to the
//! scanner up to its end. Everything complete in the input is answered, in order, so that
//! pipelined commands get correct replies.

use memchr::memchr;

use super::body::Incoming;
use super::channel::Channel;
use super::parse;
use super::{Pending, Session, Transaction};
use crate::chaos::Action as FaultAction;
use crate::event::{CloseReason, EventKind, Verb};
use crate::reply::ReplyKind;
use crate::store::EventRef;
use crate::units::Stage;

/// What the session is reading.
pub(super) enum Mode {
    Commands,
    /// The rest of an over-long line, to be thrown away.
    SkipLine,
    /// Message data, up to the end-of-data line.
    Data(Reading),
}

/// Message data coming in, and the transaction it is for.
pub(super) struct Reading {
    pub(super) incoming: Incoming,
    pub(super) tx: Transaction,
}

/// What to do after answering what has been read; `U` is the channel's upgrade.
pub(super) enum Action<U> {
    Continue,
    /// Run the checks a command waits for (and its stage's round trip to a shared
    /// store), then go on.
    Authenticate(Pending),
    /// Carry out the fault due.
    Fault,
    StartTls(U),
    Close(CloseReason),
}

impl Session {
    /// Answers everything complete in the input; keeps what is incomplete.
    pub(super) fn process<C: Channel>(&mut self) -> Action<C::Upgrade> {
        let max_line = self.engine.config.limits.max_line_length;
        // Taken out while it is answered, so that each command line is read where it
        // is, without a copy; put back (the unanswered rest) at the end.
        let input = std::mem::take(&mut self.input);
        let mut pos = 0;
        let mut action = Action::Continue;
        while let Action::Continue = action {
            let rest = &input[pos..];
            // Taken for this step; each arm leaves the mode that follows.
            match std::mem::replace(&mut self.mode, Mode::Commands) {
                Mode::Commands => match memchr(b'\n', rest) {
                    Some(end) if end < max_line => {
                        let line = &rest[..=end];
                        if let Some(stage) = command_stage(line)
                            && let Some(fault) = self.fault_before(stage)
                        {
                            // Not answered yet: the line stays in the input, to be
                            // answered after a delay. A fault that ends the session
                            // leaves the command unanswered, but in the log.
                            if !matches!(fault.1, FaultAction::Delay(_)) {
                                let (verb, parsed) = parse::read(line);
                                if verb == Verb::Mail {
                                    self.begin_transaction();
                                }
                                self.record_ref(EventRef::Command(parse::command(
                                    line, verb, &parsed,
                                )));
                            }
                            self.fault.set_due(fault);
                            action = Action::Fault;
                            break;
                        }
                        pos += end + 1;
                        action = self.command::<C>(line);
                    }
                    Some(end) => {
                        pos += end + 1;
                        action = self.too_long();
                    }
                    None if rest.len() >= max_line => {
                        pos = input.len();
                        self.mode = Mode::SkipLine;
                        action = self.too_long();
                    }
                    None => break,
                },
                Mode::SkipLine => match memchr(b'\n', rest) {
                    Some(end) => pos += end + 1,
                    None => {
                        pos = input.len();
                        self.mode = Mode::SkipLine;
                        break;
                    }
                },
                Mode::Data(reading) => {
                    let (used, done) = self.data(reading, &input[pos..]);
                    pos += used;
                    if !done && pos == input.len() {
                        break;
                    }
                }
            }
            if let Action::StartTls(_) = action {
                let left = input.len() - pos;
                if left > 0 {
                    self.record(EventKind::Discarded { bytes: left });
                }
                pos = input.len();
            }
            if let Action::Continue = action
                && let Some(pending) = self.pending.take()
            {
                action = Action::Authenticate(pending);
            }
            if let Action::Continue = action
                && self.fault.is_due()
            {
                action = Action::Fault;
            }
        }
        self.input = input;
        self.input.drain(..pos);
        action
    }

    /// Counts a command line against the per-session limit; past it, queues the closing
    /// reply and returns why the session closes.
    pub(super) fn count_command(&mut self) -> Option<CloseReason> {
        self.commands += 1;
        if self.commands > self.engine.config.limits.max_commands {
            self.reply(ReplyKind::TooManyCommands);
            return Some(CloseReason::TooManyCommands);
        }
        None
    }

    /// Answers an over-long command line, which counts as a command like any other.
    fn too_long<U>(&mut self) -> Action<U> {
        if let Some(reason) = self.count_command() {
            return Action::Close(reason);
        }
        self.reply(ReplyKind::LineTooLong);
        Action::Continue
    }
}

/// The stage a command line belongs to, for faults.
fn command_stage(line: &[u8]) -> Option<Stage> {
    let verb = line.get(..4)?;
    let stage = if verb.eq_ignore_ascii_case(b"HELO") || verb.eq_ignore_ascii_case(b"EHLO") {
        Stage::Helo
    } else if verb.eq_ignore_ascii_case(b"MAIL") {
        Stage::Mail
    } else if verb.eq_ignore_ascii_case(b"RCPT") {
        Stage::Rcpt
    } else if verb.eq_ignore_ascii_case(b"DATA") {
        Stage::Data
    } else {
        return None;
    };
    Some(stage)
}
