//! The dashboard and the scenario report in a real browser: Debian's Chromium, headless,
//! driven over WebDriver by `chromedriver` (a few HTTP calls, written here). A sidecar
//! with a manual clock gets mail from a real SMTP client (lettre), and the tests look at
//! the page as a user would: a message appears without a reload, a hostile subject is
//! text, a refusal is explained with its rule and key, a block's countdown follows the
//! clock, a button changes the server, a wrong token is refused. Each view is saved as a
//! PNG under `target/dashboard-screenshots/`.
//!
//! Without `chromium` and `chromedriver` the tests fail saying so; `scripts/test.sh` and
//! `.ci/run` install them. `QQMX_SKIP_BROWSER_TEST=1` skips them on a machine without;
//! a browser that does not start fails them with chromedriver's answer.
#![cfg(feature = "cli")]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::sidecar::{QQMX, Sidecar, http};
use lettre::message::{MultiPart, SinglePart, header::ContentType};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Whether the browser tests run here: not when `QQMX_SKIP_BROWSER_TEST` is set (with a
/// note); else they do, and a missing browser fails them saying what to install.
fn browser_available() -> bool {
    if std::env::var_os("QQMX_SKIP_BROWSER_TEST").is_some_and(|v| !v.is_empty()) {
        eprintln!("QQMX_SKIP_BROWSER_TEST is set: the dashboard is not tested in a browser");
        return false;
    }
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    assert!(
        missing.is_empty(),
        "the browser tests need Debian's chromium and chromium-driver ({} missing): \
         apt-get install chromium chromium-driver (scripts/test.sh does), or set \
         QQMX_SKIP_BROWSER_TEST=1 to skip them",
        missing.join(", ")
    );
    true
}

/// Where the screenshots go: a test artefact under the target directory.
fn shots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-screenshots");
    std::fs::create_dir_all(&dir).expect("the screenshot folder");
    dir
}

/// How long a condition in the page may take: a bound on a hang only, generous for a
/// loaded 2-core machine (the page polls every second and draws every frame).
const PATIENCE: Duration = Duration::from_secs(30);

/// One WebDriver request to `chromedriver` (which keeps connections open, so the answer
/// is read by its length); the status and the JSON answer.
fn webdriver(addr: SocketAddr, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut stream = TcpStream::connect(addr).expect("connect to chromedriver");
    // A bound on a hang only: starting Chromium or loading a page takes seconds on a
    // loaded 2-core machine.
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .expect("timeout");
    let body = body.map(Value::to_string).unwrap_or_default();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost:{}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        addr.port(),
        body.len()
    )
    .expect("a request");
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line).expect("a status line");
    let status = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a status: {status_line:?}"));
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).expect("a header line");
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().expect("a length");
        }
    }
    let mut answer = vec![0; length];
    reader.read_exact(&mut answer).expect("the answer");
    let answer = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    (status, answer)
}

