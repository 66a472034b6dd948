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

mod compact {
    //! The compact log: every kind of event reads back as it was recorded, and the caps
    //! and counts hold across its chunks.

    use std::borrow::Cow;
    use std::net::{IpAddr, SocketAddr};
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use proptest::prelude::*;

    use super::super::codec::{
        CLOSES, CommandRef, EventRef, FAULTS, Header, POLICIES, ParamsRef, RESULTS, VERBS,
    };
    use super::super::log::Log;
    use super::*;
    use crate::event::{CloseReason, Param};
    use crate::policy::{AuthReport, Decision, DkimCheck, DmarcCheck, SpfCheck, Verdict};
    use crate::reply::Reply;
    use crate::units::{Stage, Window};

    #[test]
    fn the_lists_of_stored_enums_are_in_declaration_order() {
        let indices = [
            VERBS.iter().map(|&v| v as usize).collect::<Vec<_>>(),
            Stage::ALL.iter().map(|&v| v as usize).collect(),
            FAULTS.iter().map(|&v| v as usize).collect(),
            CLOSES.iter().map(|&v| v as usize).collect(),
            RESULTS.iter().map(|&v| v as usize).collect(),
            POLICIES.iter().map(|&v| v as usize).collect(),
            Window::ALL.iter().map(|&v| v as usize).collect(),
            ReplyKind::ALL.iter().map(|&v| v as usize).collect(),
        ];
        for list in indices {
            assert!(list.iter().enumerate().all(|(i, &v)| i == v), "{list:?}");
        }
    }

