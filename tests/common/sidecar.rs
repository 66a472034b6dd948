//! The real `qqmx serve` binary as a sidecar, and a tiny HTTP client for its API.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

pub const QQMX: &str = env!("CARGO_BIN_EXE_qqmx");

/// A running `qqmx serve`, killed on drop.
pub struct Sidecar {
    pub child: Child,
    /// The SMTP listeners in the order printed: (mx, address).
    pub smtp: Vec<(String, SocketAddr)>,
    pub api: SocketAddr,
    pub token: Option<String>,
}

impl Sidecar {
    /// Starts `qqmx serve` with `args` and `env`, and reads the addresses it prints.
    pub fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(QQMX);
        command
            .arg("serve")
            .args(args)
            .env_remove("QQMX_API_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("qqmx starts");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let mut smtp = Vec::new();
        let api = loop {
            let line = lines
                .next()
                .unwrap_or_else(|| panic!("qqmx exited before printing its API address"))
                .expect("a line");
            if let Some(rest) = line.strip_prefix("qqmx listening on ") {
                let mut words = rest.split_whitespace();
                let addr = words.next().and_then(|a| a.parse().ok()).expect("address");
                let mx = words.nth(1).expect("mx name").to_owned();
                smtp.push((mx, addr));
            } else if let Some(url) = line.strip_prefix("qqmx control API on http://") {
                break url.parse().expect("API address");
            }
        };
        let token = env
            .iter()
            .find(|(k, _)| *k == "QQMX_API_TOKEN")
            .map(|(_, v)| (*v).to_owned());
        Self {
            child,
            smtp,
            api,
            token,
        }
    }

    /// `qqmx serve` with mx1 and the API on free loopback ports and a manual clock, plus
    /// `args` and `env`.
    pub fn manual(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut all = vec![
            "--smtp",
            "127.0.0.1:0",
            "--api",
            "127.0.0.1:0",
            "--clock",
            "manual",
        ];
        all.extend_from_slice(args);
        Self::start(&all, env)
    }

    pub fn mx(&self, name: &str) -> SocketAddr {
        self.smtp
            .iter()
            .find(|(mx, _)| mx == name)
            .unwrap_or_else(|| panic!("no listener {name} in {:?}", self.smtp))
            .1
    }

    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.api, "GET", path, self.token.as_deref(), "")
    }

    pub fn json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    pub fn post(&self, path: &str, body: &str) -> (u16, Value) {
        let (status, text) = http(self.api, "POST", path, self.token.as_deref(), body);
        let value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"));
        (status, value)
    }

    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; returns the status and the body. A body that starts with `{`
/// (an object) or `[{` or `[]` (an array) is sent as JSON, any other as TOML, and an
/// empty one with no type.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to the API");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let kind = if body.is_empty() {
        ""
    } else if body.starts_with('{') || body.starts_with("[{") || body.starts_with("[]") {
        "Content-Type: application/json\r\n"
    } else {
        "Content-Type: application/toml\r\n"
    };
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .expect("request");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).expect("answer");
    let answer = String::from_utf8_lossy(&answer);
    let (head, body) = answer.split_once("\r\n\r\n").expect("a header block");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        unchunk(body)
    } else {
        body.to_owned()
    };
    (status, body)
}

fn unchunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).expect("chunk size");
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}
