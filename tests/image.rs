//! The container image: built with podman from the Dockerfile's `runtime` stage (by
//! scripts/build-image.sh), run, and probed over SMTP and HTTP. Needs podman and runc
//! (`.ci/run` and scripts/test.sh install them on Debian); set QQMX_SKIP_IMAGE_TEST=1 to
//! skip it on a machine without them. Every command it runs has a time limit, and the
//! container is removed however the test ends.
#![cfg(feature = "cli")]

mod common;

use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::sidecar::http;

const TOKEN: &str = "image-test-token";
const TAG: &str = "qqmx:test";

/// Removes the container, by name, however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = run_for(
            podman().args(["rm", "-f", "--time", "0", &self.0]),
            Duration::from_secs(30),
        );
    }
}

/// podman with the settings these machines need when it has no system configuration
/// (docs in scripts/build-image.sh).
fn podman() -> Command {
    let mut command = Command::new("podman");
    if std::env::var_os("CONTAINERS_CONF").is_none() {
        let conf = std::env::temp_dir().join("qqmx-containers.conf");
        std::fs::write(
            &conf,
            "[containers]\ndefault_ulimits = []\n[engine]\ncgroup_manager = \"cgroupfs\"\nruntime = \"runc\"\n",
        )
        .expect("containers.conf");
        command.env("CONTAINERS_CONF", conf);
    }
    command
}

