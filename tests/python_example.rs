//! `examples/python/test_sender.py`, a non-Rust user's test, passes against the real
//! sidecar, with a token.
#![cfg(feature = "cli")]

mod common;

use std::process::Command;

use common::sidecar::Sidecar;

#[test]
fn the_python_example_passes_against_the_sidecar() {
    let sidecar = Sidecar::manual(&[], &[("QQMX_API_TOKEN", "py-token")]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/python/test_sender.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .env("QQMX_SMTP_ADDR", sidecar.mx("mx1").to_string())
        .env("QQMX_API_URL", format!("http://{}", sidecar.api))
        .env("QQMX_API_TOKEN", "py-token")
        .output()
        .expect("python3 runs");
    let report = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{report}");
    assert!(report.contains("Ran 3 tests"), "{report}");
}
