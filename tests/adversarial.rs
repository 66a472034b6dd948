//! The quick part of the adversarial suite (`scripts/adversarial.py --quick`) against the
//! `qqmx` binary: garbage and floods, a connection burst beyond the cap, file descriptors
//! running out, many client IPs, large messages at once, API reads while the store is
//! full, API abuse and a cross-site request, SIGTERM under load. Each check bounds memory,
//! replies and liveness, never wall-clock time; the full counts run by hand (see the
//! README's "Hardening" section).
#![cfg(feature = "cli")]

use std::process::Command;

#[test]
fn qqmx_withstands_the_quick_adversarial_suite() {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/adversarial.py");
    let output = Command::new("python3")
        .arg(script)
        .args(["--quick", "--binary", env!("CARGO_BIN_EXE_qqmx")])
        .output()
        .expect("python3 runs");
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}