/// A child process killed on drop.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `chromedriver` on a free port, with one headless Chromium session; both ended on drop.
struct Browser {
    _driver: Killed,
    addr: SocketAddr,
    session: String,
    _profile: TempDir,
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Browser {
    fn start(name: &str) -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Killed(
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("chromedriver starts"),
        );
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(started.elapsed() < PATIENCE, "chromedriver did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile =
            std::env::temp_dir().join(format!("qqmx-chromium-{}-{name}", std::process::id()));
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1200,900",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let (status, answer) = webdriver(addr, "POST", "/session", Some(&caps));
        assert_eq!(
            status, 200,
            "Chromium did not start under chromedriver: {answer}"
        );
        let session = answer["value"]["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Self {
            _driver: driver,
            addr,
            session,
            _profile: TempDir(profile),
        }
    }

    /// One WebDriver command; the answer's `value`, or a panic naming the error.
    fn command(&self, method: &str, path: &str, body: &Value) -> Value {
        self.try_command(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn try_command(&self, method: &str, path: &str, body: &Value) -> Result<Value, Value> {
        let target = format!("/session/{}{path}", self.session);
        let body = (method != "GET").then_some(body);
        let (status, answer) = webdriver(self.addr, method, &target, body);
        if status == 200 {
            Ok(answer["value"].clone())
        } else {
            Err(answer["value"].clone())
        }
    }

    fn open(&self, url: &str) {
        self.command("POST", "/url", &json!({ "url": url }));
    }

    /// Runs `script` (a function body) in the page and returns its value.
    fn run(&self, script: &str) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            &json!({ "script": script, "args": [] }),
        )
    }

    /// The text of the first element `selector` matches, if any.
    fn text(&self, selector: &str) -> Option<String> {
        let script = format!(
            "const e = document.querySelector({}); return e ? e.textContent : null;",
            json!(selector)
        );
        self.run(&script).as_str().map(str::to_owned)
    }

    /// Waits until `condition` (a script returning a truthy value) holds; returns its value.
    fn wait(&self, condition: &str, what: &str) -> Value {
        let started = Instant::now();
        loop {
            let value = self.run(condition);
            if !(value.is_null() || value == false || value == "") {
                return value;
            }
            assert!(
                started.elapsed() < PATIENCE,
                "{what}: not so after {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn element(&self, selector: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            &json!({"using": "css selector", "value": selector}),
        );
        found["element-6066-11e4-a52e-4f735466cecf"]
            .as_str()
            .expect("an element reference")
            .to_owned()
    }

    fn click(&self, selector: &str) {
        let id = self.element(selector);
        self.command("POST", &format!("/element/{id}/click"), &json!({}));
    }

    fn type_into(&self, selector: &str, text: &str) {
        let id = self.element(selector);
        self.command("POST", &format!("/element/{id}/clear"), &json!({}));
        self.command(
            "POST",
            &format!("/element/{id}/value"),
            &json!({ "text": text }),
        );
    }

    fn resize(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            &json!({"width": width, "height": height}),
        );
    }

    /// Whether an alert (or confirm, prompt) is open.
    fn alert_open(&self) -> bool {
        self.try_command("GET", "/alert/text", &Value::Null).is_ok()
    }

    fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.command("GET", "/screenshot", &Value::Null);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().expect("base64 text"))
            .expect("base64");
        let path = shots().join(format!("{name}.png"));
        std::fs::write(&path, bytes).expect("write the screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Chromium quits with its session; the driver is killed after.
        let _ = webdriver(
            self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            None,
        );
    }
}

/// Sends one message with lettre, a text and an HTML part; the server's reply as text.
fn send(smtp: SocketAddr, subject: &str, html: &str) -> Result<String, String> {
    let message = Message::builder()
        .from("Alice <alice@example.org>".parse().expect("from"))
        .to("10001@qq.com".parse().expect("to"))
        .subject(subject)
        .multipart(
            MultiPart::alternative()
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_PLAIN)
                        .body(String::from("plain <b>text</b> part")),
                )
                .singlepart(
                    SinglePart::builder()
                        .header(ContentType::TEXT_HTML)
                        .body(html.to_owned()),
                ),
        )
        .expect("a message");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(smtp.ip().to_string())
                .port(smtp.port())
                .hello_name(lettre::transport::smtp::extension::ClientId::Domain(
                    "mail.example.org".into(),
                ))
                .build();
        transport
            .send(message)
            .await
            .map(|r| format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" ")))
            .map_err(|e| e.to_string())
    })
}

/// The seconds of a countdown as the page shows it (`9m 58s`).
fn seconds(text: &str) -> u64 {
    text.split_whitespace()
        .map(|part| {
            let (n, unit) = part.split_at(part.len() - 1);
            let n: u64 = n.parse().unwrap_or_else(|_| panic!("a countdown: {text}"));
            n * match unit {
                "d" => 86_400,
                "h" => 3600,
                "m" => 60,
                _ => 1,
            }
        })
        .sum()
}

const HOSTILE_SUBJECT: &str = "<script>alert(1)</script>";

/// Script in every field: a display name, a header, an encoded subject, and an HTML body
/// in quoted-printable.
const HOSTILE_MESSAGE: &str = "From: \"<img src=x onerror=alert(5)>\" <evil@example.org>\r\n\
    To: 10001@qq.com\r\n\
    Subject: =?utf-8?b?PHNjcmlwdD5hbGVydCg3KTwvc2NyaXB0Pg==?=\r\n\
    X-Evil: <script>alert(6)</script>\r\n\
    Content-Type: text/html; charset=utf-8\r\n\
    Content-Transfer-Encoding: quoted-printable\r\n\
    \r\n\
    <scr=69pt>alert(8)</script><img src=3D\"x\" onerror=3D\"alert(9)\">\r\n";

