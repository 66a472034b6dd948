//! Message data as it streams in: the strict end-of-data scanner, and the body it fills,
//! held against the message-size limit and the server's in-flight byte budget.
//!
//! Only `<CRLF>.<CRLF>` ends the data (RFC 5321 4.1.1.4). Every look-alike (`<LF>.<LF>`,
//! `<CR>.<CR>`, `<CRLF>.<LF>`, `<CRLF>.<CR><CRLF>`, ...) is message content, so that a
//! client cannot hide a second transaction inside a message ("SMTP smuggling"). A line
//! starts only after CRLF (or at the start of the data): a bare CR or LF is content and
//! starts nothing. A line that starts with a dot loses that dot (dot-unstuffing, RFC 5321
//! 4.5.2) unless it is the end of the data.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Where the scanner is in the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Inside a line.
    Text,
    /// After a CR inside a line (already passed on as content).
    Cr,
    /// At the start of a line: after CRLF, or at the start of the data.
    LineStart,
    /// After a dot at the start of a line (held back).
    Dot,
    /// After `.` and CR at the start of a line (both held back).
    DotCr,
}

/// Finds the end of message data and undoes dot-stuffing.
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    state: State,
}

impl Default for Scanner {
    fn default() -> Self {
        Self::new()
    }
}

impl Scanner {
    /// A scanner at the start of the data, which is the start of a line.
    pub(crate) fn new() -> Self {
        Self {
            state: State::LineStart,
        }
    }

    /// Scans `input`, passing the content to `sink` in slices. Returns how many bytes
    /// of `input` were used and whether the data ended (with the `.CRLF` used, not
    /// passed on). Bytes after the end are left for the commands that follow.
    pub(crate) fn feed(&mut self, input: &[u8], sink: &mut impl FnMut(&[u8])) -> (usize, bool) {
        let mut pos = 0;
        while pos < input.len() {
            match self.state {
                State::Text => {
                    // The fast path: whole lines at once, passed on in one slice, up to a
                    // CR after which the scanner must look closer (a line that starts
                    // with a dot, or the end of the input) or to the end of the input.
                    // `CRLF` and then anything but a dot is what the states below would
                    // pass on unchanged, ending in this state.
                    let start = pos;
                    loop {
                        let Some(cr) = memchr::memchr(b'\r', &input[pos..]) else {
                            sink(&input[start..]);
                            pos = input.len();
                            break;
                        };
                        let cr = pos + cr;
                        if input.get(cr + 1) == Some(&b'\n')
                            && input.get(cr + 2).is_some_and(|&b| b != b'.')
                        {
                            pos = cr + 2;
                            continue;
                        }
                        sink(&input[start..=cr]);
                        pos = cr + 1;
                        self.state = State::Cr;
                        break;
                    }
                }
                State::Cr => {
                    let byte = input[pos];
                    sink(&input[pos..=pos]);
                    pos += 1;
                    self.state = match byte {
                        b'\n' => State::LineStart,
                        b'\r' => State::Cr,
                        _ => State::Text,
                    };
                }
                State::LineStart => {
                    if input[pos] == b'.' {
                        pos += 1;
                        self.state = State::Dot;
                    } else {
                        self.state = State::Text;
                    }
                }
                State::Dot => {
                    if input[pos] == b'\r' {
                        pos += 1;
                        self.state = State::DotCr;
                    } else {
                        // A line that starts with a dot and goes on: the dot is dropped.
                        self.state = State::Text;
                    }
                }
                State::DotCr => {
                    if input[pos] == b'\n' {
                        self.state = State::LineStart;
                        return (pos + 1, true);
                    }
                    // `.CR` and then anything but LF: the dot is dropped, the CR is
                    // content, and the byte after it is read as after any CR.
                    sink(b"\r");
                    self.state = State::Cr;
                }
            }
        }
        (pos, false)
    }
}

/// Bytes of message data held by all sessions of a server, against
/// `limits.max_inflight_bytes`. It outlives config reloads.
#[derive(Debug, Default)]
pub(crate) struct Inflight {
    held: AtomicU64,
}

impl Inflight {
    /// Bytes held now.
    #[cfg(test)]
    pub(crate) fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }
}

/// A share of the in-flight budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct Charge {
    inflight: Arc<Inflight>,
    bytes: u64,
}

impl Charge {
    /// An empty share of `inflight`.
    pub(crate) fn new(inflight: Arc<Inflight>) -> Self {
        Self { inflight, bytes: 0 }
    }

