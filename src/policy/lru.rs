//! Tracked keys in the order they were last used, for the cap of `[memory]`.
//!
//! An [`Lru`] maps ids (hashes of keys) to values kept in a slab. Every key is on one of
//! two lists: `recent`, least recently used first, which eviction takes from, and `kept`,
//! where eviction sets aside a key that must not be forgotten yet (a block in force).
//! Changing a key ([`get_mut`](Lru::get_mut)) marks it used: it moves to the end of
//! `recent` with the caller's tick, a number that grows with every use, so that the ticks
//! of the heads of several maps say which of their keys was used longest ago. Lookups,
//! insertions, removals and evictions take constant time.

use super::hash::IdMap;

/// No slot.
const NIL: u32 = u32::MAX;

/// The list a slot is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum List {
    /// Candidates for eviction, least recently used first.
    Recent = 0,
    /// Keys set aside by eviction until they may go.
    Kept = 1,
}

#[derive(Debug, Clone, Copy)]
struct Ends {
    head: u32,
    tail: u32,
}

impl Default for Ends {
    fn default() -> Self {
        Self {
            head: NIL,
            tail: NIL,
        }
    }
}

#[derive(Debug)]
struct Slot<V> {
    id: u64,
    /// The tick of its last use.
    used: u64,
    prev: u32,
    /// The next slot on its list, or the next free slot.
    next: u32,
    /// `None` for a free slot.
    list: Option<List>,
    value: V,
}

/// What eviction did with the least recently used key.
#[derive(Debug)]
pub(crate) enum Oldest<V> {
    /// Forgot it.
    Evicted(V),
    /// Set it aside: it must stay until this time (Unix seconds).
    Kept(u64),
}

/// A map from ids to values that knows which was used longest ago.
#[derive(Debug)]
pub(crate) struct Lru<V> {
    index: IdMap<u32>,
    slots: Vec<Slot<V>>,
    /// The first free slot; free slots are chained through `next`.
    free: u32,
    lists: [Ends; 2],
}

impl<V> Default for Lru<V> {
    fn default() -> Self {
        Self {
            index: IdMap::default(),
            slots: Vec::new(),
            free: NIL,
            lists: [Ends::default(); 2],
        }
    }
}

impl<V: Default> Lru<V> {
    /// How many keys it holds.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether it holds `id`.
    pub fn contains(&self, id: u64) -> bool {
        self.index.contains_key(&id)
    }

    /// The value of `id`, without marking it used.
    pub fn get(&self, id: u64) -> Option<&V> {
        let i = *self.index.get(&id)?;
        Some(&self.slots[i as usize].value)
    }

    /// The value of `id`, marked used at `tick`.
    pub fn get_mut(&mut self, id: u64, tick: u64) -> Option<&mut V> {
        let i = *self.index.get(&id)?;
        self.touch(i, tick);
        Some(&mut self.slots[i as usize].value)
    }

    /// The value of `id`, marked used at `tick`; a default one when there was none.
    pub fn get_or_default(&mut self, id: u64, tick: u64) -> &mut V {
        match self.index.get(&id) {
            Some(&i) => {
                self.touch(i, tick);
                &mut self.slots[i as usize].value
            }
            None => self.insert(id, V::default(), tick),
        }
    }

    /// Adds `id` (or replaces its value), marked used at `tick`.
    pub fn insert(&mut self, id: u64, value: V, tick: u64) -> &mut V {
        let i = match self.index.get(&id) {
            Some(&i) => {
                self.touch(i, tick);
                i
            }
            None => {
                let slot = Slot {
                    id,
                    used: tick,
                    prev: NIL,
                    next: NIL,
                    list: None,
                    value: V::default(),
                };
                let i = if self.free == NIL {
                    self.slots.push(slot);
                    u32::try_from(self.slots.len() - 1)
                        .ok()
                        .filter(|i| *i != NIL)
                        .expect("the config caps tracked keys far below 2^32")
                } else {
                    let i = self.free;
                    self.free = self.slots[i as usize].next;
                    self.slots[i as usize] = slot;
                    i
                };
                self.index.insert(id, i);
                self.push_back(i, List::Recent);
                i
            }
        };
        let slot = &mut self.slots[i as usize];
        slot.value = value;
        &mut slot.value
    }

    /// Forgets `id`; returns its value.
    pub fn remove(&mut self, id: u64) -> Option<V> {
        let i = self.index.remove(&id)?;
        self.unlink(i);
        let slot = &mut self.slots[i as usize];
        slot.next = self.free;
        self.free = i;
        Some(std::mem::take(&mut slot.value))
    }

