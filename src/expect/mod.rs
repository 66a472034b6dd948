//! Expectations about a sender's behaviour, checked against what a server saw: one
//! engine for the embedded server ([`QqMx::expect`](crate::QqMx::expect)), a sidecar's
//! client (`Remote::expect`, feature `remote`) and scenario files (`[[expect]]`,
//! `qqmx run`).
//!
//! An [`Expectation`] is read from TOML or built in Rust; [`evaluate`] checks a list of
//! them over a [`Run`] (the typed events, the accepted messages, the MX outages, the seed,
//! all in the server's virtual time) and gives a [`Report`] with one [`Outcome`] each,
//! whose text is the same wherever it was made. [`Kind`] documents what each kind counts.
//!
//! ```
//! use qqmx::expect::{Run, evaluate};
//! use qqmx::Expectation;
//!
//! let report = evaluate(
//!     &[Expectation::respects_blocks(), Expectation::accepted(1..)],
//!     &Run::new(&[], &[], &[], 7),
//! );
//! assert!(!report.passed);
//! assert!(report.to_string().ends_with("replay with seed 7\n"));
//! ```
//!
//! The parts: `model` (the expectations and their parameters), `run` (what a run left
//! behind), `transcript` (the event log read once), `counts` and `behaviour` (the
//! checks), `report` (the one report), `words` (numbers, durations and times in words).

mod behaviour;
mod counts;
mod model;
mod report;
mod run;
mod transcript;
mod words;

#[cfg(test)]
mod tests;

pub use counts::reply_counts;
pub use model::{ExpectError, Expectation, Kind, RetryAfter, Times};
pub use report::{Outcome, ReplyCount, Report};
pub use run::{Outage, Run};

use transcript::Transcript;

/// Checks every expectation against `run`, in order: one [`Outcome`] each, in a
/// [`Report`] that names the run's seed. Pure: it reads the log and the messages, nothing
/// else. An expectation whose parameters do not fit its kind
/// ([`Expectation::check`]) fails, saying why.
pub fn evaluate(expectations: &[Expectation], run: &Run<'_>) -> Report {
    let log = Transcript::read(run.events);
    let outcomes = expectations
        .iter()
        .map(|e| {
            let (passed, mut seen) = match e.check() {
                Err(error) => (false, format!("not checked: {error}")),
                Ok(()) => match e.kind() {
                    Kind::Accepted => counts::accepted(e, run),
                    Kind::Rejected => counts::rejected(e, run),
                    Kind::Replies => counts::replies(e, run),
                    Kind::RespectsBlocks => behaviour::respects_blocks(e, &log),
                    Kind::Retries => behaviour::retries(e, run, &log),
                    Kind::NoResendToUnknown => behaviour::no_resend(e, &log),
                    Kind::WithinWarmup => behaviour::within_warmup(e, &log),
                    Kind::Failover => counts::failover(e, run),
                    Kind::Authenticated => counts::authenticated(run),
                },
            };
            let (what, evicted) = match e.kind() {
                Kind::Accepted | Kind::Failover | Kind::Authenticated => {
                    ("message", run.evicted_messages)
                }
                _ => ("event", run.evicted_events),
            };
            if evicted > 0 {
                seen.push_str(&format!(
                    "; {} evicted by the store before the check, not seen",
                    words::plural(evicted, what)
                ));
            }
            Outcome::new(e.name(), passed, seen)
        })
        .collect();
    Report::new(run.seed, outcomes)
}
