//! `GET /metrics`: the Prometheus text exposition format, version 0.0.4.

use std::fmt::Write;

use crate::server::Server;

/// Renders every metric of `server`.
pub(super) fn render(server: &Server) -> String {
    let store = server.store();
    let (held, since_start) = (store.held(), store.since_start());
    let replies = &since_start.replies;
    let config = server.config();
    let (blocks, keys, evictions, state) = server.with_policy(|policy, now| {
        (
            policy.blocks(now).len(),
            policy.tracked_keys(),
            policy.evictions(),
            (policy.state_errors(), policy.state_calls()),
        )
    });
    let mut out = String::with_capacity(4096);
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, u64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "qqmx_build_info",
        "gauge",
        "The running qqmx: version and the QQ generation it imitates.",
        &[(
            format!(
                "{{version=\"{}\",generation=\"{}\"}}",
                env!("CARGO_PKG_VERSION"),
                config.generation
            ),
            1,
        )],
    );
    metric(
        "qqmx_messages_accepted_total",
        "counter",
        "Messages answered 250 at the end of data and stored.",
        &[(String::new(), since_start.messages_accepted)],
    );
    let rejected: Vec<(String, u64)> = store
        .refusals_total()
        .iter()
        .map(|(kind, n)| (format!("{{kind=\"{}\"}}", kind.name()), *n))
        .collect();
    metric(
        "qqmx_rejections_total",
        "counter",
        "Refusals sent (4xx and 5xx replies), by reply kind.",
        &rejected,
    );
    let all: Vec<(String, u64)> = replies
        .iter()
        .map(|(kind, n)| (format!("{{kind=\"{}\"}}", kind.name()), *n))
        .collect();
    metric(
        "qqmx_replies_total",
        "counter",
        "Replies sent, by reply kind.",
        &all,
    );
    metric(
        "qqmx_sessions_total",
        "counter",
        "SMTP sessions begun.",
        &[(String::new(), store.sessions_total())],
    );
    metric(
        "qqmx_connections_active",
        "gauge",
        "SMTP connections open now.",
        &[(String::new(), server.active_connections() as u64)],
    );
    metric(
        "qqmx_blocks_active",
        "gauge",
        "Quota blocks in force now.",
        &[(String::new(), blocks as u64)],
    );
    metric(
        "qqmx_policy_keys",
        "gauge",
        "Keys the policy tracks now (counters, IP histories, listings, bulk fingerprints).",
        &[(String::new(), keys as u64)],
    );
    metric(
        "qqmx_policy_evictions_total",
        "counter",
        "Policy keys forgotten to stay under memory.max_tracked_keys.",
        &[(String::new(), evictions)],
    );
    metric(
        "qqmx_replica_info",
        "gauge",
        "This replica: its name (state.replica) and where its policy state lives.",
        &[(
            format!(
                "{{replica=\"{}\",state=\"{}\"}}",
                label_value(config.state.replica_name()),
                match config.state.backend {
                    crate::config::StateBackend::Redis => "redis",
                    _ => "memory",
                }
            ),
            1,
        )],
    );
    metric(
        "qqmx_state_errors_total",
        "counter",
        "Calls to the shared policy state (Redis) that failed; each failed stage was answered 451.",
        &[(String::new(), state.0)],
    );
    metric(
        "qqmx_state_calls_total",
        "counter",
        "Round trips to the shared policy state (Redis): one script or pipeline each.",
        &[(String::new(), state.1)],
    );
    metric(
        "qqmx_store_messages",
        "gauge",
        "Messages held in the store.",
        &[(String::new(), held.messages as u64)],
    );
    metric(
        "qqmx_store_events",
        "gauge",
        "Events held in the log.",
        &[(String::new(), held.events as u64)],
    );
    metric(
        "qqmx_store_evicted_total",
        "counter",
        "Messages and events evicted to stay under the store's caps.",
        &[
            (
                "{what=\"messages\"}".to_owned(),
                since_start.messages_evicted,
            ),
            ("{what=\"events\"}".to_owned(), since_start.events_evicted),
        ],
    );
    metric(
        "qqmx_draining",
        "gauge",
        "1 once shutdown has begun.",
        &[(String::new(), u64::from(server.is_draining()))],
    );
    out
}

/// `text` escaped for a label value: backslash, double quote and newline.
fn label_value(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
