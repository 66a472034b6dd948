//! Every scenario in `scenarios/` tells the reference senders apart: played by
//! `qqmx run`, its expectations hold for `examples/senders/well_behaved.py` and fail for
//! `examples/senders/naive.py`.
#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

const QQMX: &str = env!("CARGO_BIN_EXE_qqmx");

fn scenarios() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("scenarios/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

fn play(scenario: &Path, sender: &str, reports: &Path) -> Output {
    let sender = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/senders")
        .join(sender);
    Command::new(QQMX)
        .arg("run")
        .arg(scenario)
        .args(["--quiet", "--report-dir"])
        .arg(reports)
        .arg("--")
        .arg("python3")
        .arg(sender)
        .output()
        .expect("qqmx run starts")
}

#[test]
fn the_library_has_at_least_twelve_valid_scenarios() {
    let files = scenarios();
    assert!(files.len() >= 12, "{} scenarios", files.len());
    let output = Command::new(QQMX)
        .arg("check")
        .args(&files)
        .output()
        .expect("qqmx check runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn every_scenario_passes_the_well_behaved_sender_and_fails_the_naive_one() {
    let reports = std::env::temp_dir().join(format!("qqmx-scenarios-{}", std::process::id()));
    let files = scenarios();
    let failures = Mutex::new(Vec::new());
    // Four at a time: each run mostly waits on its timeline.
    let next = Mutex::new(files.iter());
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                loop {
                    let Some(file) = next.lock().expect("lock").next() else {
                        break;
                    };
                    for (sender, should_pass) in [("well_behaved.py", true), ("naive.py", false)] {
                        let dir = reports.join(sender);
                        let output = play(file, sender, &dir);
                        if output.status.code() != Some(if should_pass { 0 } else { 1 }) {
                            failures.lock().expect("lock").push(format!(
                                "{} with {sender}: exit {:?}, expected {}\n{}{}",
                                file.display(),
                                output.status.code(),
                                if should_pass { "0 (pass)" } else { "1 (fail)" },
                                String::from_utf8_lossy(&output.stdout),
                                String::from_utf8_lossy(&output.stderr),
                            ));
                        }
                    }
                }
            });
        }
    });
    let failures = failures.into_inner().expect("lock");
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
