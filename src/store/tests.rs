//! The store's tests.

use std::time::SystemTime;

use super::*;
use crate::event::{Command, Verb};
use crate::units::Stage;

fn message(id: u64, bytes: usize) -> Message {
    Message {
        id,
        session: 1,
        mx: "mx1".into(),
        received_at: SystemTime::UNIX_EPOCH,
        client: "127.0.0.1".parse().expect("addr"),
        client_port: 1,
        helo: "h".into(),
        mail_from: String::new(),
        rcpt_to: vec![],
        tls: false,
        folder: Folder::Inbox,
        auth: None,
        raw: vec![b'x'; bytes].into(),
    }
}

#[test]
fn caps_evict_the_oldest_and_count_them() {
    let limits = StoreConfig {
        max_messages: 2,
        max_bytes: 1000,
        max_events: 3,
        ..StoreConfig::default()
    };
    let store = Store::new(Clock::manual_at_unix(0), limits);
    for _ in 0..3 {
        store.accept(|id| message(id, 10));
    }
    let ids: Vec<u64> = store.messages().iter().map(|m| m.id).collect();
    assert_eq!(ids, [2, 3]);
    store.accept(|id| message(id, 995));
    assert_eq!(store.messages().len(), 1, "byte cap keeps only the newest");
    for _ in 0..5 {
        store.record(1, "127.0.0.1".parse().expect("ip"), EventKind::TlsStarted);
    }
    let (held, since_start) = (store.held(), store.since_start());
    assert_eq!(
        (since_start.messages_evicted, since_start.events_evicted),
        (3, 2)
    );
    assert_eq!(
        (held.messages, held.events, held.message_bytes),
        (1, 3, 995)
    );
}

#[test]
fn the_event_log_is_capped_in_bytes_too() {
    let limits = StoreConfig {
        max_event_bytes: 25_000,
        ..StoreConfig::default()
    };
    let store = Store::new(Clock::manual_at_unix(0), limits);
    let client = "127.0.0.1".parse().expect("ip");
    for _ in 0..10 {
        let error = "x".repeat(10_000);
        store.record(1, client, EventKind::TlsFailed { error });
    }
    let held = store.held();
    assert_eq!((held.events, store.since_reset().events_evicted), (2, 8));
    assert!(
        (20_000..=25_000).contains(&held.event_bytes),
        "{}",
        held.event_bytes
    );
    // One event larger than the cap is still kept, alone.
    let error = "y".repeat(40_000);
    store.record(1, client, EventKind::TlsFailed { error });
    assert_eq!(
        (store.held().events, store.since_reset().events_evicted),
        (1, 10)
    );
    store.clear();
    assert_eq!(store.held().event_bytes, 0);
}

#[test]
fn headers_unfold() {
    let mut m = message(1, 0);
    m.raw = b"Received: from a\r\n\tby b\r\nSubject: hi\r\n\r\nbody"
        .to_vec()
        .into();
    assert_eq!(m.header("received").as_deref(), Some("from a by b"));
    assert_eq!(m.header("Subject").as_deref(), Some("hi"));
    assert_eq!(m.header("To"), None);
    assert_eq!(m.body(), b"body");
    let fields = [("Received", "from a by b"), ("Subject", "hi")];
    let fields = fields.map(|(n, v)| (n.to_owned(), v.to_owned()));
    assert_eq!(m.headers(), fields);
}

#[test]
fn waiting_times_out_with_the_count() {
    let store = Store::new(Clock::manual_at_unix(0), StoreConfig::default());
    store.accept(|id| message(id, 1));
    assert_eq!(
        store.wait_for_messages(2, Duration::from_millis(10)).err(),
        Some(1)
    );
    assert_eq!(
        store.wait_for_messages(1, Duration::ZERO).map(|m| m.len()),
        Ok(1)
    );
}

fn decision(stage: Stage, accept: bool) -> EventKind {
    use crate::policy::Verdict;
    EventKind::Decision(crate::policy::Decision {
        stage,
        verdict: if accept {
            Verdict::Accept
        } else {
            Verdict::Reject(ReplyKind::SyntaxError)
        },
        rule: "test".into(),
        detail: String::new(),
        key: None,
        counter: None,
        limit: None,
        window: None,
        until: None,
    })
}

