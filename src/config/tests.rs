//! Parsing and validation of config files: every error names its file, line and key.

use std::time::Duration;

use super::*;

#[test]
fn the_example_config_is_the_default() {
    let text = include_str!("../../qqmx.example.toml");
    let config = Config::from_toml(text).expect("example parses");
    assert_eq!(config, Config::default());
}

#[test]
fn unknown_keys_are_named_with_their_line() {
    let err = Config::from_toml("seed = 1\n\n[limits]\nmax_line = 10\n").expect_err("typo");
    let text = err.to_string();
    assert!(
        text.starts_with("<inline>:4:1: key `limits.max_line`: unknown field `max_line`"),
        "{text}"
    );
}

#[test]
fn bad_values_are_named_with_their_line() {
    let err = Config::from_toml("[limits]\nidle_timeout = \"soon\"\n").expect_err("bad");
    assert!(
        err.to_string()
            .starts_with("<inline>:2:16: key `limits.idle_timeout`: `soon` is not a duration"),
        "{err}"
    );
    let err = Config::from_toml("generation = \"2020\"\n").expect_err("bad");
    assert!(
        err.to_string()
            .starts_with("<inline>:1:14: key `generation`: unknown generation `2020`"),
        "{err}"
    );
}

#[test]
fn zero_and_absurd_limits_are_refused_by_name() {
    for (toml, key) in [
        ("[limits]\nidle_timeout = \"0s\"\n", "limits.idle_timeout"),
        ("[limits]\nidle_timeout = \"30d\"\n", "limits.idle_timeout"),
        (
            "[limits]\nsession_timeout = \"0ms\"\n",
            "limits.session_timeout",
        ),
        (
            "[limits]\nmax_message_size = 0\n",
            "limits.max_message_size",
        ),
        (
            "[limits]\nmax_line_length = 100000000\n",
            "limits.max_line_length",
        ),
        ("[limits]\nmax_connections = 0\n", "limits.max_connections"),
        ("[store]\nmax_events = 0\n", "store.max_events"),
        ("[store]\nmax_bytes = 10\n", "store.max_bytes"),
    ] {
        let err = Config::from_toml(toml).expect_err(toml);
        assert!(err.to_string().contains(&format!("key `{key}`")), "{err}");
    }
    let err = Config::from_toml("[limits]\nidle_timeout = \"0s\"\n").expect_err("zero");
    assert!(
        err.to_string()
            .ends_with("key `limits.idle_timeout`: `0ms` is not from `100ms` to `1d`"),
        "{err}"
    );
    let mut config = Config::default();
    config.limits.idle_timeout = Duration::ZERO;
    assert!(config.check().is_err());
    Config::from_toml("[limits]\nidle_timeout = \"200ms\"\nmax_message_size = 1000\n")
        .expect("small but sensible limits");
}

#[test]
fn semantic_errors_point_at_the_key() {
    let text = "[clock]\nmode = \"manual\"\nstart = \"tomorrow\"\n";
    let err = Config::from_toml(text).expect_err("bad start");
    assert!(
        err.to_string()
            .starts_with("<inline>:3:1: key `clock.start`"),
        "{err}"
    );
    let text = "[replies]\nbye = \"goodbye\"\n";
    let err = Config::from_toml(text).expect_err("bad template");
    assert!(
        err.to_string()
            .starts_with("<inline>:2:1: key `replies.bye`: line 1 must start"),
        "{err}"
    );
    let err = Config::from_toml("[replies]\nhello = \"250 hi\"\n").expect_err("kind");
    assert!(
        err.to_string()
            .starts_with("<inline>:2:1: key `replies.hello`: unknown variant `hello`"),
        "{err}"
    );
}

#[test]
fn files_are_named_in_errors() {
    let dir = std::env::temp_dir().join(format!("qqmx-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("broken.toml");
    std::fs::write(&path, "[tls]\nenabled = 3\n").expect("write");
    let err = Config::from_file(&path).expect_err("bad type");
    assert!(
        err.to_string()
            .starts_with(&format!("{}:2:11: key `tls.enabled`", path.display())),
        "{err}"
    );
    let err = Config::from_file(dir.join("missing.toml")).expect_err("missing");
    assert!(matches!(err, ConfigError::Read { .. }));
}

#[test]
fn a_quota_table_changes_only_what_it_names() {
    let text = "[quotas.ip_messages]\nminute = { limit = 5 }\nhour = \"off\"\n";
    let config = Config::from_toml(text).expect("partial quota");
    let q = &config.quotas.ip_messages;
    let default = Config::default().quotas.ip_messages;
    assert_eq!(
        q.minute.map(|t| (t.limit, t.block)),
        Some((5, default.minute.expect("tier").block))
    );
    assert_eq!(q.hour, None);
    assert_eq!(
        (q.day, q.stage, q.reply, q.enabled),
        (default.day, default.stage, default.reply, true)
    );
    let err = Config::from_toml("[quotas.sender]\nminute = { limit = \"x\" }\n").expect_err("bad");
    assert!(err.to_string().contains("key `quotas.sender"), "{err}");
}

#[test]
fn message_quotas_cannot_be_answered_at_connect() {
    let text = "seed = 1\n[quotas.ip_messages]\nstage = \"connect\"\n";
    let err = Config::from_toml(text).expect_err("ip_messages at connect");
    assert_eq!(
        err.to_string(),
        "<inline>:3:1: key `quotas.ip_messages.stage`: the ip_messages quota cannot be \
         answered before `helo`"
    );
    let text = "[quotas.ip_messages]\nstage = \"helo\"\n";
    assert!(Config::from_toml(text).is_ok(), "helo is the earliest");
    let text = "[quotas.ip_connections]\nstage = \"connect\"\n";
    assert!(
        Config::from_toml(text).is_ok(),
        "connections are counted at connect"
    );
}

#[test]
fn mx_records_parse_or_say_what_is_wrong() {
    let mx: MxRecord = "10 mx.example.com".parse().expect("record");
    assert_eq!(
        (mx.preference, mx.exchange.as_str()),
        (10, "mx.example.com")
    );
    assert_eq!(mx.to_string(), "10 mx.example.com");
    assert_eq!(
        "mx.example.com".parse::<MxRecord>(),
        Err(MxRecordError::Shape("mx.example.com".into()))
    );
    let text = "[dns.records.\"example.com\"]\nmx = [\"ten mx.example.com\"]\n";
    let err = Config::from_toml(text).expect_err("bad preference");
    assert!(
        err.to_string()
            .contains("`ten` is not a preference from 0 to 65535"),
        "{err}"
    );
}

#[test]
fn a_replica_name_and_its_advertised_url_are_checked() {
    let err = Config::from_toml("[state]\nreplica = \"a b\"\n").expect_err("a space");
    assert!(err.to_string().contains("state.replica"), "{err}");
    let err = Config::from_toml("[state]\nadvertise = \"10.0.0.5:8025\"\n").expect_err("no scheme");
    assert!(err.to_string().contains("state.advertise"), "{err}");
    let config = Config::from_toml(
        "[state]\nreplica = \"qqmx-7d9f.b_2\"\nadvertise = \"http://10.0.0.5:8025\"\n",
    )
    .expect("a valid name and URL");
    assert_eq!(config.state.advertise_ttl, Duration::from_secs(15));
}
