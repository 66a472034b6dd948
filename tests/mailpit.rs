//! A Mailpit client written by others, the npm package `mailpit-api`, lists, reads,
//! searches and deletes the messages of a `qqmx serve` sidecar through the control API.
//!
//! The package is installed by scripts/test.sh with
//! `npm install --prefix target/mailpit-client mailpit-api@2.1.0` (or into the directory
//! `QQMX_MAILPIT_CLIENT` names); without it (or without Node.js) the test fails, unless
//! `QQMX_SKIP_MAILPIT_TEST=1` skips it.
#![cfg(feature = "cli")]

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::sidecar::Sidecar;
use serde_json::Value;

/// Where the package is installed.
fn client_dir() -> PathBuf {
    std::env::var_os("QQMX_MAILPIT_CLIENT").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/mailpit-client"),
        PathBuf::from,
    )
}

fn subjects(list: &Value) -> Vec<&str> {
    list["messages"]
        .as_array()
        .unwrap_or_else(|| panic!("no messages in {list}"))
        .iter()
        .map(|m| m["Subject"].as_str().expect("a Subject"))
        .collect()
}

#[tokio::test]
async fn a_mailpit_client_library_lists_reads_searches_and_deletes() {
    if std::env::var_os("QQMX_SKIP_MAILPIT_TEST").is_some() {
        eprintln!("QQMX_SKIP_MAILPIT_TEST is set: the Mailpit client test is skipped");
        return;
    }
    let dir = client_dir();
    assert!(
        dir.join("node_modules/mailpit-api/package.json").is_file(),
        "the npm package mailpit-api is not installed in {}: run scripts/test.sh, or \
         `npm install --prefix target/mailpit-client mailpit-api@2.1.0`, or set \
         QQMX_SKIP_MAILPIT_TEST=1 to skip this test",
        dir.display()
    );
    let sidecar = Sidecar::manual(&["--no-limits"], &[("QQMX_API_TOKEN", "s3cret")]);
    for (n, subject) in ["invoice", "Weekly news", "invoice reminder"]
        .iter()
        .enumerate()
    {
        let body = format!(
            "From: Shop <shop@example.org>\r\nTo: User <1000{n}@qq.com>\r\nMessage-ID: <m{n}@example.org>\r\nSubject: {subject}\r\n\r\nbody {n}\r\n"
        );
        let to = format!("1000{n}@qq.com");
        common::deliver(sidecar.mx("mx1"), "shop@example.org", &to, &body).await;
    }
    assert_eq!(sidecar.json("/api/v1/messages")["total"], 3);

    let output = Command::new("node")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/mailpit_client.cjs"
        ))
        .arg(&dir)
        .arg(format!("http://{}", sidecar.api))
        .arg("s3cret")
        .output()
        .expect("node runs (Node.js 18 or later; scripts/test.sh needs it for this test)");
    assert!(
        output.status.success(),
        "the client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).expect("the client's JSON");

    // List, as Mailpit's shapes.
    let list = &out["list"];
    assert_eq!(
        (&list["total"], &list["messages_count"], &list["count"]),
        (&Value::from(3), &Value::from(3), &Value::from(3))
    );
    assert_eq!(
        subjects(list),
        ["invoice", "Weekly news", "invoice reminder"]
    );
    assert_eq!(list["messages"][0]["From"]["Address"], "shop@example.org");
    assert_eq!(list["messages"][0]["To"][0]["Name"], "User");
    assert_eq!(subjects(&out["page"]), ["Weekly news"]);

    // One message, the latest, its headers and source.
    assert_eq!(out["one"]["ID"], "1");
    assert_eq!(out["one"]["MessageID"], "m0@example.org");
    assert_eq!(out["one"]["Text"], "body 0\r\n");
    assert_eq!(out["latest"]["ID"], "3");
    assert_eq!(out["latest"]["Subject"], "invoice reminder");
    assert_eq!(out["headers"]["Subject"][0], "invoice reminder");
    assert!(out["headers"]["Received"].is_array(), "{}", out["headers"]);
    let source = out["source"].as_str().expect("the source as text");
    assert!(
        source.contains("X-QQ-mid: ") && source.ends_with("body 2\r\n"),
        "{source}"
    );

    // Search, newest first as Mailpit answers.
    assert_eq!(subjects(&out["search"]), ["invoice reminder", "invoice"]);
    assert_eq!(subjects(&out["searchTo"]), ["Weekly news"]);
    assert_eq!(out["searchNone"]["messages_count"], 0);
    assert_eq!(out["waited"]["ID"], "3");

    // Delete by ids deletes only those, by search only the matches, then all.
    assert_eq!(
        subjects(&out["afterDeleteIds"]),
        ["Weekly news", "invoice reminder"]
    );
    assert_eq!(subjects(&out["afterDeleteSearch"]), ["Weekly news"]);
    assert_eq!(out["afterDeleteAll"]["total"], 0);
    assert_eq!(sidecar.json("/api/v1/messages")["total"], 0);
}