#[test]
fn the_dashboard_shows_mail_refusals_blocks_and_drives_the_server() {
    if !browser_available() {
        return;
    }
    let sidecar = Sidecar::manual(&[], &[]);
    let smtp = sidecar.mx("mx1");
    let base = format!("http://{}/", sidecar.api);
    let browser = Browser::start("main");

    // The page, its files' types and its policy.
    let (status, _) = sidecar.get("/");
    assert_eq!(status, 200);
    browser.open(&format!("{base}#messages"));
    browser.wait(
        "return document.getElementById('conn').textContent.includes('live')",
        "the event stream is followed",
    );

    // A message whose every field is hostile, some of them encoded, then one with a
    // hostile subject and HTML part from a real client, arrive while the page is open.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let transcript = runtime.block_on(common::deliver(
        smtp,
        "evil@example.org",
        "10001@qq.com",
        HOSTILE_MESSAGE,
    ));
    assert!(transcript.contains("queued"), "{transcript}");
    let html = "<p id=\"in-frame\"><b>bold</b> <img src=\"http://192.0.2.1/track.png\" \
                onerror=\"alert(2)\"></p><script>alert(3);parent.document.title='owned'</script>";
    let reply = send(smtp, HOSTILE_SUBJECT, html).expect("the first message is accepted");
    assert!(reply.starts_with("250"), "{reply}");
    let subject = browser.wait(
        "const s = document.querySelectorAll('#messages li .subject'); \
         return s.length === 2 && s[0].textContent;",
        "the message appears in the list without a reload",
    );
    assert_eq!(subject, HOSTILE_SUBJECT, "the subject is shown as text");
    assert!(!browser.alert_open(), "no alert from the subject");
    let scripts = browser.run("return document.querySelectorAll('script').length");
    assert_eq!(scripts, 1, "no script element but the page's own");
    browser.click("#messages li");
    browser.wait(
        "return document.getElementById('msg-subject').textContent",
        "the message opens",
    );
    assert_eq!(
        browser.text("#msg-subject").as_deref(),
        Some(HOSTILE_SUBJECT)
    );
    assert_eq!(
        browser.text("#msg-text").as_deref(),
        Some("plain <b>text</b> part")
    );
    browser.click("#msg-tabs [data-part=html]");
    let frame = browser.run(
        "const f = document.getElementById('msg-html'); \
         return [f.getAttribute('sandbox'), f.srcdoc.includes('<b>bold</b>'), document.title];",
    );
    assert_eq!(
        frame,
        json!(["", true, "qqmx"]),
        "the HTML part is sandboxed"
    );
    browser.screenshot("messages");
    // The hostile one: its header values are text, its encoded HTML stays in the frame.
    browser.click("#messages li:nth-child(2)");
    browser.wait(
        "return document.getElementById('msg-envelope').textContent.includes('evil@example.org')",
        "the hostile message opens",
    );
    browser.click("#msg-tabs [data-part=headers]");
    let headers = browser.text("#msg-headers").expect("the header table");
    assert!(headers.contains("<script>alert(6)</script>"), "{headers}");
    assert!(
        headers.contains("<img src=x onerror=alert(5)>"),
        "{headers}"
    );
    let srcdoc = browser.run("return document.getElementById('msg-html').srcdoc");
    assert!(
        srcdoc
            .as_str()
            .expect("text")
            .contains("<script>alert(8)</script>"),
        "the quoted-printable part is decoded into the sandboxed frame: {srcdoc}"
    );
    assert_eq!(
        browser.run("return document.querySelectorAll('img, script:not([src]), iframe:not(#msg-html)').length"),
        0,
        "nothing from mail became an element of the page"
    );
    assert!(!browser.alert_open(), "no alert from any field");
    assert_eq!(browser.run("return document.title"), "qqmx");

    // A refusal: one message a minute per IP; the second is refused and the IP blocked.
    let (status, _) = sidecar.post(
        "/api/v1/limit",
        r#"{"quota": "ip_messages", "window": "minute", "limit": 1}"#,
    );
    assert_eq!(status, 200);
    let refused = send(smtp, "second", "<p>second</p>").expect_err("the second is refused");
    assert!(
        refused.contains("550") || refused.contains("frequency"),
        "{refused}"
    );
    browser.open(&format!("{base}#live"));
    browser.wait(
        "return document.querySelector('#events button.why')",
        "the refusal is in the event list",
    );
    browser.wait(
        "return document.getElementById('stat-blocks').textContent === '1'",
        "the block is counted",
    );
    browser.screenshot("live");
    // The filters narrow the list: the refusals of one kind, the decision and the reply.
    browser.type_into("#f-kind", "ip_frequency");
    let rows = browser.wait(
        "const rows = Array.from(document.querySelectorAll('#events li')); \
         return rows.length === 2 && rows.every(r => r.textContent.includes('ip_frequency')) \
           && rows.map(r => r.children[3].textContent).sort().join(',');",
        "the kind filter keeps the decision and the reply",
    );
    assert_eq!(rows, "decision,reply");
    browser.click("#events button.why");
    let explained = browser.wait(
        "const x = document.getElementById('explain'); return !x.hidden && x.textContent;",
        "the refusal is explained",
    );
    let explained = explained.as_str().expect("text");
    assert!(explained.contains("quota.ip_messages"), "{explained}");
    assert!(explained.contains("ip:127.0.0.1"), "{explained}");

    // The block's countdown follows the server's clock.
    let left = browser.wait(
        "const c = document.querySelector('#blocks td.left'); return c && c.textContent;",
        "the block is listed",
    );
    let before = seconds(left.as_str().expect("text"));
    assert!(
        before > 60,
        "the block lasts more than the advance: {before}s"
    );
    let (status, _) = sidecar.post("/api/v1/clock/advance", r#"{"by": "1m"}"#);
    assert_eq!(status, 200);
    let script = format!(
        "const c = document.querySelector('#blocks td.left'); \
         return c && c.textContent !== {} && c.textContent;",
        json!(left)
    );
    let after = browser.wait(&script, "the countdown moves with the clock");
    assert_eq!(seconds(after.as_str().expect("text")), before - 60);
    browser.screenshot("policy");

    // Control: buttons file a complaint against an IP and take an MX host down, as the
    // API then sees.
    browser.open(&format!("{base}#control"));
    let before = sidecar.json("/api/v1/reputation/192.0.2.9")["reputation"].clone();
    browser.type_into("#c-list input[name=ip]", "192.0.2.9");
    browser.click("#c-list button[data-action=complain]");
    browser.wait(
        "return document.getElementById('c-result').textContent.includes('/api/v1/complain')",
        "the complaint is sent",
    );
    let after = sidecar.json("/api/v1/reputation/192.0.2.9")["reputation"].clone();
    assert!(
        after.as_u64() < before.as_u64(),
        "a complaint lowers the reputation: {before} then {after}"
    );
    browser.wait(
        "return document.querySelector('#mx-list li[data-mx=mx1] button')",
        "the MX hosts are listed",
    );
    browser.click("#mx-list li[data-mx=mx1] button");
    browser.wait(
        "return document.querySelector('#mx-list .down-mx')",
        "the MX host shows down",
    );
    assert_eq!(sidecar.json("/api/v1/info")["listeners"][0]["up"], false);
    browser.screenshot("control");

    // At 320 px the page needs no sideways scrolling.
    browser.resize(320, 800);
    browser.open(&format!("{base}#live"));
    browser.wait(
        "return document.querySelector('#events li')",
        "the events show at 320 px",
    );
    let width = browser
        .run("return [document.documentElement.scrollWidth, document.documentElement.clientWidth]");
    assert!(
        width[0].as_u64() <= width[1].as_u64(),
        "the page is wider than the window at 320 px: {width}"
    );
    browser.screenshot("live-320px");
}

