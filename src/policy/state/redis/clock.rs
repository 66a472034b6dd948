//! One virtual time for replicas: the clock's offset (what advancing it added) lives in
//! Redis, so that advancing the clock through any replica moves it for all.
//!
//! A thread per server compares its clock's offset with the shared one every
//! [`EVERY`] of real time: the shared offset is the furthest any replica's clock has
//! been advanced, and a shared offset ahead of this replica's moves its clock forward.
//! An advance made on one replica is seen by the others within that interval; a clock
//! never goes back. (Two advances made on two replicas within one interval count as
//! the larger of the two, not their sum.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::{Client, Script};
use tracing::debug;

use super::endpoint::Endpoint;
use crate::clock::Clock;
use crate::config::Config;

/// How often the offset is compared, in real time.
pub(crate) const EVERY: Duration = Duration::from_millis(100);

/// Raises the shared offset `KEYS[1]` (µs) to at least `ARGV[1]`, this replica's, and
/// keeps it `ARGV[2]` seconds. Returns it.
const SHARE: &str = r"
local v = tonumber(redis.call('GET', KEYS[1]) or '0')
if v < tonumber(ARGV[1]) then v = tonumber(ARGV[1]) end
redis.call('SET', KEYS[1], string.format('%d', v), 'EX', tonumber(ARGV[2]))
return v
";

/// The thread that shares a clock's offset; it stops when this is dropped.
#[derive(Debug)]
pub(crate) struct SharedClock {
    stop: Arc<AtomicBool>,
}

impl Drop for SharedClock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl SharedClock {
    /// Shares `clock`'s offset through the Redis of `config.state`; `None` when the
    /// thread cannot be started or the URL is not one.
    pub(crate) fn start(config: &Config, clock: Clock) -> Option<Self> {
        let state = &config.state;
        let endpoint = Endpoint::new(&Client::open(state.url.as_str()).ok()?);
        let key = format!("{{{}}}:clock", state.prefix);
        let (timeout, retention) = (state.timeout, state.retention.as_secs().max(1));
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        std::thread::Builder::new()
            .name("qqmx-clock".to_owned())
            .spawn(move || {
                let script = Script::new(SHARE);
                let mut conn = None;
                while !stopped.load(Ordering::Relaxed) {
                    let local = clock.offset();
                    let shared = conn
                        .take()
                        .map_or_else(
                            || endpoint.client()?.get_connection_with_timeout(timeout),
                            Ok,
                        )
                        .and_then(|mut c: redis::Connection| {
                            c.set_read_timeout(Some(timeout))?;
                            let v: u64 = script
                                .key(&key)
                                .arg(micros(local))
                                .arg(retention)
                                .invoke(&mut c)?;
                            conn = Some(c);
                            Ok(v)
                        });
                    match shared {
                        Ok(v) => clock.advance_to(Duration::from_micros(v)),
                        Err(e) => {
                            endpoint.follow(&e);
                            debug!(error = %e, "cannot share the clock's offset");
                        }
                    }
                    std::thread::sleep(EVERY);
                }
            })
            .ok()?;
        Some(Self { stop })
    }
}