#[test]
fn the_tally_follows_the_events_held() {
    let limits = StoreConfig {
        max_events: 4,
        ..StoreConfig::default()
    };
    let store = Store::new(Clock::manual_at_unix(0), limits);
    let a: IpAddr = "127.0.0.2".parse().expect("ip");
    let b: IpAddr = "127.0.0.3".parse().expect("ip");
    let mut mail = Command::new(Verb::Mail, "MAIL FROM:<X@example.org>");
    mail.address = Some("X@example.org".into());
    store.record(1, a, EventKind::Command(mail));
    store.record(1, a, decision(Stage::Mail, true));
    store.record(2, b, decision(Stage::Connect, false));
    let tally = store.in_log();
    assert_eq!(tally.decisions_by_sender["x@example.org"].accepted, 1);
    assert_eq!(tally.decisions_by_ip[&a].accepted, 1);
    assert_eq!(tally.decisions_by_ip[&b].refused, 1);
    assert_eq!(tally.decisions_by_stage[&Stage::Connect].refused, 1);
    // Three more evict the MAIL command and the decision at MAIL.
    for _ in 0..3 {
        store.record(2, b, decision(Stage::Connect, false));
    }
    let tally = store.in_log();
    assert!(tally.decisions_by_sender.is_empty(), "{tally:?}");
    assert!(!tally.decisions_by_ip.contains_key(&a), "{tally:?}");
    assert_eq!(tally.decisions_by_ip[&b].refused, 4);
    assert_eq!(tally.decisions_by_stage.len(), 1, "{tally:?}");
    store.clear();
    assert_eq!(store.in_log(), InLog::default());
}

#[test]
fn pages_of_messages_and_events_take_only_the_page() {
    let store = Store::new(Clock::manual_at_unix(0), StoreConfig::default());
    for _ in 0..10 {
        store.accept(|id| message(id, 1));
    }
    let (total, page) = store.messages_page(2, 3, |m| m.id % 2 == 0);
    assert_eq!(total, 5);
    let ids: Vec<u64> = page.iter().map(|m| m.id).collect();
    assert_eq!(ids, [6, 8, 10]);
    let client = "127.0.0.1".parse().expect("ip");
    for _ in 0..10 {
        store.record(1, client, EventKind::TlsStarted);
    }
    let (found, last) = store.scan_events(2, 4, 10, |e| e.seq % 2 == 1);
    let seqs: Vec<u64> = found.iter().map(|e| e.seq).collect();
    assert_eq!((seqs, last), (vec![3, 5], 6));
    let (found, last) = store.scan_events(0, 100, 2, |_| true);
    assert_eq!((found.len(), last), (2, 2));
    assert_eq!(store.scan_events(10, 100, 2, |_| true).1, 10);
    assert_eq!(store.last_seq(), 10);
    assert_eq!(store.find_last(|e| e.seq < 4).map(|e| e.seq), Some(3));
}

#[test]
fn a_reset_keeps_the_counts_since_start_and_clears_the_rest() {
    let limits = StoreConfig {
        max_messages: 1,
        ..StoreConfig::default()
    };
    let store = Store::new(Clock::manual_at_unix(0), limits);
    store.accept(|id| message(id, 10));
    store.accept(|id| message(id, 10));
    store.record(
        1,
        "127.0.0.1".parse().expect("ip"),
        EventKind::Reply(crate::reply::Reply {
            kind: ReplyKind::Greeting,
            code: 220,
            text: "220 mx1.qq.com".into(),
        }),
    );
    store.clear();
    let since_start = store.since_start();
    assert_eq!(
        (since_start.messages_accepted, since_start.messages_evicted),
        (2, 1)
    );
    assert_eq!(since_start.replies.get(&ReplyKind::Greeting), Some(&1));
    assert_eq!(store.since_reset(), SinceReset::default());
    assert_eq!(store.held(), Held::default());
    assert_eq!(store.in_log(), InLog::default());
    store.accept(|id| message(id, 10));
    assert_eq!(store.since_reset().messages_accepted, 1);
    assert_eq!(store.since_start().messages_accepted, 3);
}
