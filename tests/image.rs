//! The container image: built with podman from the Dockerfile's runtime stage, run, and
//! probed over SMTP and HTTP. Needs podman and runc (`.ci/run` installs them); set
//! QQMX_SKIP_IMAGE_TEST=1 to skip on a machine without them.
#![cfg(feature = "cli")]

mod common;

use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::time::{Duration, Instant};

use common::sidecar::http;

const TOKEN: &str = "image-test-token";

/// Removes the container however the test ends.
struct Container(String);

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman().args(["rm", "-f", &self.0]).output();
    }
}

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

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

fn run(command: &mut Command) -> String {
    let output = command.output().expect("command runs");
    assert!(
        output.status.success(),
        "{command:?}: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[tokio::test]
async fn the_image_serves_smtp_and_the_api_as_a_non_root_user() {
    if std::env::var_os("QQMX_SKIP_IMAGE_TEST").is_some() {
        eprintln!("QQMX_SKIP_IMAGE_TEST is set: the image is not tested");
        return;
    }
    assert!(
        Command::new("podman").arg("--version").output().is_ok(),
        "podman is missing: install podman and runc (apt-get install podman runc), \
         or set QQMX_SKIP_IMAGE_TEST=1"
    );
    let root = env!("CARGO_MANIFEST_DIR");
    let tag = run(Command::new(format!("{root}/scripts/build-image.sh")).arg("qqmx:test"));
    assert_eq!(tag, "qqmx:test");

    let (smtp_port, api_port) = (free_port(), free_port());
    let name = format!("qqmx-test-{}", std::process::id());
    let id = run(podman().args([
        "run",
        "-d",
        "--rm",
        "--network=host",
        "--name",
        &name,
        "-e",
        &format!("QQMX_SMTP=mx1=127.0.0.1:{smtp_port}"),
        "-e",
        &format!("QQMX_API=0.0.0.0:{api_port}"),
        "-e",
        &format!("QQMX_API_TOKEN={TOKEN}"),
        "qqmx:test",
    ]));
    let _container = Container(id.clone());
    let api = SocketAddr::from(([127, 0, 0, 1], api_port));
    let smtp = SocketAddr::from(([127, 0, 0, 1], smtp_port));

    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(api).is_err() {
        assert!(
            Instant::now() < deadline,
            "the API did not come up: {}",
            run(podman().args(["logs", &id]))
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    run(podman().args(["healthcheck", "run", &id]));

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
    assert_eq!(status, 200);
    let list: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(list["messages"][0]["subject"], "boxed");
    let (_, metrics) = http(api, "GET", "/metrics", Some(TOKEN), "");
    assert!(
        metrics.contains("\nqqmx_messages_accepted_total 1\n"),
        "{metrics}"
    );

    let user = run(podman().args(["inspect", "--format", "{{.Config.User}}", &id]));
    assert_eq!(user, "65532:65532");
    let health = run(podman().args(["inspect", "--format", "{{.Config.Healthcheck.Test}}", &id]));
    assert!(health.contains("/qqmx health"), "{health}");
}