    /// Takes `more` bytes of the budget, if all of them fit under `budget`.
    pub(crate) fn grow(&mut self, more: u64, budget: u64) -> bool {
        let taken = self
            .inflight
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(more).filter(|&total| total <= budget)
            });
        if taken.is_ok() {
            self.bytes += more;
        }
        taken.is_ok()
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.inflight.held.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// A complete message body, still counted against the in-flight budget.
#[derive(Debug)]
pub(crate) struct Body {
    pub(crate) bytes: Vec<u8>,
    /// Given back once the body is stored or dropped.
    pub(crate) charge: Charge,
}

/// Why a message is read to its end and thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dropped {
    /// Over `limits.max_message_size`.
    TooLarge,
    /// Over the in-flight budget, `limits.max_inflight_bytes`.
    Busy,
}

/// Message data being read: the scanner and what it has passed on so far.
#[derive(Debug)]
pub(crate) struct Incoming {
    scanner: Scanner,
    /// The content so far; empty once dropped.
    body: Body,
    /// Content bytes received, kept or not.
    received: u64,
    dropped: Option<Dropped>,
    max_size: u64,
    budget: u64,
}

/// How the data of an [`Incoming`] ended.
#[derive(Debug)]
pub(crate) enum Ended {
    Complete(Body),
    /// Thrown away; `received` content bytes were read.
    Dropped {
        why: Dropped,
        received: u64,
    },
}

/// The smallest amount the body grows by at a time, so that the budget is not
/// asked about every read.
const MIN_GROWTH: usize = 16 * 1024;

impl Incoming {
    /// Starts reading a message of at most `max_size` bytes, with room for `expected`
    /// bytes taken from the budget at once; `None` when the budget has no such room.
    pub(crate) fn start(
        inflight: Arc<Inflight>,
        budget: u64,
        max_size: u64,
        expected: u64,
    ) -> Option<Self> {
        // Never room for more than the limit, even for a tiny limit.
        let initial = expected.max(MIN_GROWTH as u64).min(max_size);
        let capacity = usize::try_from(initial).ok()?;
        let mut charge = Charge::new(inflight);
        if !charge.grow(initial, budget) {
            return None;
        }
        Some(Self {
            scanner: Scanner::new(),
            body: Body {
                bytes: Vec::with_capacity(capacity),
                charge,
            },
            received: 0,
            dropped: None,
            max_size,
            budget,
        })
    }

    /// Reads from `input`: the bytes used, and the message if its data ended.
    pub(crate) fn feed(&mut self, input: &[u8]) -> (usize, Option<Ended>) {
        let (used, done) = {
            let Self {
                scanner,
                body,
                received,
                dropped,
                max_size,
                budget,
            } = self;
            scanner.feed(input, &mut |content| {
                *received += content.len() as u64;
                if dropped.is_none() {
                    *dropped = keep(body, content, *max_size, *budget);
                }
            })
        };
        if !done {
            return (used, None);
        }
        let ended = match self.dropped {
            None => {
                let charge = Charge::new(self.body.charge.inflight.clone());
                let empty = Body {
                    bytes: Vec::new(),
                    charge,
                };
                Ended::Complete(std::mem::replace(&mut self.body, empty))
            }
            Some(why) => Ended::Dropped {
                why,
                received: self.received,
            },
        };
        (used, Some(ended))
    }
}