#[test]
fn a_token_protected_dashboard_asks_for_the_token_and_refuses_a_wrong_one() {
    if !browser_available() {
        return;
    }
    let sidecar = Sidecar::manual(&[], &[("QQMX_API_TOKEN", "s3cret")]);
    let (status, _) = sidecar.get("/api/v1/info");
    assert_eq!(status, 200, "the helper sends the token");
    let (status, _) = http(sidecar.api, "GET", "/api/v1/info", None, "");
    assert_eq!(status, 401);
    let browser = Browser::start("token");
    let base = format!("http://{}/", sidecar.api);
    browser.open(&base);
    browser.wait(
        "return !document.getElementById('login').hidden",
        "the login form shows",
    );
    browser.type_into("#login-token", "wrong");
    browser.click("#login-form button");
    browser.wait(
        "return document.getElementById('login-error').textContent.includes('refused')",
        "a wrong token is refused",
    );
    assert_eq!(
        browser.run("return document.getElementById('view-live').hidden"),
        true
    );
    browser.screenshot("login-refused");
    browser.type_into("#login-token", "s3cret");
    browser.click("#login-form button");
    browser.wait(
        "return document.getElementById('login').hidden && !document.getElementById('view-live').hidden \
         && document.getElementById('conn').textContent.includes('live')",
        "the right token opens the dashboard and its event stream",
    );
    let url = browser.run("return location.href");
    assert!(
        !url.as_str().expect("text").contains("s3cret"),
        "the token is never in the URL: {url}"
    );
    assert_eq!(
        browser.run("return sessionStorage.getItem('qqmx-token')"),
        "s3cret"
    );
}

