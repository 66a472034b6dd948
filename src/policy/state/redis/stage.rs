//! A stage's round trip without the policy's lock. [`Redis::prepare_stage`] plans the
//! stage's reads under the lock and takes the writes held back with them;
//! [`Fetch::send`] sends them on the connection every session shares ([`Link`]), so
//! that the round trips of many sessions are in flight at once and a wake-up of the
//! server brings the replies of many; [`Redis::install_stage`] makes the replies the
//! stage's view under the lock again, or fails the stage and holds the writes again, as
//! a call made under the lock would. Making the connection gets `state.timeout`, and a
//! round trip as much (the connection keeps that timeout: see [`Link`]).
//!
//! A session that ends while its round trip is out (the server shutting down) puts the
//! writes it carried back with the writes held; a quota script it carried may have
//! counted, as one of a call that failed may.

use std::sync::Arc;
use std::time::Duration;

use redis::{Cmd, RedisResult, Value};

use super::endpoint::Endpoint;
use super::link::Link;
use super::packed::Packed;
use super::plan::{Layout, Plan};
use super::scripts::Scripts;
use super::{Held, Redis, answered, hold_again};
use crate::policy::state;

/// The connection the stages' round trips share, made at the first, after a failure and
/// after a redirection: the connection and the redirections followed when it was made.
#[derive(Debug)]
pub(super) struct Shared {
    endpoint: Arc<Endpoint>,
    timeout: Duration,
    link: tokio::sync::Mutex<Option<(Arc<Link>, u64)>>,
}

impl Shared {
    pub fn new(endpoint: Arc<Endpoint>, timeout: Duration) -> Self {
        Self {
            endpoint,
            timeout,
            link: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection, made now (with the scripts loaded) if there is none, it failed or
    /// it is to a node the state moved from.
    async fn link(&self) -> RedisResult<Arc<Link>> {
        let mut slot = self.link.lock().await;
        let moves = self.endpoint.moves();
        if let Some((link, _)) = slot
            .as_ref()
            .filter(|(link, made)| !link.is_broken() && *made == moves)
        {
            return Ok(link.clone());
        }
        let mut setup = Packed::default();
        for code in Scripts::CODES {
            setup.command("SCRIPT").arg("LOAD").arg(code);
        }
        let link = Link::open(&self.endpoint.info(), &setup, self.timeout).await?;
        Ok(slot.insert((Arc::new(link), moves)).0.clone())
    }

    /// Sends `packed`; its replies, or the first error among them (a timeout when the
    /// connection is not made within `state.timeout`, or the round trip not answered).
    async fn exchange(&self, packed: &Packed) -> RedisResult<Vec<Value>> {
        let link = match tokio::time::timeout(self.timeout, self.link()).await {
            Ok(link) => link?,
            Err(_) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "no connection within state.timeout",
                )
                .into());
            }
        };
        link.exchange(packed).await.and_then(answered)
    }

    /// Drops the connection: the next round trip makes a new one.
    async fn forget(&self) {
        self.link.lock().await.take();
    }
}

/// What a round trip carries besides its pipeline.
#[derive(Debug)]
struct Parts {
    /// The writes held back, sent ahead of the reads, each with whether it may be sent
    /// again.
    held: Vec<(Cmd, bool)>,
    plan: Plan,
    layout: Layout,
}

/// A stage's round trip, planned.
#[derive(Debug)]
pub(crate) struct Fetch {
    shared: Arc<Shared>,
    packed: Packed,
    /// Taken when the replies come; still here if the round trip was dropped. (Boxed:
    /// the round trip is moved through the session's futures, the plan stays put.)
    parts: Option<Box<Parts>>,
    /// Where the writes go back to then.
    queue: Held,
}

/// A stage's round trip, with its replies or the error that ended it.
#[derive(Debug)]
pub(crate) struct Fetched {
    /// Taken when the stage begins with them; still here if it never did.
    parts: Option<Box<Parts>>,
    replies: RedisResult<Vec<Value>>,
    queue: Held,
}

impl Fetch {
    /// Sends the round trip; its replies, or its error (a timeout after `state.timeout`).
    pub async fn send(mut self) -> Fetched {
        let shared = self.shared.clone();
        let replies = shared.exchange(&self.packed).await;
        if replies.is_err() {
            shared.forget().await;
        }
        let parts = self
            .parts
            .take()
            .expect("a round trip is sent once, since sending takes it");
        Fetched {
            parts: Some(parts),
            replies,
            queue: self.queue.clone(),
        }
    }
}

impl Fetched {
    pub fn print(&self) -> Option<u64> {
        self.parts.as_ref().and_then(|parts| parts.plan.print)
    }
}

impl Drop for Fetched {
    fn drop(&mut self) {
        // A round trip no stage began with: the writes of one that failed wait for the
        // next call, as they would had a stage met the failure.
        if let (Some(parts), Err(_)) = (self.parts.take(), &self.replies) {
            hold_again(&self.queue, parts.held);
        }
    }
}

impl Drop for Fetch {
    fn drop(&mut self) {
        if let Some(parts) = self.parts.take() {
            hold_again(&self.queue, parts.held);
        }
    }
}

impl Redis {
    /// The round trip of the stage `ahead` announces, when its rules may ask anything.
    pub(super) fn prepare_stage(&self, ahead: &state::Ahead<'_>) -> Option<Fetch> {
        let mut plan = self.plan_of(ahead, 0);
        if !self.asks(&plan) {
            return None;
        }
        let (mut packed, held) = self.with_held();
        let layout = self.request(&mut plan, &mut packed);
        Some(Fetch {
            shared: self.shared.clone(),
            packed,
            parts: Some(Box::new(Parts { held, plan, layout })),
            queue: self.held.clone(),
        })
    }

    /// The stage `fetched` was planned for begins: its replies are its view, or the
    /// stage failed.
    pub(super) fn install_stage(&self, mut fetched: Fetched) {
        let Some(parts) = fetched.parts.take() else {
            return;
        };
        let Parts {
            held,
            mut plan,
            layout,
        } = *parts;
        let replies = std::mem::replace(&mut fetched.replies, Ok(Vec::new()));
        self.health.enter(plan.stage as usize);
        self.health.call();
        *self.plan.borrow_mut() = None;
        self.forget_view();
        plan.call = self.health.stage();
        let Some(replies) = self.settle("stage", held, replies) else {
            return;
        };
        if let Some(view) = self.read(&plan, layout, replies) {
            *self.view.borrow_mut() = Some(view);
        }
    }
}
