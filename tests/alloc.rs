//! Heap allocations and event memory in the steady state of one long SMTP session.
//!
//! A counting global allocator counts every allocation in this test binary. The server
//! runs on its own thread (the embedded [`QqMx`]); the client on the test thread uses a
//! blocking socket, fixed buffers and static command lines, so it allocates nothing while
//! counting and every allocation counted is the server's. One connection sends many
//! messages; after a warm-up (buffers grown, first-time caches filled), the count over a
//! window of messages divided by their number is the steady state.
//!
//! Counting allocations is deterministic, unlike time, so the figures are asserted
//! against named budgets: a change that adds an allocation per command or per message
//! fails here. `cargo test --release --test alloc -- --nocapture` prints the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use qqmx::QqMx;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);

// SAFETY: every call is forwarded to the system allocator unchanged; the counters are
// atomics and do not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(layout.size() as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A reallocation is an allocation: it may copy, and it costs a call.
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        ALLOCATED_BYTES.fetch_add(new_size as u64, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// The allocations a steady-state `NOOP` may make: none. The line is answered where it
/// was read, the reply rendered into a reused buffer, and both events are written into
/// the store's compact log from borrowed data (their texts are ids into its table of
/// repeated texts by then). The log grows by chunks and its index by doubling, which
/// rounds to 0 per command.
const NOOP_BUDGET: u64 = 0;

/// The allocations one steady-state message may make (MAIL, RCPT, DATA, the data and its
/// end); measured 14 + 15 + 4 + 30 when this budget was set. No event allocates: each is
/// written into the compact log from what its recorder holds. What remains:
///
/// - MAIL: smtp-proto's owned request (the address), the sender held for the
///   transaction, SPF (the lookups of the authenticator, the check's domain and reason),
///   and the policy's decision (the address parsed for the syntax check, the quota keys,
///   the detail text it writes);
/// - RCPT: smtp-proto's owned request, the recipient held for the transaction and its
///   list, and the policy's decision (the address parsed and canonicalised for the
///   directory, the lower-cased sender and domain of the blacklist lookups, the quota
///   keys, the detail text `<a@b> exists`);
/// - DATA: the body buffer, the quota keys and the decision's detail;
/// - the end of data: DKIM and DMARC (the parsed message, the DNS names looked up, the
///   report with its own copy of the SPF check), the quota keys (checked, then counted),
///   the decision's detail, the `Authentication-Results` value, and the stored message
///   (the shared `Message`, its `Arc<[u8]>` source, the MX name, the HELO name).
///
/// A change that lowers the work per message lowers the figure, and this budget with it;
/// one that adds an allocation fails here.
const MESSAGE_BUDGET: u64 = 63;

/// Event memory (the store's `held().event_bytes`) one delivered message may hold:
/// measured 219 bytes for its 14 events when this budget was set, about 15 bytes each:
/// the record (the time from its chunk's first, session, transaction, client id, kind,
/// and the fields, texts seen before as ids) and its 4-byte place in the chunk's index.
/// The time is in nanoseconds, 4 or 5 bytes here; it takes a byte more once a chunk
/// spans 17 seconds of real time, two more past 36 minutes: the budget leaves room for
/// that on a slow machine.
const EVENT_BYTES_BUDGET: u64 = 250 + 2 * 14;

/// Warm-up messages, before anything is counted.
const WARM_UP: u64 = 50;
/// Messages (and NOOPs) counted.
const WINDOW: u64 = 400;

/// Messages counted: [`WINDOW`], or `QQMX_ALLOC_MESSAGES` (to profile the session with
/// two different numbers and take the difference).
fn window() -> u64 {
    std::env::var("QQMX_ALLOC_MESSAGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(WINDOW)
}

struct Client {
    stream: TcpStream,
    buf: [u8; 4096],
    /// Bytes of `buf` read but not yet consumed.
    len: usize,
}

impl Client {
    fn connect(server: &QqMx) -> Self {
        let stream = TcpStream::connect(server.addr()).expect("connect");
        // Only a bound on a hang; a healthy server answers at once.
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .expect("timeout");
        stream.set_nodelay(true).expect("nodelay");
        let mut client = Self {
            stream,
            buf: [0; 4096],
            len: 0,
        };
        client.expect(b"220");
        client
    }

    /// Reads one whole reply (its last line has a space after the code) and checks its
    /// code, without allocating.
    fn expect(&mut self, code: &[u8; 3]) {
        loop {
            if let Some(end) = self.buf[..self.len].windows(2).position(|w| w == b"\r\n") {
                let line_end = end + 2;
                assert_eq!(
                    &self.buf[..3],
                    code,
                    "reply {:?}",
                    String::from_utf8_lossy(&self.buf[..line_end])
                );
                let last = self.buf.get(3) == Some(&b' ');
                self.buf.copy_within(line_end..self.len, 0);
                self.len -= line_end;
                if last {
                    return;
                }
                continue;
            }
            let n = self.stream.read(&mut self.buf[self.len..]).expect("read");
            assert!(n > 0, "the server closed the connection");
            self.len += n;
        }
    }

    fn send(&mut self, line: &[u8], code: &[u8; 3]) {
        self.stream.write_all(line).expect("write");
        self.expect(code);
    }

    /// Sends one message; adds the allocations made up to each reply to `counts` (MAIL,
    /// RCPT, DATA, the data).
    fn message(&mut self, data: &[u8], counts: &mut [u64; 4]) {
        let steps: [(&[u8], &[u8; 3]); 4] = [
            (b"MAIL FROM:<sender@example.org>\r\n", b"250"),
            (b"RCPT TO:<10001@qq.com>\r\n", b"250"),
            (b"DATA\r\n", b"354"),
            (data, b"250"),
        ];
        for (count, (line, code)) in counts.iter_mut().zip(steps) {
            let before = allocations();
            self.send(line, code);
            *count += allocations() - before;
        }
    }
}

/// The message of the benchmark's default load: about 1 KB, like `smtp-source -l 1024`.
fn message_data() -> Vec<u8> {
    let mut data = b"From: <sender@example.org>\r\nTo: <10001@qq.com>\r\n\
        Subject: allocation count\r\n\r\n"
        .to_vec();
    for _ in 0..16 {
        data.extend_from_slice(&[b'X'; 62]);
        data.extend_from_slice(b"\r\n");
    }
    data.extend_from_slice(b".\r\n");
    data
}

fn allocations() -> u64 {
    ALLOCATIONS.load(Ordering::Relaxed)
}

#[test]
fn a_long_session_allocates_within_its_budget() {
    let server = QqMx::builder().no_limits().start();
    let data = message_data();
    let mut client = Client::connect(&server);
    client.send(b"HELO client.example.org\r\n", b"250");
    let mut counts = [0; 4];
    for _ in 0..WARM_UP {
        client.message(&data, &mut counts);
    }
    for _ in 0..WARM_UP {
        client.send(b"NOOP\r\n", b"250");
    }

    let messages = window();
    let before = allocations();
    let held = server.store().held();
    counts = [0; 4];
    for _ in 0..messages {
        client.message(&data, &mut counts);
    }
    let per_message = (allocations() - before) / messages;
    let per_step = counts.map(|n| n / messages);
    let after = server.store().held();
    let events = (after.events - held.events) as u64;
    let event_bytes = (after.event_bytes - held.event_bytes) as u64;

    let before = allocations();
    for _ in 0..WINDOW {
        client.send(b"NOOP\r\n", b"250");
    }
    let per_noop = (allocations() - before) / WINDOW;
    client.send(b"QUIT\r\n", b"221");
    println!(
        "of which: MAIL {}, RCPT {}, DATA {}, the data and its end {}",
        per_step[0], per_step[1], per_step[2], per_step[3],
    );

    println!(
        "steady state: {per_message} allocations per message, {per_noop} per NOOP; \
         {:.1} events and {} event bytes per message ({} per event)",
        events as f64 / messages as f64,
        event_bytes / messages,
        event_bytes / events.max(1),
    );
    assert_eq!(
        server.store().since_start().messages_accepted,
        WARM_UP + messages,
        "every message was accepted"
    );
    assert_eq!(
        per_noop, NOOP_BUDGET,
        "{per_noop} allocations per NOOP, budget {NOOP_BUDGET}"
    );
    assert!(
        per_message <= MESSAGE_BUDGET,
        "{per_message} allocations per message, budget {MESSAGE_BUDGET}"
    );
    assert!(
        event_bytes / messages <= EVENT_BYTES_BUDGET,
        "{} event bytes per message, budget {EVENT_BYTES_BUDGET}",
        event_bytes / messages
    );
}