/// Adds `content` to `body`, growing its share of the budget as its capacity grows;
/// `Some` when the body must be thrown away instead (and then it is, at once).
fn keep(body: &mut Body, content: &[u8], max_size: u64, budget: u64) -> Option<Dropped> {
    let bytes = &mut body.bytes;
    let wanted = bytes.len() + content.len();
    let why = if wanted as u64 > max_size {
        Some(Dropped::TooLarge)
    } else if wanted > bytes.capacity() {
        let max = usize::try_from(max_size).unwrap_or(usize::MAX);
        let target = (bytes.capacity() * 2).max(wanted).max(MIN_GROWTH).min(max);
        let more = target - bytes.capacity();
        if body.charge.grow(more as u64, budget) {
            bytes.reserve_exact(target - bytes.len());
            None
        } else {
            Some(Dropped::Busy)
        }
    } else {
        None
    };
    if why.is_some() {
        // Nothing of a dropped message is held.
        *bytes = Vec::new();
        let inflight = body.charge.inflight.clone();
        body.charge = Charge::new(inflight);
    } else {
        bytes.extend_from_slice(content);
    }
    why
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `data` in one piece and byte by byte; both must agree. Returns the content
    /// and what is left after the end (`None` if the data did not end).
    fn scan(data: &[u8]) -> (Vec<u8>, Option<Vec<u8>>) {
        let whole = {
            let mut scanner = Scanner::new();
            let mut content = Vec::new();
            let (used, done) = scanner.feed(data, &mut |c| content.extend_from_slice(c));
            (content, done.then(|| data[used..].to_vec()))
        };
        let mut scanner = Scanner::new();
        let mut content = Vec::new();
        let mut rest = None;
        for (i, byte) in data.iter().enumerate() {
            let (used, done) = scanner.feed(std::slice::from_ref(byte), &mut |c| {
                content.extend_from_slice(c)
            });
            assert_eq!(used, 1);
            if done {
                rest = Some(data[i + 1..].to_vec());
                break;
            }
        }
        assert_eq!(whole, (content.clone(), rest.clone()), "split reads differ");
        (content, rest)
    }

    #[test]
    fn only_crlf_dot_crlf_ends_the_data() {
        assert_eq!(
            scan(b"a\r\nb\r\n.\r\nQUIT\r\n"),
            (b"a\r\nb\r\n".to_vec(), Some(b"QUIT\r\n".to_vec()))
        );
        assert_eq!(scan(b".\r\n"), (Vec::new(), Some(Vec::new())));
        for fake in [
            &b"a\n.\nb"[..],
            b"a\r.\rb",
            b"a\r\n.\rb",
            b"a\r.\r\nb",
            b"a\n.\r\nb",
            b"a\r\n.\nb",
            b"a\r\n\x00.\r\nb",
            b"a\r\n.\r\r\nb",
            b"a\n.\r\nb",
            b"a\r\r\n.\n",
        ] {
            let (_, rest) = scan(fake);
            assert_eq!(rest, None, "{fake:?} must not end the data");
        }
    }

    #[test]
    fn dots_are_unstuffed_only_at_the_start_of_a_line() {
        assert_eq!(scan(b"..a\r\n.\r\n").0, b".a\r\n");
        assert_eq!(scan(b"a\r\n..\r\n.\r\n").0, b"a\r\n.\r\n");
        assert_eq!(scan(b"a.\r\nb\n..c\r\n.\r\n").0, b"a.\r\nb\n..c\r\n");
        assert_eq!(scan(b"a\r\n.\r\r\n.\r\n").0, b"a\r\n\r\r\n");
        assert_eq!(scan(b"a\r\n.\nb\r\n.\r\n").0, b"a\r\n\nb\r\n");
    }

    #[test]
    fn an_oversize_message_is_read_to_its_end_and_dropped() {
        let inflight = Arc::new(Inflight::default());
        let mut incoming =
            Incoming::start(inflight.clone(), u64::MAX, 5, 0).expect("an unlimited budget");
        let (used, ended) = incoming.feed(b"12345\r\n");
        assert_eq!((used, ended.is_none()), (7, true));
        assert!(
            incoming.body.bytes.capacity() == 0,
            "nothing is held past the limit"
        );
        let (_, ended) = incoming.feed(b".\r\n");
        assert!(matches!(
            ended,
            Some(Ended::Dropped {
                why: Dropped::TooLarge,
                received: 7
            })
        ));
        drop(incoming);
        assert_eq!(inflight.held(), 0);

        let mut exact = Incoming::start(inflight.clone(), u64::MAX, 5, 0).expect("budget");
        let (_, ended) = exact.feed(b"123\r\n.\r\n");
        let Some(Ended::Complete(body)) = ended else {
            panic!("a message of exactly the limit is kept");
        };
        assert_eq!(body.bytes, b"123\r\n");
    }

    #[test]
    fn the_budget_bounds_what_all_messages_hold() {
        let inflight = Arc::new(Inflight::default());
        let budget = 3 * MIN_GROWTH as u64;
        let mut first =
            Incoming::start(inflight.clone(), budget, u64::MAX, 0).expect("room for one");
        assert!(
            Incoming::start(
                inflight.clone(),
                budget,
                u64::MAX,
                2 * MIN_GROWTH as u64 + 1
            )
            .is_none()
        );
        let mut second =
            Incoming::start(inflight.clone(), budget, u64::MAX, 0).expect("room for two");
        let mut big = vec![b'x'; 2 * MIN_GROWTH - 2];
        big.extend_from_slice(b"\r\n");
        let (_, ended) = first.feed(&big);
        assert!(ended.is_none());
        assert!(inflight.held() <= budget);
        let (_, ended) = second.feed(&big);
        assert!(ended.is_none());
        let (_, ended) = second.feed(b".\r\n");
        assert!(matches!(
            ended,
            Some(Ended::Dropped {
                why: Dropped::Busy,
                ..
            })
        ));
        let (_, ended) = first.feed(b".\r\n");
        let Some(Ended::Complete(body)) = ended else {
            panic!("the first message fits");
        };
        assert_eq!(body.bytes.len(), 2 * MIN_GROWTH);
        drop((first, second));
        assert!(inflight.held() > 0, "the complete body is still counted");
        drop(body);
        assert_eq!(inflight.held(), 0);
    }
}