#[test]
fn the_scenario_report_shows_the_block_in_its_chart() {
    if !browser_available() {
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let reports = std::env::temp_dir().join(format!("qqmx-html-report-{}", std::process::id()));
    let output = Command::new(QQMX)
        .arg("run")
        .arg(root.join("scenarios/ip-frequency-minute.toml"))
        .args(["--quiet", "--report-dir"])
        .arg(&reports)
        .arg("--")
        .arg("python3")
        .arg(root.join("examples/senders/naive.py"))
        .output()
        .expect("qqmx run starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the naive sender fails: {stdout}"
    );
    let html = reports.join("ip-frequency-minute.html");
    assert!(
        stdout.contains(&html.display().to_string()),
        "qqmx run prints the report's path: {stdout}"
    );
    let browser = Browser::start("report");
    browser.open(&format!("file://{}", html.display()));
    let seen = browser.wait(
        "const svg = document.querySelector('svg.timeline'); \
         return svg && [svg.querySelectorAll('rect.block').length, \
                        svg.querySelectorAll('rect.refusal').length, \
                        document.querySelectorAll('.outcome.failed').length, \
                        document.body.textContent.includes('seed 101')];",
        "the report has its chart",
    );
    assert!(seen[0].as_u64() >= Some(1), "a block is shaded: {seen}");
    assert!(seen[1].as_u64() >= Some(1), "refusals are drawn: {seen}");
    assert!(seen[2].as_u64() >= Some(1), "a failed expectation: {seen}");
    assert_eq!(seen[3], true, "the seed is shown: {seen}");
    let title = browser.run(
        "return Array.from(document.querySelectorAll('svg.timeline rect.block title')).map(t => t.textContent).join(' ')",
    );
    assert!(
        title.as_str().expect("text").contains("ip:127.0.0.1"),
        "the block names its key: {title}"
    );
    browser.screenshot("scenario-report");
    let _ = std::fs::remove_dir_all(&reports);
}

#[test]
fn the_live_view_takes_a_flood_of_events_and_keeps_its_list_bounded() {
    if !browser_available() {
        return;
    }
    let sidecar = Sidecar::manual(&["--no-limits"], &[]);
    let smtp = sidecar.mx("mx1");
    let browser = Browser::start("flood");
    browser.open(&format!("http://{}/#live", sidecar.api));
    browser.wait(
        "return document.getElementById('conn').textContent.includes('live')",
        "the event stream is followed",
    );
    // Eight clients at once, 400 messages: thousands of events, read by the page in
    // batches while they come.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let clients = (0..8).map(|c| {
            tokio::spawn(async move {
                for i in 0..50 {
                    let body = format!("Subject: flood {c}-{i}\r\n\r\nhello\r\n");
                    common::deliver(smtp, "a@example.org", "10001@qq.com", &body).await;
                }
            })
        });
        for client in clients.collect::<Vec<_>>() {
            client.await.expect("a client");
        }
    });
    let stats = sidecar.json("/api/v1/stats");
    assert_eq!(stats["since_reset"]["messages_accepted"], 400);
    let held = stats["held"]["events"].as_u64().expect("a count");
    assert!(held > 5000, "more events than the page keeps: {held}");
    // The page keeps the newest 5,000 and shows 300 rows, having counted every one.
    browser.wait(
        "return document.getElementById('event-count').textContent.includes('5000 held')",
        "the page holds its cap of events",
    );
    browser.wait(
        "return document.getElementById('stat-accepted').textContent === '400'",
        "the counts are the server's",
    );
    browser.wait(
        "return document.getElementById('chart').getAttribute('aria-label').includes(': 400 accepted')",
        "the chart counts every message of the minute",
    );
    let rows = browser.run("return document.querySelectorAll('#events li').length");
    assert_eq!(rows, 300, "the list is bounded");
    let newest =
        browser.run("return document.querySelector('#events li span:nth-child(4)').textContent");
    assert_eq!(newest, "closed", "the newest event is on top");
    browser.screenshot("live-flood");
}
