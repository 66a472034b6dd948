//! Quota counters and blocks, in memory.

use crate::policy::lru::Lru;
use crate::policy::quota::Counter;

/// A counter for every key counted or blocked, counted toward the cap.
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub lru: Lru<Counter>,
}