/// Runs `command` for at most `limit`: its trimmed stdout, or what went wrong with its
/// output.
fn run_for(command: &mut Command, limit: Duration) -> Result<String, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{command:?} does not start: {e}"))?;
    let drain = |mut pipe: Box<dyn Read + Send>| {
        thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break Some(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (
        stdout.join().unwrap_or_default(),
        stderr.join().unwrap_or_default(),
    );
    match status {
        Some(status) if status.success() => Ok(stdout.trim().to_owned()),
        Some(status) => Err(format!("{command:?}: {status}\n{stdout}{stderr}")),
        None => Err(format!(
            "{command:?} took more than {limit:?}\n{stdout}{stderr}"
        )),
    }
}

fn run(command: &mut Command) -> String {
    run_for(command, Duration::from_secs(60)).unwrap_or_else(|e| panic!("{e}"))
}

fn found(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn the_image_serves_smtp_and_the_api_as_a_non_root_user() {
    if std::env::var_os("QQMX_SKIP_IMAGE_TEST").is_some_and(|v| !v.is_empty()) {
        eprintln!("QQMX_SKIP_IMAGE_TEST is set: the container image is not tested");
        return;
    }
    for program in ["podman", "runc"] {
        assert!(
            found(program),
            "{program} is missing: the image test needs podman and runc \
             (Debian: apt-get install podman runc), or set QQMX_SKIP_IMAGE_TEST=1 to skip it"
        );
    }
    // A cold static release build takes a few minutes on two cores.
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/build-image.sh");
    let tag = run_for(Command::new(script).arg(TAG), Duration::from_secs(30 * 60))
        .unwrap_or_else(|e| panic!("building the image: {e}"));
    assert_eq!(tag, TAG);

    let name = format!("qqmx-image-test-{}", std::process::id());
    let _container = Container(name.clone());
    // Free loopback ports, found by binding port 0 and released for qqmx: another process
    // may take one in between (a busy machine's outgoing connections draw from the same
    // range), so a container that could not bind is started again on new ports.
    let mut attempt = 0;
    let (smtp, api) = loop {
        attempt += 1;
        let (smtp_port, api_port) = {
            let smtp = TcpListener::bind("127.0.0.1:0").expect("a free port");
            let api = TcpListener::bind("127.0.0.1:0").expect("a free port");
            (
                smtp.local_addr().expect("address").port(),
                api.local_addr().expect("address").port(),
            )
        };
        // The API on 0.0.0.0, as in the image's own settings, so the token is required and
        // the health check has to find it on loopback. No `--rm`: a container that stopped
        // keeps its logs and exit code until the guard removes it.
        run(podman().args([
            "run",
            "-d",
            "--network=host",
            "--name",
            &name,
            "-e",
            &format!("QQMX_SMTP=mx1=127.0.0.1:{smtp_port}"),
            "-e",
            &format!("QQMX_API=0.0.0.0:{api_port}"),
            "-e",
            &format!("QQMX_API_TOKEN={TOKEN}"),
            TAG,
        ]));
        // The image's HEALTHCHECK (`/qqmx health`, run inside the container) passes. The
        // bound only stops a hang: each check is a process start in the container, slow
        // on a loaded machine.
        let deadline = Instant::now() + Duration::from_secs(120);
        let healthy = loop {
            let check = run_for(
                podman().args(["healthcheck", "run", &name]),
                Duration::from_secs(30),
            );
            let Err(e) = check else { break true };
            let running = run(podman().args(["inspect", "--format", "{{.State.Running}}", &name]));
            if running != "true" {
                break false;
            }
            assert!(
                Instant::now() < deadline,
                "the health check does not pass: {e}"
            );
            thread::sleep(Duration::from_millis(100));
        };
        if healthy {
            break (
                SocketAddr::from(([127, 0, 0, 1], smtp_port)),
                SocketAddr::from(([127, 0, 0, 1], api_port)),
            );
        }
        let logs = run_for(podman().args(["logs", &name]), Duration::from_secs(30));
        let in_use = logs.as_ref().is_ok_and(|l| l.contains("in use"));
        assert!(
            in_use && attempt < 5,
            "the container stopped before it was healthy (attempt {attempt}): {logs:?}"
        );
        run(podman().args(["rm", "-f", "--time", "0", &name]));
    };

    let transcript = common::deliver(
        smtp,
        "news@example.org",
        "10001@qq.com",
        "Subject: boxed\r\n\r\nhi\r\n",
    )
    .await;
    assert!(
        transcript.starts_with("S: 220 newxmmxszc23-0.qq.com MX QQ Mail Server.\n"),
        "{transcript}"
    );
    assert!(transcript.contains("S: 250 Ok: queued as"), "{transcript}");

    let (status, _) = http(api, "GET", "/api/v1/messages", None, "");
    assert_eq!(status, 401, "the token is required beyond loopback");
    let (status, body) = http(api, "GET", "/api/v1/messages", Some(TOKEN), "");
    assert_eq!(status, 200, "{body}");
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(list["total"], 1, "{body}");
    assert_eq!(list["messages"][0]["subject"], "boxed", "{body}");
    assert_eq!(list["messages"][0]["rcpt_to"][0], "10001@qq.com", "{body}");
    let (status, metrics) = http(api, "GET", "/metrics", Some(TOKEN), "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("\nqqmx_messages_accepted_total 1\n"),
        "{metrics}"
    );

    // Not root: the image's user, and the process as the host sees it.
    let user = run(podman().args(["inspect", "--format", "{{.Config.User}}", &name]));
    assert_eq!(user, "65532:65532");
    let top = run(podman().args(["top", &name, "user", "huser", "args"]));
    let process = top.lines().nth(1).unwrap_or_default();
    let columns: Vec<&str> = process.split_whitespace().collect();
    assert_eq!(
        columns.get(..3),
        Some(&["qqmx", "65532", "/qqmx"][..]),
        "{top}"
    );

    // qqmx is PID 1 in the container and handles SIGTERM itself: it exits 0 on the
    // signal, where a process that ignored it would be killed after the grace time
    // (exit code 137). The exit code says which, whatever the machine's speed.
    run(podman().args(["stop", "--time", "60", &name]));
    let code = run(podman().args(["inspect", "--format", "{{.State.ExitCode}}", &name]));
    assert_eq!(code, "0", "qqmx did not exit by itself on SIGTERM");
}