    /// Texts: empty, short and repeated (the table's), any characters, and command lines
    /// of 512 bytes and more (written in the record).
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just(String::new()),
            prop::sample::select(vec!["250 OK", "mx1", "<a@b.org> exists", "中文"])
                .prop_map(str::to_owned),
            any::<String>(),
            prop::collection::vec(any::<char>(), 0..600).prop_map(String::from_iter),
            "[a-zé]{500,520}",
        ]
    }

    fn time() -> impl Strategy<Value = SystemTime> {
        prop_oneof![
            (0u64..4_000_000_000, 0u32..1_000_000_000)
                .prop_map(|(s, n)| UNIX_EPOCH + Duration::new(s, n)),
            (0u64..4_000_000_000, 0u32..1_000_000_000)
                .prop_map(|(s, n)| UNIX_EPOCH - Duration::new(s, n)),
            Just(UNIX_EPOCH + Duration::new(i64::MAX as u64 / 4, 999_999_999)),
            Just(UNIX_EPOCH - Duration::new(i64::MAX as u64 / 4, 999_999_999)),
        ]
    }

    fn optional<T: std::fmt::Debug + Clone>(
        value: impl Strategy<Value = T>,
    ) -> impl Strategy<Value = Option<T>> {
        prop::option::of(value)
    }

    fn spf() -> impl Strategy<Value = SpfCheck> {
        (prop::sample::select(RESULTS.to_vec()), text(), text())
            .prop_map(|(result, domain, reason)| SpfCheck::new(result, domain, reason))
    }

    fn reply_kind() -> impl Strategy<Value = ReplyKind> {
        prop::sample::select(ReplyKind::ALL.to_vec())
    }

    fn command() -> impl Strategy<Value = Command> {
        (
            prop::sample::select(VERBS.to_vec()),
            text(),
            optional(text()),
            optional(text()),
            prop::collection::vec((text(), optional(text())), 0..4),
        )
            .prop_map(|(verb, line, address, host, params)| {
                let mut command = Command::new(verb, line);
                command.address = address;
                command.host = host;
                command.params = params
                    .into_iter()
                    .map(|(name, value)| Param::new(name, value))
                    .collect();
                command
            })
    }

    fn any_decision() -> impl Strategy<Value = Decision> {
        let verdict = prop_oneof![
            Just(Verdict::Accept),
            Just(Verdict::Junk),
            reply_kind().prop_map(Verdict::Reject),
            reply_kind().prop_map(Verdict::Disconnect),
        ];
        (
            prop::sample::select(Stage::ALL.to_vec()),
            verdict,
            (text(), text(), optional(text())),
            (optional(any::<u64>()), optional(any::<u64>())),
            optional(prop::sample::select(Window::ALL.to_vec())),
            optional(time()),
        )
            .prop_map(
                |(stage, verdict, (rule, detail, key), (counter, limit), window, until)| Decision {
                    stage,
                    verdict,
                    rule: Cow::Owned(rule),
                    detail,
                    key,
                    counter,
                    limit,
                    window,
                    until,
                },
            )
    }

    fn report() -> impl Strategy<Value = AuthReport> {
        let dkim = (
            prop::sample::select(RESULTS.to_vec()),
            (text(), text(), text(), text()),
        )
            .prop_map(
                |(result, (domain, selector, algorithm, reason))| DkimCheck {
                    result,
                    domain,
                    selector,
                    algorithm,
                    reason,
                },
            );
        let dmarc = (
            prop::sample::select(RESULTS.to_vec()),
            text(),
            optional(prop::sample::select(POLICIES.to_vec())),
            any::<u8>(),
            any::<(bool, bool)>(),
            text(),
        )
            .prop_map(
                |(result, domain, policy, pct, (spf_aligned, dkim_aligned), reason)| DmarcCheck {
                    result,
                    domain,
                    policy,
                    pct,
                    spf_aligned,
                    dkim_aligned,
                    reason,
                },
            );
        (spf(), prop::collection::vec(dkim, 0..3), dmarc)
            .prop_map(|(spf, dkim, dmarc)| AuthReport { spf, dkim, dmarc })
    }

    /// Every kind of event, with every field.
    fn kind() -> impl Strategy<Value = EventKind> {
        prop_oneof![
            (any::<SocketAddr>(), text())
                .prop_map(|(local, mx)| EventKind::Connected { local, mx }),
            command().prop_map(EventKind::Command),
            (reply_kind(), any::<u16>(), text())
                .prop_map(|(kind, code, text)| EventKind::Reply(Reply { kind, code, text })),
            any_decision().prop_map(EventKind::Decision),
            Just(EventKind::TlsStarted),
            text().prop_map(|error| EventKind::TlsFailed { error }),
            any::<usize>().prop_map(|bytes| EventKind::Discarded { bytes }),
            spf().prop_map(EventKind::Spf),
            report().prop_map(EventKind::Authenticated),
            (
                prop::sample::select(FAULTS.to_vec()),
                optional(prop::sample::select(Stage::ALL.to_vec()))
            )
                .prop_map(|(fault, stage)| EventKind::Fault { fault, stage }),
            any::<u64>().prop_map(|message| EventKind::Accepted { message }),
            prop::sample::select(CLOSES.to_vec()).prop_map(|reason| EventKind::Closed { reason }),
        ]
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            time(),
            any::<u64>(),
            optional(any::<u32>()),
            prop_oneof![any::<IpAddr>(), Just("127.0.0.1".parse().expect("ip"))],
            kind(),
        )
            .prop_map(|(at, session, transaction, client, kind)| Event {
                seq: 0,
                at,
                session,
                transaction,
                client,
                kind,
            })
    }

    fn same(read: &Event, written: &Event) {
        assert_eq!(read.at, written.at);
        assert_eq!(
            serde_json::to_value(read).expect("json"),
            serde_json::to_value(written).expect("json")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn every_event_reads_back_as_it_was_written(
            first in prop_oneof![Just(1u64), any::<u64>().prop_map(|s| s / 2), Just(u64::MAX - 64)],
            events in prop::collection::vec(event(), 1..40),
        ) {
            let mut log = Log::new(StoreConfig::default().max_event_bytes);
            let mut written = Vec::new();
            for (n, mut event) in events.into_iter().enumerate() {
                event.seq = first + n as u64;
                let header = Header {
                    at: event.at,
                    session: event.session,
                    transaction: event.transaction,
                    client: event.client,
                };
                log.push(event.seq, &header, &EventRef::Kind(&event.kind));
                written.push(event);
            }
            let read: Vec<Event> = log.iter_from(0).collect();
            prop_assert_eq!(read.len(), written.len());
            for (read, written) in read.iter().zip(&written) {
                prop_assert_eq!(read.seq, written.seq);
                same(read, written);
            }
            let back: Vec<u64> = log.iter_back().map(|e| e.seq).collect();
            let forth: Vec<u64> = written.iter().rev().map(|e| e.seq).collect();
            prop_assert_eq!(back, forth);
        }

        #[test]
        fn a_command_recorded_from_its_line_reads_as_the_parsed_one(
            verb in prop::sample::select(VERBS.to_vec()),
            line in text(),
            address in optional(text()),
            host in optional(text()),
            words in prop::collection::vec(
                ("[A-Za-z]{1,8}", optional("[^ \t\r\n\x0b\x0c]{0,12}")),
                0..4,
            ),
        ) {
            // What `session::parse` reads from the words after the path.
            let params: Vec<Param> = words
                .iter()
                .map(|(name, value)| Param::new(name.to_ascii_uppercase(), value.clone()))
                .collect();
            let raw = words
                .iter()
                .map(|(name, value)| match value {
                    Some(value) => format!(" {name}={value}"),
                    None => format!(" {name}"),
                })
                .collect::<String>();
            let mut parsed = Command::new(verb, line.clone());
            parsed.address = address.clone();
            parsed.host = host.clone();
            parsed.params = params;
            let header = Header {
                at: UNIX_EPOCH,
                session: 1,
                transaction: None,
                client: "127.0.0.1".parse().expect("ip"),
            };
            let mut log = Log::new(StoreConfig::default().max_event_bytes);
            log.push(1, &header, &EventRef::Kind(&EventKind::Command(parsed)));
            log.push(2, &header, &EventRef::Command(CommandRef {
                verb,
                line: Cow::Borrowed(&line),
                address: address.as_deref().map(Cow::Borrowed),
                host: host.as_deref(),
                params: ParamsRef::Words(raw.as_bytes()),
            }));
            let mut read = log.iter_from(0);
            let (Some(a), Some(b)) = (read.next(), read.next()) else {
                panic!("two events");
            };
            prop_assert_eq!(
                serde_json::to_value(&a.kind).expect("json"),
                serde_json::to_value(&b.kind).expect("json")
            );
        }
    }

    fn reply(text: &str) -> EventKind {
        EventKind::Reply(Reply {
            kind: ReplyKind::NoopOk,
            code: 250,
            text: text.to_owned(),
        })
    }

    /// The bytes one event counts for, alone in a store.
    fn bytes_of(kind: &EventKind) -> usize {
        let store = Store::new(Clock::manual_at_unix(0), StoreConfig::default());
        store.record(1, "127.0.0.1".parse().expect("ip"), kind.clone());
        store.held().event_bytes
    }

    #[test]
    fn caps_by_count_and_bytes_are_exact_across_chunks() {
        // Longer than a table text: each record holds its text, and 1,000 of them fill
        // several chunks.
        let kind = reply(&"x".repeat(300));
        let one = bytes_of(&kind);
        assert!((300..320).contains(&one), "{one}");
        let limits = StoreConfig {
            max_event_bytes: 500 * one + one / 2,
            ..StoreConfig::default()
        };
        let store = Store::new(Clock::manual_at_unix(0), limits);
        let client = "127.0.0.1".parse().expect("ip");
        for _ in 0..1000 {
            store.record(1, client, kind.clone());
        }
        let held = store.held();
        assert_eq!((held.events, held.event_bytes), (500, 500 * one));
        assert_eq!(store.since_start().events_evicted, 500);
        assert_eq!(store.in_log().replies[&ReplyKind::NoopOk], 500);
        let seqs: Vec<u64> = store.events().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (501..=1000).collect::<Vec<_>>());
        let after: Vec<u64> = store.events_after(700, 3).iter().map(|e| e.seq).collect();
        assert_eq!(after, [701, 702, 703]);
        assert_eq!(store.events_after(0, 1)[0].seq, 501);
        assert!(store.events_after(1000, 10).is_empty());
        assert_eq!(
            store.find_last(|e| e.seq % 7 == 0).map(|e| e.seq),
            Some(994)
        );

        let limits = StoreConfig {
            max_events: 300,
            ..StoreConfig::default()
        };
        let store = Store::new(Clock::manual_at_unix(0), limits);
        for n in 0..1000u64 {
            store.record(n, client, kind.clone());
        }
        let held = store.held();
        // Sessions 700 to 999 take a byte more than session 1.
        assert_eq!((held.events, held.event_bytes), (300, 300 * (one + 1)));
        let (found, last) = store.scan_events(650, 100, 5, |e| e.session % 10 == 0);
        let sessions: Vec<u64> = found.iter().map(|e| e.session).collect();
        assert_eq!((sessions, last), (vec![700, 710, 720, 730, 740], 741));
        assert_eq!(store.events()[0].session, 700);
    }

    #[test]
    fn a_delivered_message_holds_little_event_memory() {
        // What the events of one message cost once their texts are in the table: a
        // few bytes each.
        let kinds = [
            reply("250 OK"),
            super::decision(Stage::Rcpt, true),
            EventKind::Accepted { message: 12 },
            EventKind::Closed {
                reason: CloseReason::Quit,
            },
        ];
        let store = Store::new(Clock::manual_at_unix(1_700_000_000), StoreConfig::default());
        let client = "10.1.2.3".parse().expect("ip");
        for kind in &kinds {
            store.record(7, client, kind.clone());
        }
        let before = store.held().event_bytes;
        for kind in &kinds {
            store.record(7, client, kind.clone());
        }
        let bytes = store.held().event_bytes - before;
        assert!(
            bytes <= kinds.len() * 16,
            "{bytes} bytes for {} events",
            kinds.len()
        );
    }
}
