//! The event log: compact records (see [`codec`](super::codec)) in a ring of chunks.
//!
//! A chunk is a byte buffer of up to [`CHUNK_BYTES`] with the end of each record in it.
//! Records are appended to the newest chunk and evicted from the oldest; a chunk emptied
//! by eviction is kept for the next one to fill, so that a log at its cap allocates
//! nothing. The records hold consecutive sequence numbers, so the one of a record is its
//! chunk's first plus its place there.

use std::collections::VecDeque;
use std::net::IpAddr;

use super::codec::{EventRef, Header, Tables, Writer, nanos};
use super::decode::Reader;
use super::tally::Counted;
use crate::event::Event;

/// A chunk takes records up to this many bytes (a larger record has one of its own).
/// Its buffer grows by doubling to this size, and is kept for the next chunk once its
/// records are evicted.
const CHUNK_BYTES: usize = 64 * 1024;

/// What the log counts for a record beside its bytes: its end in the chunk's index.
const INDEX_BYTES: usize = std::mem::size_of::<u32>();

struct Chunk {
    /// The sequence number of the chunk's first record (evicted or not).
    first_seq: u64,
    /// The time records count from, in nanoseconds from the Unix epoch.
    base: i128,
    bytes: Vec<u8>,
    /// Where each record ends in `bytes`.
    ends: Vec<u32>,
    /// Records before this one are evicted.
    front: usize,
}

impl Chunk {
    fn range(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        start..self.ends[i] as usize
    }

    fn next_seq(&self) -> u64 {
        self.first_seq + self.ends.len() as u64
    }
}

/// The records, oldest first, and the tables they refer to.
pub(super) struct Log {
    chunks: VecDeque<Chunk>,
    /// An emptied chunk, kept with its buffers for the next.
    spare: Option<Chunk>,
    tables: Tables,
    /// The record being written, reused.
    record: Vec<u8>,
    max_event_bytes: usize,
    len: usize,
}

impl Log {
    pub(super) fn new(max_event_bytes: usize) -> Self {
        Self {
            chunks: VecDeque::new(),
            spare: None,
            tables: Tables::new(max_event_bytes),
            record: Vec::new(),
            max_event_bytes,
            len: 0,
        }
    }

    /// Records held.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The sequence number of the oldest record held.
    pub(super) fn first_seq(&self) -> Option<u64> {
        self.chunks
            .front()
            .map(|chunk| chunk.first_seq + chunk.front as u64)
    }

    /// Appends record `seq` (one above the newest held, or any number in an empty log) and
    /// returns the bytes it counts for.
    pub(super) fn push(&mut self, seq: u64, header: &Header, entry: &EventRef<'_>) -> usize {
        // Written aside first, so that a chunk never grows past its size for a record
        // that belongs in the next one.
        let mut record = std::mem::take(&mut self.record);
        record.clear();
        let back = self
            .chunks
            .back()
            .map(|c| (c.next_seq(), c.base, c.bytes.len()));
        let fits = match back {
            Some((next, base, len)) if next == seq => {
                self.write(&mut record, header, base, entry);
                len + record.len() <= CHUNK_BYTES
            }
            _ => false,
        };
        if !fits {
            let mut chunk = self.spare.take().unwrap_or_else(|| Chunk {
                first_seq: 0,
                base: 0,
                bytes: Vec::new(),
                ends: Vec::new(),
                front: 0,
            });
            chunk.first_seq = seq;
            chunk.base = nanos(header.at);
            chunk.front = 0;
            record.clear();
            self.write(&mut record, header, chunk.base, entry);
            self.chunks.push_back(chunk);
        }
        let chunk = self
            .chunks
            .back_mut()
            .expect("a chunk was just made when none could take the record");
        chunk.bytes.extend_from_slice(&record);
        chunk.ends.push(
            u32::try_from(chunk.bytes.len()).expect("a chunk holds records far smaller than 4 GiB"),
        );
        self.len += 1;
        let bytes = record.len() + INDEX_BYTES;
        self.record = record;
        bytes
    }

    fn write(&mut self, out: &mut Vec<u8>, header: &Header, base: i128, entry: &EventRef<'_>) {
        Writer {
            out,
            tables: &mut self.tables,
        }
        .record(header, base, entry);
    }

    /// Takes the oldest record out: its sequence number, the bytes it counted for, and
    /// what the store's counts take from it.
    pub(super) fn pop(&mut self) -> Option<(u64, usize, IpAddr, Counted<'static>)> {
        let chunk = self.chunks.front_mut()?;
        let i = chunk.front;
        let range = chunk.range(i);
        let bytes = range.len() + INDEX_BYTES;
        let (client, counted) = Reader {
            bytes: &chunk.bytes[range],
            tables: &self.tables,
        }
        .counted(chunk.base)
        .expect("a record the log wrote reads back");
        let seq = chunk.first_seq + i as u64;
        chunk.front += 1;
        self.len -= 1;
        if chunk.front == chunk.ends.len()
            && let Some(mut empty) = self.chunks.pop_front()
        {
            empty.bytes.clear();
            empty.ends.clear();
            self.spare = Some(empty);
        }
        Some((seq, bytes, client, counted))
    }

    /// Forgets every record and the tables.
    pub(super) fn clear(&mut self) {
        *self = Self::new(self.max_event_bytes);
    }

    fn decode(&self, chunk: &Chunk, i: usize) -> Event {
        Reader {
            bytes: &chunk.bytes[chunk.range(i)],
            tables: &self.tables,
        }
        .event(chunk.first_seq + i as u64, chunk.base)
        .expect("a record the log wrote reads back")
    }

    /// The events held from the `start`th on (0 for the oldest), oldest first, decoded as
    /// they are taken.
    pub(super) fn iter_from(&self, start: usize) -> impl Iterator<Item = Event> + '_ {
        // Chunks hold consecutive sequence numbers: the one to start at is found by a
        // binary search.
        let seq = self.first_seq().unwrap_or(0) + start as u64;
        let first = self.chunks.partition_point(|chunk| chunk.next_seq() <= seq);
        self.chunks
            .range(first..)
            .flat_map(move |chunk| {
                let from = usize::try_from(seq.saturating_sub(chunk.first_seq))
                    .unwrap_or(usize::MAX)
                    .max(chunk.front)
                    .min(chunk.ends.len());
                (from..chunk.ends.len()).map(move |i| (chunk, i))
            })
            .map(|(chunk, i)| self.decode(chunk, i))
    }

    /// The events held, newest first, decoded as they are taken.
    pub(super) fn iter_back(&self) -> impl Iterator<Item = Event> + '_ {
        self.chunks
            .iter()
            .rev()
            .flat_map(|chunk| {
                (chunk.front..chunk.ends.len())
                    .rev()
                    .map(move |i| (chunk, i))
            })
            .map(|(chunk, i)| self.decode(chunk, i))
    }
}