    /// Keeps only the values `keep` says to.
    pub fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        for i in 0..self.slots.len() {
            let slot = &mut self.slots[i];
            if slot.list.is_some() && !keep(&mut slot.value) {
                let id = slot.id;
                self.remove(id);
            }
        }
    }

    /// Forgets everything.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// Every value, in no particular order.
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.slots
            .iter()
            .filter(|s| s.list.is_some())
            .map(|s| &s.value)
    }

    /// Every value, to change, in no particular order; none is marked used.
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.slots
            .iter_mut()
            .filter(|s| s.list.is_some())
            .map(|s| &mut s.value)
    }

    /// The tick of the least recently used key that eviction may consider.
    pub fn oldest(&self) -> Option<u64> {
        let head = self.lists[List::Recent as usize].head;
        (head != NIL).then(|| self.slots[head as usize].used)
    }

    /// Evicts the least recently used key, or sets it aside when `keep_until` gives the
    /// time until which it must stay. `None` when no key is left to consider.
    pub fn evict_oldest(&mut self, keep_until: impl Fn(&V) -> Option<u64>) -> Option<Oldest<V>> {
        let head = self.lists[List::Recent as usize].head;
        if head == NIL {
            return None;
        }
        let slot = &self.slots[head as usize];
        if let Some(until) = keep_until(&slot.value) {
            self.unlink(head);
            self.push_back(head, List::Kept);
            return Some(Oldest::Kept(until));
        }
        let id = slot.id;
        self.remove(id).map(Oldest::Evicted)
    }

    /// Gives the keys set aside that may now go back to eviction, at the least recently
    /// used end, in the order they were set aside. Returns the earliest time until which
    /// one of those still kept must stay.
    pub fn release(&mut self, keep_until: impl Fn(&V) -> Option<u64>) -> Option<u64> {
        let mut next = None;
        let mut i = self.lists[List::Kept as usize].tail;
        while i != NIL {
            let prev = self.slots[i as usize].prev;
            match keep_until(&self.slots[i as usize].value) {
                Some(until) => next = Some(next.map_or(until, |n: u64| n.min(until))),
                None => {
                    self.unlink(i);
                    self.push_front(i, List::Recent);
                }
            }
            i = prev;
        }
        next
    }

    fn touch(&mut self, i: u32, tick: u64) {
        let recent = self.lists[List::Recent as usize];
        let slot = &mut self.slots[i as usize];
        slot.used = tick;
        if slot.list != Some(List::Recent) || recent.tail != i {
            self.unlink(i);
            self.push_back(i, List::Recent);
        }
    }

    fn unlink(&mut self, i: u32) {
        let slot = &mut self.slots[i as usize];
        let Some(list) = slot.list.take() else {
            return;
        };
        let (prev, next) = (slot.prev, slot.next);
        slot.prev = NIL;
        slot.next = NIL;
        let ends = &mut self.lists[list as usize];
        if prev == NIL {
            ends.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        let ends = &mut self.lists[list as usize];
        if next == NIL {
            ends.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    fn push_back(&mut self, i: u32, list: List) {
        let ends = &mut self.lists[list as usize];
        let tail = ends.tail;
        ends.tail = i;
        if tail == NIL {
            ends.head = i;
        } else {
            self.slots[tail as usize].next = i;
        }
        let slot = &mut self.slots[i as usize];
        slot.prev = tail;
        slot.next = NIL;
        slot.list = Some(list);
    }

    fn push_front(&mut self, i: u32, list: List) {
        let ends = &mut self.lists[list as usize];
        let head = ends.head;
        ends.head = i;
        if head == NIL {
            ends.tail = i;
        } else {
            self.slots[head as usize].prev = i;
        }
        let slot = &mut self.slots[i as usize];
        slot.prev = NIL;
        slot.next = head;
        slot.list = Some(list);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ids in eviction order, emptying the map (nothing is kept).
    fn drain(lru: &mut Lru<u64>) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(Oldest::Evicted(v)) = lru.evict_oldest(|_| None) {
            out.push(v);
        }
        out
    }

    #[test]
    fn eviction_takes_the_least_recently_used_first() {
        let mut lru = Lru::default();
        for id in 1..=5 {
            lru.insert(id, id, id);
        }
        assert_eq!(lru.get_mut(2, 6), Some(&mut 2));
        assert_eq!(lru.get_mut(1, 7), Some(&mut 1));
        assert_eq!(lru.get(3), Some(&3), "a look does not count as a use");
        assert_eq!(lru.remove(4), Some(4));
        assert_eq!(lru.oldest(), Some(3));
        lru.insert(6, 6, 8);
        assert_eq!(lru.len(), 5);
        assert_eq!(drain(&mut lru), [3, 5, 2, 1, 6]);
        assert_eq!(lru.len(), 0);
        assert_eq!(lru.oldest(), None);
    }

    #[test]
    fn freed_slots_are_reused() {
        let mut lru = Lru::default();
        for round in 0..10 {
            for id in 0..100 {
                lru.insert(round * 1000 + id, id, round * 100 + id);
            }
            lru.retain(|v| *v % 2 == 0);
            assert_eq!(lru.len(), 50);
            drain(&mut lru);
        }
        assert_eq!(lru.slots.len(), 100);
    }

    #[test]
    fn kept_keys_are_passed_over_until_released() {
        let mut lru = Lru::default();
        for id in 1..=4 {
            lru.insert(id, id, id);
        }
        // 1 and 3 must stay until 50 and 70.
        let keep = |now: u64| {
            move |v: &u64| {
                [(1, 50), (3, 70)]
                    .iter()
                    .find(|(k, u)| k == v && *u > now)
                    .map(|(_, u)| *u)
            }
        };
        assert!(matches!(lru.evict_oldest(keep(0)), Some(Oldest::Kept(50))));
        assert!(matches!(
            lru.evict_oldest(keep(0)),
            Some(Oldest::Evicted(2))
        ));
        assert!(matches!(lru.evict_oldest(keep(0)), Some(Oldest::Kept(70))));
        assert_eq!(lru.oldest(), Some(4));
        assert_eq!(lru.release(keep(0)), Some(50), "nothing may go yet");
        assert_eq!(lru.release(keep(60)), Some(70), "1 may go, 3 not yet");
        assert_eq!(
            lru.oldest(),
            Some(1),
            "released at the least recently used end"
        );
        // A kept key that is used again is back among the recent ones.
        assert_eq!(lru.get_mut(3, 9), Some(&mut 3));
        assert_eq!(lru.release(keep(60)), None);
        assert_eq!(drain(&mut lru), [1, 4, 3]);
    }
}
