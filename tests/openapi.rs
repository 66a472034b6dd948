//! `openapi.json` against the real control API.
//!
//! Every documented operation is routed and every route in `src/control/routes.rs` is
//! documented; each operation, called on a running server with a message and a refusal in
//! its store, answers with a status the document lists, in a media type it lists, and (for
//! JSON) with a body its schema accepts, naming no field the schema leaves out. The API
//! serves the file as it is in the repository, and a few promises of the document hold: bad
//! bodies and query strings get 400 with a JSON `error`, a token guards all but the health
//! checks, unknown paths get 404 and unknown methods 405.
#![cfg(feature = "control")]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use qqmx::control::{self, ApiOptions};
use qqmx::units::{QuotaName, Window};
use qqmx::{Clock, Config, ReplyKind, Server};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

const DOCUMENT: &str = include_str!("../openapi.json");
const ROUTES: &str = include_str!("../src/control/routes.rs");
/// The error of the router's fallback, for a path it does not know.
const NO_ROUTE: &str = "no such route; see /openapi.json";
const TIMEOUT: Duration = Duration::from_secs(10);
const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

fn document() -> Value {
    serde_json::from_str(DOCUMENT).expect("openapi.json is JSON")
}

// ------------------------------------------------------------------------ the server

/// A server with its SMTP listener (as `mx1`) and its API, each on a free port.
struct Sidecar {
    api: SocketAddr,
    smtp: SocketAddr,
    server: Server,
}

async fn start(clock: Clock, token: Option<&str>) -> Sidecar {
    // With a test CA, so that `GET /api/v1/tls/ca.pem` has one to serve.
    let mut config = Config::default();
    config.tls.ca = true;
    let server = Server::new(config, clock).expect("a server on the default config");
    let smtp = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the SMTP listener");
    let smtp_addr = smtp.local_addr().expect("the SMTP address");
    let running = server.clone();
    tokio::spawn(async move { running.run(smtp, std::future::pending()).await });

    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the API listener");
    let api = listener.local_addr().expect("the API address");
    let options = ApiOptions::new(token.map(str::to_owned)).listener("mx1", smtp_addr);
    let router = control::router(server.clone(), options);
    tokio::spawn(async move {
        control::serve(listener, router, std::future::pending())
            .await
            .expect("the API serves");
    });
    Sidecar {
        api,
        smtp: smtp_addr,
        server,
    }
}

fn manual_clock() -> Clock {
    Clock::manual_at_unix(1_750_000_000)
}

// ------------------------------------------------------------------------ HTTP/1.1

/// An HTTP answer.
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The media type of `Content-Type`, without parameters.
    fn media_type(&self) -> String {
        self.header("content-type")
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    /// The `error` of a JSON error answer.
    fn error(&self) -> String {
        assert_eq!(
            self.media_type(),
            "application/json",
            "an error is JSON: {}",
            self.text()
        );
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no `error` string in {}", self.text()))
            .to_owned()
    }
}

/// One request, on its own connection (`Connection: close`).
struct Call<'a> {
    method: &'a str,
    target: String,
    headers: Vec<(&'a str, &'a str)>,
    body: &'a [u8],
}

impl<'a> Call<'a> {
    fn new(method: &'a str, target: impl Into<String>) -> Self {
        Self {
            method,
            target: target.into(),
            headers: Vec::new(),
            body: b"",
        }
    }

    fn header(mut self, name: &'a str, value: &'a str) -> Self {
        self.headers.push((name, value));
        self
    }

    fn json(self, body: &'a str) -> Self {
        self.header("Content-Type", "application/json")
            .body(body.as_bytes())
    }

    fn body(mut self, body: &'a [u8]) -> Self {
        self.body = body;
        self
    }

    async fn connect(&self, addr: SocketAddr) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.expect("connect to the API");
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            self.method,
            self.target,
            self.body.len()
        );
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream
            .write_all(head.as_bytes())
            .await
            .expect("write the request head");
        stream
            .write_all(self.body)
            .await
            .expect("write the request body");
        stream
    }

    /// Sends the request and reads the whole answer.
    async fn send(self, addr: SocketAddr) -> Answer {
        let what = format!("{} {}", self.method, self.target);
        let mut stream = self.connect(addr).await;
        let mut raw = Vec::new();
        tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut raw))
            .await
            .unwrap_or_else(|_| panic!("{what}: no complete answer in {TIMEOUT:?}"))
            .expect("read the answer");
        let (mut answer, rest) =
            parse_head(&raw).unwrap_or_else(|| panic!("{what}: no header block"));
        answer.body = if answer
            .header("transfer-encoding")
            .is_some_and(|t| t.eq_ignore_ascii_case("chunked"))
        {
            let (body, complete) = dechunk(rest);
            assert!(complete, "{what}: a chunked body without its last chunk");
            body
        } else {
            rest.to_vec()
        };
        answer
    }

    /// Sends the request and reads the head of the answer and the first `events` server-sent
    /// events (not the comments that keep the stream alive).
    async fn stream(self, addr: SocketAddr, events: usize) -> (Answer, Vec<SseEvent>) {
        let what = format!("{} {}", self.method, self.target);
        let mut stream = self.connect(addr).await;
        let mut raw = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            if let Some((answer, rest)) = parse_head(&raw) {
                let text = if answer.header("transfer-encoding").is_some() {
                    dechunk(rest).0
                } else {
                    rest.to_vec()
                };
                let found = sse_events(&String::from_utf8_lossy(&text));
                if answer.status != 200 || found.len() >= events {
                    return (answer, found);
                }
            }
            let n = tokio::time::timeout(TIMEOUT, stream.read(&mut buffer))
                .await
                .unwrap_or_else(|_| panic!("{what}: not {events} events in {TIMEOUT:?}"))
                .expect("read the stream");
            assert!(n > 0, "{what}: the stream ended");
            raw.extend_from_slice(&buffer[..n]);
        }
    }
}

/// The status and headers, and what follows them.
fn parse_head(raw: &[u8]) -> Option<(Answer, &[u8])> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .expect("a numeric status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    Some((answer, &raw[end + 4..]))
}

/// The content of a chunked body as far as it has arrived, and whether it is complete.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut out = Vec::new();
    loop {
        let Some(line_end) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (out, false);
        };
        let size = String::from_utf8_lossy(&raw[..line_end]);
        let size = usize::from_str_radix(size.split(';').next().unwrap_or("").trim(), 16)
            .expect("a chunk size");
        if size == 0 {
            return (out, true);
        }
        let data = &raw[line_end + 2..];
        if data.len() < size + 2 {
            return (out, false);
        }
        out.extend_from_slice(&data[..size]);
        raw = &data[size + 2..];
    }
}

/// One server-sent event.
#[derive(Debug, Default)]
struct SseEvent {
    event: String,
    id: String,
    data: String,
}

/// The complete events in `text`, comments left out.
fn sse_events(text: &str) -> Vec<SseEvent> {
    let text = text.replace("\r\n", "\n");
    let mut blocks: Vec<&str> = text.split("\n\n").collect();
    blocks.pop(); // not ended by a blank line yet
    blocks
        .into_iter()
        .filter_map(|block| {
            let mut event = SseEvent::default();
            let mut any = false;
            for line in block.lines().filter(|l| !l.starts_with(':')) {
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                any = true;
                match field {
                    "event" => event.event = value,
                    "id" => event.id = value,
                    "data" if event.data.is_empty() => event.data = value,
                    "data" => event.data = format!("{}\n{value}", event.data),
                    _ => {}
                }
            }
            any.then_some(event)
        })
        .collect()
}

// ------------------------------------------------------------------------ SMTP

/// A plain SMTP client, enough to put a message and a refusal in the store.
struct Smtp {
    reader: BufReader<TcpStream>,
}

impl Smtp {
    async fn connect(addr: SocketAddr) -> (Self, String) {
        let stream = TcpStream::connect(addr).await.expect("connect to SMTP");
        let mut smtp = Self {
            reader: BufReader::new(stream),
        };
        let greeting = smtp.reply().await;
        (smtp, greeting)
    }

    /// A whole reply, its lines joined by `\n`.
    async fn reply(&mut self) -> String {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            let n = tokio::time::timeout(TIMEOUT, self.reader.read_line(&mut line))
                .await
                .expect("an SMTP reply in time")
                .expect("read an SMTP reply");
            assert!(n > 0, "the SMTP server closed the connection");
            let line = line.trim_end().to_owned();
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if last {
                return lines.join("\n");
            }
        }
    }

    async fn send(&mut self, line: &str) -> String {
        self.reader
            .get_mut()
            .write_all(format!("{line}\r\n").as_bytes())
            .await
            .expect("write an SMTP command");
        self.reply().await
    }
}

/// Sends one message from `from` to `10001@qq.com`, trying `nobody@qq.com` too; returns
/// the reply to the end of data, or the first refusal.
async fn deliver(addr: SocketAddr, from: &str) -> String {
    let (mut smtp, greeting) = Smtp::connect(addr).await;
    assert!(greeting.starts_with("220"), "{greeting}");
    let ehlo = smtp.send("EHLO client.example.org").await;
    assert!(ehlo.starts_with("250"), "{ehlo}");
    for (command, wanted) in [
        (format!("MAIL FROM:<{from}>"), "250"),
        ("RCPT TO:<10001@qq.com>".to_owned(), "250"),
        ("RCPT TO:<nobody@qq.com>".to_owned(), "550"),
        ("DATA".to_owned(), "354"),
    ] {
        let reply = smtp.send(&command).await;
        if !reply.starts_with(wanted) {
            smtp.send("QUIT").await;
            return reply;
        }
    }
    let end = smtp
        .send(&format!(
            "From: <{from}>\r\nTo: <10001@qq.com>\r\nSubject: Hello\r\n \
             folded\r\n\r\nHi there.\r\n."
        ))
        .await;
    smtp.send("QUIT").await;
    end
}

// ------------------------------------------------------------------------ JSON Schema

/// A validator for the part of JSON Schema 2020-12 the document uses. It is strict in one
/// way JSON Schema is not: an object may only hold properties the schema names (through
/// `properties`, `$ref` and `allOf`) unless the schema allows others with
/// `additionalProperties` or `propertyNames`, or names none at all.
struct Validator<'a> {
    doc: &'a Value,
}

impl Validator<'_> {
    fn target(&self, reference: &str) -> &Value {
        let pointer = reference
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("an external $ref: {reference}"));
        self.doc
            .pointer(pointer)
            .unwrap_or_else(|| panic!("a $ref to nothing: {reference}"))
    }

    /// The errors of `value` against `schema`, each with where it is.
    fn errors(&self, schema: &Value, value: &Value, at: &str) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(schema, value, at, &mut errors);
        if errors.is_empty() {
            self.strict(schema, value, at, &mut errors);
        }
        errors
    }

    fn check(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        let schema = match schema {
            Value::Bool(true) => return,
            Value::Bool(false) => {
                errors.push(format!("{at}: not allowed"));
                return;
            }
            Value::Object(schema) => schema,
            other => panic!("a schema that is neither an object nor a boolean: {other}"),
        };
        if let Some(Value::String(reference)) = schema.get("$ref") {
            self.check(self.target(reference), value, at, errors);
        }
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::String(t) => vec![t.as_str()],
                Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
                other => panic!("a bad `type`: {other}"),
            };
            if !types.iter().any(|t| is_type(value, t)) {
                errors.push(format!("{at}: {value} is not of type {types:?}"));
                return;
            }
        }
        if let Some(wanted) = schema.get("const")
            && wanted != value
        {
            errors.push(format!("{at}: {value} is not {wanted}"));
        }
        if let Some(Value::Array(options)) = schema.get("enum")
            && !options.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {options:?}"));
        }
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && value.as_f64().is_some_and(|v| v < min)
        {
            errors.push(format!("{at}: {value} is below {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && value.as_f64().is_some_and(|v| v > max)
        {
            errors.push(format!("{at}: {value} is above {max}"));
        }
        if schema.get("format").and_then(Value::as_str) == Some("date-time")
            && let Some(text) = value.as_str()
            && !is_utc_time(text)
        {
            errors.push(format!("{at}: `{text}` is not an RFC 3339 time in UTC"));
        }
        if let Some(Value::String(pattern)) = schema.get("pattern")
            && let Some(text) = value.as_str()
            && !matches_pattern(pattern, text)
        {
            errors.push(format!("{at}: `{text}` does not match {pattern}"));
        }
        if let Some(Value::Array(all)) = schema.get("allOf") {
            for sub in all {
                self.check(sub, value, at, errors);
            }
        }
        if let Some(condition) = schema.get("if") {
            let branch = if self.passes(condition, value) {
                "then"
            } else {
                "else"
            };
            if let Some(sub) = schema.get(branch) {
                self.check(sub, value, at, errors);
            }
        }
        if let Some(Value::Array(options)) = schema.get("oneOf") {
            let matching = options.iter().filter(|o| self.passes(o, value)).count();
            if matching != 1 {
                errors.push(format!(
                    "{at}: {value} matches {matching} of the oneOf options, not 1"
                ));
            }
        }
        if let Some(Value::Array(options)) = schema.get("anyOf")
            && !options.iter().any(|o| self.passes(o, value))
        {
            errors.push(format!("{at}: {value} matches none of the anyOf options"));
        }
        if let Some(not) = schema.get("not")
            && self.passes(not, value)
        {
            errors.push(format!("{at}: {value} matches what `not` forbids"));
        }
        match value {
            Value::Object(fields) => {
                if let Some(Value::Array(required)) = schema.get("required") {
                    for name in required.iter().filter_map(Value::as_str) {
                        if !fields.contains_key(name) {
                            errors.push(format!("{at}: no `{name}`"));
                        }
                    }
                }
                let properties = schema.get("properties").and_then(Value::as_object);
                for (name, field) in fields {
                    let here = format!("{at}.{name}");
                    if let Some(names) = schema.get("propertyNames") {
                        self.check(names, &Value::String(name.clone()), &here, errors);
                    }
                    match properties.and_then(|p| p.get(name)) {
                        Some(sub) => self.check(sub, field, &here, errors),
                        None => {
                            if let Some(extra) = schema.get("additionalProperties") {
                                self.check(extra, field, &here, errors);
                            }
                        }
                    }
                }
            }
            Value::Array(items) => {
                if let Some(min) = schema.get("minItems").and_then(Value::as_u64)
                    && (items.len() as u64) < min
                {
                    errors.push(format!("{at}: fewer than {min} items"));
                }
                let prefix = match schema.get("prefixItems") {
                    Some(Value::Array(prefix)) => prefix.as_slice(),
                    _ => &[],
                };
                for (i, item) in items.iter().enumerate() {
                    let here = format!("{at}[{i}]");
                    if let Some(sub) = prefix.get(i) {
                        self.check(sub, item, &here, errors);
                    } else if let Some(sub) = schema.get("items") {
                        self.check(sub, item, &here, errors);
                    }
                }
            }
            _ => {}
        }
    }

    fn passes(&self, schema: &Value, value: &Value) -> bool {
        let mut errors = Vec::new();
        self.check(schema, value, "", &mut errors);
        errors.is_empty()
    }

    /// The property names `schema` declares for an object, or `None` when it lets any
    /// through.
    fn declared(&self, schema: &Value, value: &Value) -> Option<BTreeSet<String>> {
        let Value::Object(schema) = schema else {
            return None;
        };
        if schema.contains_key("additionalProperties") || schema.contains_key("propertyNames") {
            return None;
        }
        let mut names = BTreeSet::new();
        let mut open = true;
        if let Some(Value::Object(properties)) = schema.get("properties") {
            names.extend(properties.keys().cloned());
            open = false;
        }
        let mut subschemas: Vec<&Value> = Vec::new();
        if let Some(Value::String(reference)) = schema.get("$ref") {
            subschemas.push(self.target(reference));
        }
        if let Some(Value::Array(all)) = schema.get("allOf") {
            subschemas.extend(all);
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(Value::Array(options)) = schema.get(key) {
                subschemas.extend(options.iter().filter(|o| self.passes(o, value)));
            }
        }
        for sub in subschemas {
            match self.declared(sub, value) {
                Some(more) if !more.is_empty() => {
                    names.extend(more);
                    open = false;
                }
                Some(_) => {}
                None => return None,
            }
        }
        if open {
            Some(BTreeSet::new())
        } else {
            Some(names)
        }
    }

    /// Reports fields the schema does not name, at every depth.
    fn strict(&self, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
        match value {
            Value::Object(fields) => {
                if let Some(names) = self.declared(schema, value)
                    && !names.is_empty()
                {
                    for name in fields.keys().filter(|n| !names.contains(*n)) {
                        errors.push(format!("{at}.{name}: not in the document"));
                    }
                }
                for (name, field) in fields {
                    for sub in self.property_schemas(schema, value, name) {
                        self.strict(sub, field, &format!("{at}.{name}"), errors);
                    }
                }
            }
            Value::Array(items) => {
                for sub in self.item_schemas(schema, value) {
                    for (i, item) in items.iter().enumerate() {
                        self.strict(sub, item, &format!("{at}[{i}]"), errors);
                    }
                }
            }
            _ => {}
        }
    }

    /// The schemas that apply to `value`, following `$ref`, `allOf` and the `oneOf` and
    /// `anyOf` options it matches.
    fn applying<'s>(&'s self, schema: &'s Value, value: &Value, out: &mut Vec<&'s Value>) {
        let Value::Object(map) = schema else { return };
        out.push(schema);
        if let Some(Value::String(reference)) = map.get("$ref") {
            self.applying(self.target(reference), value, out);
        }
        if let Some(Value::Array(all)) = map.get("allOf") {
            for sub in all {
                self.applying(sub, value, out);
            }
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(Value::Array(options)) = map.get(key) {
                for sub in options.iter().filter(|o| self.passes(o, value)) {
                    self.applying(sub, value, out);
                }
            }
        }
    }

    fn property_schemas<'s>(
        &'s self,
        schema: &'s Value,
        value: &Value,
        name: &str,
    ) -> Vec<&'s Value> {
        let mut all = Vec::new();
        self.applying(schema, value, &mut all);
        all.iter()
            .filter_map(|s| {
                s.get("properties")
                    .and_then(|p| p.get(name))
                    .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
            })
            .collect()
    }

    fn item_schemas<'s>(&'s self, schema: &'s Value, value: &Value) -> Vec<&'s Value> {
        let mut all = Vec::new();
        self.applying(schema, value, &mut all);
        all.iter()
            .filter_map(|s| s.get("items").filter(|i| i.is_object()))
            .collect()
    }
}

fn is_type(value: &Value, t: &str) -> bool {
    match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_u64() || value.is_i64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        other => panic!("an unknown type `{other}`"),
    }
}

/// Whether `text` matches `pattern`, for the patterns the document uses (no regex crate).
fn matches_pattern(pattern: &str, text: &str) -> bool {
    match pattern {
        // A duration: `<digits><unit>` repeated.
        "^([0-9]+(ms|s|m|h|d))+$" => {
            let mut rest = text;
            while !rest.is_empty() {
                let digits =
                    rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
                let after = &rest[digits..];
                let unit = ["ms", "s", "m", "h", "d"]
                    .into_iter()
                    .find(|u| after.starts_with(u));
                match unit {
                    Some(unit) if digits > 0 => rest = &after[unit.len()..],
                    _ => return false,
                }
            }
            !text.is_empty()
        }
        other => panic!("the test knows no matcher for the pattern {other}"),
    }
}

/// The API's one time format: UTC, always to the microsecond
/// (`2025-06-02T01:00:00.000000Z`).
fn is_utc_time(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| b[range].iter().all(u8::is_ascii_digit);
    b.len() == 27
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19)
        && b[19] == b'.'
        && digits(20..26)
        && b[26] == b'Z'
}

// ------------------------------------------------------------------------ the document

/// (METHOD, path) of every documented operation.
fn documented(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("`paths` is an object") {
        for method in item.as_object().expect("a path item is an object").keys() {
            assert!(
                METHODS.contains(&method.as_str()),
                "{path}: `{method}` is not a method this API uses"
            );
            ops.insert((method.to_uppercase(), path.clone()));
        }
    }
    ops
}

fn operation<'a>(doc: &'a Value, method: &str, path: &str) -> &'a Value {
    let op = &doc["paths"][path][method.to_lowercase()];
    assert!(op.is_object(), "{method} {path} is not documented");
    op
}

/// The documented response of `op` for `status`, its `$ref` followed.
fn response<'a>(doc: &'a Value, op: &'a Value, status: u16) -> Option<&'a Value> {
    let response = op["responses"].get(status.to_string())?;
    Some(match response.get("$ref").and_then(Value::as_str) {
        Some(reference) => doc
            .pointer(reference.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("a $ref to nothing: {reference}")),
        None => response,
    })
}

/// Checks an answer against what the document says `method path` answers.
fn conforms(doc: &Value, method: &str, path: &str, answer: &Answer) {
    let what = format!("{method} {path}: {} {}", answer.status, answer.text());
    let op = operation(doc, method, path);
    let documented = response(doc, op, answer.status)
        .unwrap_or_else(|| panic!("{what}: the status is not documented"));
    let media = answer.media_type();
    let content = documented["content"]
        .get(&media)
        .unwrap_or_else(|| panic!("{what}: `{media}` is not documented for that status"));
    if let Some(headers) = documented.get("headers").and_then(Value::as_object) {
        for name in headers.keys() {
            assert!(answer.header(name).is_some(), "{what}: no {name} header");
        }
    }
    if media == "application/json" {
        let errors = Validator { doc }.errors(&content["schema"], &answer.json(), "$");
        assert!(errors.is_empty(), "{what}:\n{}", errors.join("\n"));
    }
}

/// The schema of the JSON body `method path` takes.
fn request_schema<'a>(doc: &'a Value, method: &str, path: &str) -> Option<&'a Value> {
    operation(doc, method, path)
        .get("requestBody")?
        .get("content")?
        .get("application/json")?
        .get("schema")
}

/// The errors of a JSON body against what the document says `method path` takes.
fn body_errors(doc: &Value, method: &str, path: &str, body: &[u8]) -> Vec<String> {
    let schema = request_schema(doc, method, path)
        .unwrap_or_else(|| panic!("{method} {path} takes no JSON body"));
    let body: Value = serde_json::from_slice(body).expect("a JSON body");
    Validator { doc }.errors(schema, &body, "$")
}

/// (METHOD, full path) of every `.route(...)` in routes.rs, nested routers' under their
/// prefix.
fn routed() -> BTreeSet<(String, String)> {
    // The statements of the file that build routers, by the name they are bound to.
    let mut routers: Vec<(Option<String>, &str)> = Vec::new();
    let mut rest = ROUTES;
    while let Some(at) = rest.find("Router::new()") {
        let before = rest[..at].trim_end();
        let name = before
            .strip_suffix('=')
            .map(str::trim_end)
            .and_then(|b| b.rsplit(char::is_whitespace).next())
            .filter(|_| before.ends_with('='))
            .map(str::to_owned);
        let statement = &rest[at..];
        let end = statement_end(statement);
        routers.push((name, &statement[..end]));
        rest = &statement[end..];
    }
    let prefix = |name: &str| -> String {
        let mut prefix = String::new();
        let mut current = name.to_owned();
        while let Some((outer, nest)) = routers.iter().find_map(|(outer, text)| {
            calls(text, ".nest(").into_iter().find_map(|args| {
                let (path, inner) = args.split_once(',')?;
                (inner.trim() == current).then(|| (outer.clone(), literal(path)))
            })
        }) {
            prefix = format!("{nest}{prefix}");
            match outer {
                Some(outer) => current = outer,
                None => break,
            }
        }
        prefix
    };
    let mut ops = BTreeSet::new();
    let mut count = 0;
    for (name, text) in &routers {
        let nested = name.as_deref().map(prefix).unwrap_or_default();
        for args in calls(text, ".route(") {
            count += 1;
            let (path, handlers) = args
                .split_once(',')
                .unwrap_or_else(|| panic!("a route without handlers: {args}"));
            let path = format!("{nested}{}", literal(path));
            let before = ops.len();
            for method in METHODS {
                let handlers = handlers.replace(char::is_whitespace, "");
                let called = |sep: char| handlers.contains(&format!("{sep}{method}("));
                if handlers.starts_with(&format!("{method}(")) || called('.') || called(':') {
                    ops.insert((method.to_uppercase(), path.clone()));
                }
            }
            assert!(
                ops.len() > before,
                "no method read from route {path}: {handlers}"
            );
        }
    }
    assert_eq!(
        count,
        ROUTES.matches(".route(").count(),
        "every `.route(` of routes.rs is in a router statement"
    );
    ops
}

/// Where the statement starting `text` ends: its `;` or the end of its block.
fn statement_end(text: &str) -> usize {
    let mut depth = 0i32;
    for (i, c) in text.char_indices() {
        match c {
            '(' | '{' | '[' => depth += 1,
            ')' | '}' | ']' if depth == 0 => return i,
            ')' | '}' | ']' => depth -= 1,
            ';' if depth == 0 => return i,
            _ => {}
        }
    }
    text.len()
}

/// The argument text of every call `name(...)` in `text`.
fn calls<'t>(text: &'t str, name: &str) -> Vec<&'t str> {
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(name) {
        let args = &rest[at + name.len()..];
        let mut depth = 0i32;
        let end = args
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '(' => depth += 1,
                    ')' if depth == 0 => return true,
                    ')' => depth -= 1,
                    _ => {}
                }
                false
            })
            .map_or(args.len(), |(i, _)| i);
        found.push(&args[..end]);
        rest = &args[end..];
    }
    found
}

/// The text of a string literal.
fn literal(text: &str) -> String {
    let text = text.trim();
    text.strip_prefix('"')
        .and_then(|t| t.strip_suffix('"'))
        .unwrap_or_else(|| panic!("not a string literal: {text}"))
        .to_owned()
}

// ------------------------------------------------------------------------ tests

#[test]
fn the_document_is_whole() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert_eq!(doc["security"], serde_json::json!([{"bearer": []}]));
    assert!(
        DOCUMENT.starts_with("{\n  \"openapi\"") && DOCUMENT.ends_with("}\n"),
        "openapi.json is indented by two spaces and ends with a newline"
    );

    // Every $ref leads somewhere.
    fn refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(r)) = map.get("$ref") {
                    out.push(r);
                }
                map.values().for_each(|v| refs(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for reference in all {
        assert!(
            doc.pointer(reference.trim_start_matches('#')).is_some(),
            "a $ref to nothing: {reference}"
        );
    }

    let mut ids = BTreeSet::new();
    for (method, path) in documented(&doc) {
        let op = operation(&doc, &method, &path);
        let what = format!("{method} {path}");
        let id = op["operationId"].as_str().expect("an operationId");
        assert!(ids.insert(id.to_owned()), "{what}: operationId {id} twice");
        assert!(op["summary"].is_string(), "{what}: no summary");
        // The health checks are open; everything else names 401.
        let public = public(&path);
        assert_eq!(
            op.get("security") == Some(&serde_json::json!([])),
            public,
            "{what}: `security`"
        );
        assert_eq!(
            op["responses"].get("401").is_some(),
            !public,
            "{what}: a 401 answer"
        );
        assert!(
            op["responses"].get("200").is_some(),
            "{what}: no 200 answer"
        );
        // Every error answer is the Error schema.
        for (status, _) in op["responses"].as_object().expect("responses") {
            let status: u16 = status.parse().expect("a numeric status");
            if (400..500).contains(&status) {
                let r = response(&doc, op, status).expect("a response");
                assert_eq!(
                    r["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/Error",
                    "{what}: {status}"
                );
            }
        }
        // Path parameters are the template's.
        let template: BTreeSet<&str> = path
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
            .collect();
        let params = op["parameters"].as_array().map_or(&[][..], Vec::as_slice);
        let in_path: BTreeSet<&str> = params
            .iter()
            .filter(|p| p["in"] == "path")
            .map(|p| {
                assert_eq!(p["required"], true, "{what}: a path parameter is required");
                p["name"].as_str().expect("a parameter name")
            })
            .collect();
        assert_eq!(template, in_path, "{what}: path parameters");
    }
    // The error answers, 405 included: no operation lists it, as it is the answer to a
    // method a path does not list.
    for name in [
        "BadRequest",
        "Unauthorized",
        "NotFound",
        "MethodNotAllowed",
        "Conflict",
    ] {
        assert_eq!(
            doc["components"]["responses"][name]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/Error",
            "{name}"
        );
    }

    // The enumerations the library can list match.
    let enumeration = |name: &str| -> Vec<String> {
        doc["components"]["schemas"][name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is an enum"))
            .iter()
            .map(|v| v.as_str().expect("a string").to_owned())
            .collect()
    };
    let names = |values: Vec<Value>| -> Vec<String> {
        values
            .into_iter()
            .map(|v| v.as_str().expect("serialized as a string").to_owned())
            .collect()
    };
    let kinds = ReplyKind::ALL
        .iter()
        .map(|k| serde_json::to_value(k).expect("serialize a reply kind"))
        .collect();
    assert_eq!(enumeration("ReplyKind"), names(kinds));
    let windows = Window::ALL
        .iter()
        .map(|w| serde_json::to_value(w).expect("serialize a window"))
        .collect();
    assert_eq!(enumeration("Window"), names(windows));
    let quotas = QuotaName::ALL
        .iter()
        .map(|q| serde_json::to_value(q).expect("serialize a quota"))
        .collect();
    assert_eq!(enumeration("QuotaName"), names(quotas));
}

#[test]
fn every_route_is_documented_and_every_operation_is_routed() {
    let documented = documented(&document());
    let routed = routed();
    assert!(routed.len() >= 25, "{routed:?}");
    let undocumented: Vec<_> = routed.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routed).collect();
    assert!(
        undocumented.is_empty(),
        "not in openapi.json: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented but not in routes.rs: {unrouted:?}"
    );
}

/// A config for `PUT /api/v1/config`.
const CONFIG_TOML: &str = "seed = 7\n[limits]\nmax_recipients = 50\n";

/// A scenario for `PUT /api/v1/scenario`.
const SCENARIO_TOML: &str = "name = \"openapi\"\nduration = \"1h\"\n\n\
    [[phase]]\nat = \"10m\"\nname = \"later\"\nclear_faults = true\n";

/// The paths open without a token: the health checks, and the dashboard's files (which
/// hold no data; the page asks for the token).
fn public(path: &str) -> bool {
    matches!(
        path,
        "/healthz" | "/readyz" | "/" | "/dashboard/app.js" | "/dashboard/app.css"
    )
}

/// A request for `method path` that the route should take: path parameters filled in, a
/// query string and a body where they are needed.
fn example_call<'a>(method: &'a str, path: &str) -> Call<'a> {
    let target = path
        .replace("{id}", "1")
        .replace("{ip}", "127.0.0.1")
        .replace("{mx}", "mx1");
    let target = match path {
        "/api/v1/messages" if method == "GET" => format!("{target}?to=10001%40qq.com&raw=true"),
        "/api/v1/events" => format!("{target}?after=0&limit=100"),
        "/api/v1/events/stream" => format!("{target}?after=0"),
        "/api/v1/explain" => format!("{target}?ip=127.0.0.1"),
        "/api/v1/search" if method == "GET" => format!("{target}?query=to%3A10001%40qq.com"),
        "/api/v1/search" => format!("{target}?query=subject%3Anothing-matches"),
        _ => target,
    };
    let body = match (method, path) {
        ("POST", "/api/v1/clock/advance") => Some(r#"{"by": "1m"}"#),
        ("POST", "/api/v1/blacklist") => Some(r#"{"ip": "192.0.2.0/24", "for": "1h"}"#),
        ("POST", "/api/v1/unblacklist") => Some(r#"{"ip": "192.0.2.0/24"}"#),
        ("POST", "/api/v1/whitelist") => {
            Some(r#"{"recipient": "10001@qq.com", "sender": "a@example.org"}"#)
        }
        ("POST", "/api/v1/complain") => Some(r#"{"ip": "192.0.2.7", "sender": "a@example.org"}"#),
        ("POST", "/api/v1/limit") => Some(r#"{"quota": "domain", "window": "day", "limit": 500}"#),
        ("POST", "/api/v1/reset") => Some(r#"{"counters": true}"#),
        ("PUT", "/api/v1/faults") => Some(
            r#"[{"kind": "tarpit", "stage": "rcpt", "delay": "1ms", "probability": 0.5, "mx": ["mx1"]}]"#,
        ),
        _ => None,
    };
    let call = Call::new(method, target);
    match (method, path, body) {
        (_, _, Some(body)) => call.json(body),
        ("PUT", "/api/v1/config", _) => call
            .header("Content-Type", "application/toml")
            .body(CONFIG_TOML.as_bytes()),
        ("PUT", "/api/v1/scenario", _) => call
            .header("Content-Type", "application/toml")
            .body(SCENARIO_TOML.as_bytes()),
        _ => call,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_as_documented() {
    let doc = document();
    let sidecar = start(manual_clock(), None).await;

    // A message, a refused recipient, then a sender quota of 1 that refuses the next one
    // and blocks the sender: messages, events of every common type, a block and a refusal
    // to explain.
    let first = deliver(sidecar.smtp, "a@example.org").await;
    assert!(first.starts_with("250"), "{first}");
    let limit = Call::new("POST", "/api/v1/limit")
        .json(r#"{"quota": "sender", "window": "hour", "limit": 1}"#)
        .send(sidecar.api)
        .await;
    assert_eq!(limit.status, 200, "{}", limit.text());
    let second = deliver(sidecar.smtp, "a@example.org").await;
    assert!(
        second.starts_with('4') || second.starts_with('5'),
        "{second}"
    );

    // Reads first, then changes, then what forgets.
    let order = |(method, path): &(String, String)| {
        let rank = match method.as_str() {
            "GET" => 0,
            _ if path.ends_with("/reset") || path.ends_with("/scenario") => 3,
            "DELETE" => 2,
            _ => 1,
        };
        (rank, path.clone(), method.clone())
    };
    let mut ops: Vec<(String, String)> = documented(&doc).into_iter().collect();
    ops.sort_by_key(order);
    for (method, path) in &ops {
        let call = example_call(method, path);
        let target = call.target.clone();
        if call.headers.contains(&("Content-Type", "application/json")) {
            let errors = body_errors(&doc, method, path, call.body);
            assert!(errors.is_empty(), "{method} {path} sends {errors:?}");
        }
        if path == "/api/v1/events/stream" {
            let (answer, events) = call.stream(sidecar.api, 3).await;
            assert_eq!(answer.status, 200, "{method} {target}");
            let op = operation(&doc, method, path);
            let documented = response(&doc, op, 200).expect("a 200 answer");
            assert!(
                documented["content"].get(answer.media_type()).is_some(),
                "{method} {target}: {}",
                answer.media_type()
            );
            let validator = Validator { doc: &doc };
            let schema = serde_json::json!({"$ref": "#/components/schemas/Event"});
            for (i, event) in events.iter().enumerate() {
                let data: Value = serde_json::from_str(&event.data).expect("an event as JSON");
                let errors = validator.errors(&schema, &data, "$");
                assert!(errors.is_empty(), "event {i}:\n{}", errors.join("\n"));
                assert_eq!(data["type"].as_str(), Some(event.event.as_str()));
                assert_eq!(data["seq"].to_string(), event.id);
                assert_eq!(data["seq"], i + 1, "the stream starts after `after` (0)");
            }
            continue;
        }
        let answer = call.send(sidecar.api).await;
        let what = format!("{method} {target}: {} {}", answer.status, answer.text());
        assert_ne!(answer.status, 405, "{what}");
        assert!(
            !(answer.status == 404 && answer.text().contains(NO_ROUTE)),
            "{what}"
        );
        assert_eq!(answer.status, 200, "{what}");
        conforms(&doc, method, path, &answer);

        // What the answers should hold, given the store.
        let body = || answer.json();
        match (method.as_str(), path.as_str()) {
            ("GET", "/api/v1/messages") => {
                let list = body();
                assert_eq!(list["total"], 1, "{what}");
                assert!(list["messages"][0]["raw_base64"].is_string(), "{what}");
            }
            ("GET", "/api/v1/message/{id}") => {
                let message = body();
                assert_eq!(message["subject"], "Hello folded", "{what}");
                assert!(message["auth"].is_object(), "{what}");
            }
            ("GET", "/api/v1/tls/ca.pem") => {
                assert_eq!(answer.media_type(), "application/x-pem-file");
                assert_eq!(Some(answer.text()), sidecar.server.ca_pem(), "{what}");
            }
            ("GET", "/api/v1/message/{id}/raw") => {
                assert_eq!(answer.media_type(), "message/rfc822");
                assert!(answer.text().contains("Subject: Hello"), "{what}");
            }
            ("GET", "/api/v1/blocks") => assert_eq!(body().as_array().map(Vec::len), Some(1)),
            ("GET", "/api/v1/explain") => {
                assert_eq!(body()["rule"], "quota.sender", "{what}");
            }
            ("GET", "/api/v1/info") => {
                assert_eq!(body()["listeners"][0]["addr"], sidecar.smtp.to_string());
            }
            ("GET", "/metrics") => assert!(answer.text().contains("# TYPE"), "{what}"),
            ("GET", "/openapi.json") => assert_eq!(answer.text(), DOCUMENT),
            ("DELETE", "/api/v1/messages") => assert_eq!(body()["deleted"], 1, "{what}"),
            ("PUT", "/api/v1/scenario") => assert_eq!(body()["phases"], 1, "{what}"),
            _ => {}
        }
    }

    // Faults put are read back as documented (the scenario loaded last cleared them).
    let put = example_call("PUT", "/api/v1/faults");
    let sent: Value = serde_json::from_slice(put.body).expect("the example faults are JSON");
    assert_eq!(put.send(sidecar.api).await.status, 200);
    let faults = Call::new("GET", "/api/v1/faults").send(sidecar.api).await;
    conforms(&doc, "GET", "/api/v1/faults", &faults);
    assert_eq!(faults.json(), sent);
}

#[test]
fn the_validator_finds_what_the_document_leaves_out() {
    let doc = serde_json::json!({"components": {"schemas": {
        "Inner": {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}},
        "Outer": {"type": "object", "properties": {
            "inner": {"$ref": "#/components/schemas/Inner"},
            "list": {"type": "array", "items": {"$ref": "#/components/schemas/Inner"}},
            "map": {"type": "object", "additionalProperties": {"type": "string"}},
            "tagged": {"oneOf": [
                {"type": "object", "properties": {"t": {"const": "x"}, "x": {"type": "string"}}},
                {"type": "object", "properties": {"t": {"const": "y"}, "y": {"type": "null"}}}
            ]}
        }}
    }}});
    let validator = Validator { doc: &doc };
    let schema = serde_json::json!({"$ref": "#/components/schemas/Outer"});
    let errors = |value: Value| validator.errors(&schema, &value, "$");
    let good = serde_json::json!({
        "inner": {"a": 1}, "list": [{"a": 2}], "map": {"any": "thing"},
        "tagged": {"t": "y", "y": null}
    });
    assert_eq!(errors(good), Vec::<String>::new());
    assert_eq!(
        errors(serde_json::json!({"inner": {"a": 1, "b": 2}})),
        ["$.inner.b: not in the document"]
    );
    assert_eq!(
        errors(serde_json::json!({"list": [{"a": 1}, {"a": 1, "c": 0}]})),
        ["$.list[1].c: not in the document"]
    );
    assert_eq!(
        errors(serde_json::json!({"tagged": {"t": "x", "y": null}})),
        ["$.tagged.y: not in the document"]
    );
    assert_eq!(
        errors(serde_json::json!({"extra": 1})),
        ["$.extra: not in the document"]
    );
    assert_eq!(
        errors(serde_json::json!({"inner": {}})),
        ["$.inner: no `a`"]
    );
    assert_eq!(
        errors(serde_json::json!({"map": {"k": 1}})),
        ["$.map.k: 1 is not of type [\"string\"]"]
    );
    assert_eq!(errors(serde_json::json!({"tagged": {"t": "z"}})).len(), 1);
    let duration = "^([0-9]+(ms|s|m|h|d))+$";
    assert!(
        ["90s", "1h30m", "250ms", "0ms"]
            .iter()
            .all(|t| matches_pattern(duration, t))
    );
    assert!(
        !["", "5", "m", "soon", "1h 30m", "-1s"]
            .iter()
            .any(|t| matches_pattern(duration, t))
    );
    assert!(
        is_utc_time("2025-06-02T01:00:00.000000Z") && is_utc_time("2025-06-02T01:00:00.250000Z")
    );
    assert!(!is_utc_time("2025-06-02T01:00:00Z") && !is_utc_time("2025-06-02T01:00:00.25Z"));
    assert!(!is_utc_time("2025-06-02T09:00:00+08:00") && !is_utc_time("yesterday"));
}

#[tokio::test]
async fn the_api_serves_the_document_in_the_repository() {
    let sidecar = start(manual_clock(), None).await;
    let answer = Call::new("GET", "/openapi.json").send(sidecar.api).await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.media_type(), "application/json");
    assert_eq!(answer.body, DOCUMENT.as_bytes());
    let file = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))
        .expect("read openapi.json");
    assert_eq!(answer.text(), file, "the file changed since the build");
}

#[tokio::test]
async fn bad_requests_get_400_with_a_json_error() {
    let doc = document();
    let sidecar = start(manual_clock(), None).await;
    #[rustfmt::skip]
    let cases = [
        ("POST /api/v1/whitelist", r#"{"recipient": 1}"#, "bad JSON body"),
        ("POST /api/v1/whitelist", r#"{"recipient": "#, "bad JSON body"),
        ("POST /api/v1/complain", r#"{"ip": "192.0.2.1", "x": 1}"#, "unknown field `x`"),
        ("POST /api/v1/limit", r#"{"quota": "ip", "window": "hour"}"#, "unknown variant"),
        ("POST /api/v1/limit", r#"{"quota": "ip_messages", "window": "hour"}"#, "`limit` is required"),
        ("POST /api/v1/clock/advance", "{}", "exactly one of `by`"),
        ("POST /api/v1/clock/advance", r#"{"by": "soon"}"#, "not a duration"),
        ("POST /api/v1/blacklist", r#"{"ip": "192.0.2.1", "sender": "a@b.c"}"#, "exactly one"),
        ("POST /api/v1/blacklist", r#"{"ip": "192.0.2.1/99"}"#, "`ip`"),
        ("PUT /api/v1/faults", r#"[{"kind": "tarpit"}]"#, "needs a `delay`"),
        ("PUT /api/v1/faults", r#"[{"kind": "greylist", "attempts": 2, "stage": "mail"}]"#, "`rcpt` only"),
        ("PUT /api/v1/faults", r#"[{"kind": "close", "probability": 2}]"#, "not from 0 to 1"),
        ("PUT /api/v1/faults", r#"[{"kind": "close", "mx": ["mx9"]}]"#, "unknown MX `mx9`; one of: mx1"),
        ("GET /api/v1/messages?since=yesterday", "", "`since`"),
        ("GET /api/v1/messages?limit=many", "", "bad query string"),
        ("GET /api/v1/messages?colour=blue", "", "bad query string"),
        ("GET /api/v1/events?client=nowhere", "", "bad query string"),
        ("GET /api/v1/explain", "", "bad query string"),
        ("GET /api/v1/message/x", "", "`x` is not a message id"),
        ("GET /api/v1/reputation/x", "", "`x` is not an IP address"),
    ];
    // Bodies bad in ways the schemas cannot tell: not JSON, a range out of bounds, an MX
    // the server does not have.
    let beyond_schemas = [
        r#"{"recipient": "#,
        r#"{"ip": "192.0.2.1/99"}"#,
        r#"[{"kind": "close", "mx": ["mx9"]}]"#,
    ];
    for (request, body, wanted) in cases {
        let (method, target) = request.split_once(' ').expect("METHOD target");
        if !body.is_empty() && !beyond_schemas.contains(&body) {
            assert!(
                !body_errors(&doc, method, target, body.as_bytes()).is_empty(),
                "the document takes {request} {body}"
            );
        }
        let call = Call::new(method, target);
        let call = if body.is_empty() {
            call
        } else {
            call.json(body)
        };
        let answer = call.send(sidecar.api).await;
        let what = format!("{request} {body}: {} {}", answer.status, answer.text());
        assert_eq!(answer.status, 400, "{what}");
        assert!(answer.error().contains(wanted), "{what}");
        let path = target.split('?').next().unwrap_or(target);
        let path = match path.rsplit_once('/') {
            Some(("/api/v1/message", _)) => "/api/v1/message/{id}",
            Some(("/api/v1/reputation", _)) => "/api/v1/reputation/{ip}",
            _ => path,
        };
        conforms(&doc, method, path, &answer);
    }
    let stream = Call::new("GET", "/api/v1/events/stream?after=-1")
        .send(sidecar.api)
        .await;
    assert_eq!(stream.status, 400, "{}", stream.text());
    assert!(stream.error().contains("bad query string"));
    conforms(&doc, "GET", "/api/v1/events/stream", &stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_query_parameters_and_unwanted_bodies_get_400() {
    let doc = document();
    let sidecar = start(manual_clock(), None).await;
    for (method, path) in documented(&doc) {
        let call = example_call(&method, &path);
        let separator = if call.target.contains('?') { '&' } else { '?' };
        let call = Call {
            target: format!("{}{separator}zz=1", call.target),
            ..call
        };
        let answer = call.send(sidecar.api).await;
        assert_eq!(answer.status, 400, "{method} {path}: {}", answer.text());
        conforms(&doc, &method, &path, &answer);
    }
    for (method, target, path) in [
        ("GET", "/api/v1/info", "/api/v1/info"),
        ("POST", "/api/v1/mx/mx1/down", "/api/v1/mx/{mx}/down"),
        ("DELETE", "/api/v1/search?query=x", "/api/v1/search"),
    ] {
        let answer = Call::new(method, target)
            .json(r#"{"x": 1}"#)
            .send(sidecar.api)
            .await;
        assert_eq!(answer.status, 400, "{method} {target}: {}", answer.text());
        assert_eq!(answer.error(), "this route takes no body (or `{}`)");
        conforms(&doc, method, path, &answer);
    }
    // An empty object says nothing, and is taken.
    let answer = Call::new("POST", "/api/v1/mx/mx1/up")
        .json("{ }")
        .send(sidecar.api)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    // A path that does not exist is still a 404, whatever its query.
    let answer = Call::new("GET", "/api/v1/nothing?zz=1")
        .send(sidecar.api)
        .await;
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn what_does_not_exist_gets_404_and_a_wrong_method_405() {
    let doc = document();
    let sidecar = start(manual_clock(), None).await;
    for target in [
        "/api/v1/nothing",
        "/api/v2/info",
        "/dashboard/nothing.js",
        "/api/v1/message/1/part/1",
    ] {
        let answer = Call::new("GET", target).send(sidecar.api).await;
        assert_eq!(answer.status, 404, "{target}");
        assert_eq!(answer.error(), NO_ROUTE, "{target}");
    }
    for (method, target) in [
        ("POST", "/api/v1/info"),
        ("DELETE", "/api/v1/config"),
        ("GET", "/api/v1/reset"),
        ("PUT", "/healthz"),
    ] {
        let answer = Call::new(method, target).send(sidecar.api).await;
        assert_eq!(answer.status, 405, "{method} {target}: {}", answer.text());
        assert!(answer.error().contains("does not take that method"));
        conforms_to(&doc, "MethodNotAllowed", &answer);
    }
    for (path, target) in [
        ("/api/v1/message/{id}", "/api/v1/message/99"),
        ("/api/v1/message/{id}/raw", "/api/v1/message/99/raw"),
        ("/api/v1/message/{id}/headers", "/api/v1/message/99/headers"),
        ("/api/v1/explain", "/api/v1/explain?ip=192.0.2.1"),
    ] {
        let answer = Call::new("GET", target).send(sidecar.api).await;
        assert_eq!(answer.status, 404, "{target}: {}", answer.text());
        conforms(&doc, "GET", path, &answer);
    }
    let down = Call::new("POST", "/api/v1/mx/mx9/down")
        .send(sidecar.api)
        .await;
    assert_eq!(down.status, 404);
    assert!(down.error().contains("no listener called `mx9`"));
    conforms(&doc, "POST", "/api/v1/mx/{mx}/down", &down);
}

/// Checks an answer against a response of `components.responses`.
fn conforms_to(doc: &Value, name: &str, answer: &Answer) {
    let schema = &doc["components"]["responses"][name]["content"]["application/json"]["schema"];
    let errors = Validator { doc }.errors(schema, &answer.json(), "$");
    assert!(errors.is_empty(), "{name}: {}", errors.join("\n"));
}

#[tokio::test]
async fn a_token_guards_all_but_the_health_checks() {
    let doc = document();
    let sidecar = start(manual_clock(), Some("t")).await;
    for (method, path) in documented(&doc) {
        if public(&path) {
            let answer = example_call(&method, &path).send(sidecar.api).await;
            assert_eq!(answer.status, 200, "{method} {path}");
            conforms(&doc, &method, &path, &answer);
            continue;
        }
        for token in [None, Some("Bearer x"), Some("Bearer"), Some("t")] {
            let call = example_call(&method, &path);
            let call = match token {
                Some(t) => call.header("Authorization", t),
                None => call,
            };
            let answer = call.send(sidecar.api).await;
            assert_eq!(answer.status, 401, "{method} {path} with {token:?}");
            assert_eq!(answer.header("www-authenticate"), Some("Bearer"));
            conforms(&doc, &method, &path, &answer);
        }
    }
    let answer = Call::new("GET", "/api/v1/info")
        .header("Authorization", "Bearer t")
        .send(sidecar.api)
        .await;
    assert_eq!(answer.status, 200, "{}", answer.text());
    conforms(&doc, "GET", "/api/v1/info", &answer);
}

#[tokio::test]
async fn the_documented_conflicts_and_states() {
    let doc = document();

    // A system clock cannot be advanced.
    let sidecar = start(Clock::system(), None).await;
    let answer = Call::new("POST", "/api/v1/clock/advance")
        .json(r#"{"seconds": 60}"#)
        .send(sidecar.api)
        .await;
    assert_eq!(answer.status, 409, "{}", answer.text());
    conforms(&doc, "POST", "/api/v1/clock/advance", &answer);

    // A draining server is not ready, and says so.
    sidecar.server.begin_drain();
    let answer = Call::new("GET", "/readyz").send(sidecar.api).await;
    assert_eq!(answer.status, 503, "{}", answer.text());
    assert_eq!(answer.json()["status"], "draining");
    conforms(&doc, "GET", "/readyz", &answer);
    let info = Call::new("GET", "/api/v1/info").send(sidecar.api).await;
    assert_eq!(info.json()["draining"], true);

    // The config as GET answers it loads back as JSON, and an empty body reads as `{}`.
    let sidecar = start(manual_clock(), None).await;
    let config = Call::new("GET", "/api/v1/config").send(sidecar.api).await;
    let put = Call::new("PUT", "/api/v1/config")
        .json(&config.text())
        .send(sidecar.api)
        .await;
    assert_eq!(put.status, 200, "{}", put.text());
    let again = Call::new("GET", "/api/v1/config").send(sidecar.api).await;
    assert_eq!(again.json(), config.json());
    let reset = Call::new("POST", "/api/v1/reset").send(sidecar.api).await;
    assert_eq!(reset.status, 200, "{}", reset.text());
    conforms(&doc, "POST", "/api/v1/reset", &reset);

    // An MX host taken down shows in the info.
    let down = Call::new("POST", "/api/v1/mx/mx1/down")
        .send(sidecar.api)
        .await;
    assert_eq!(down.status, 200, "{}", down.text());
    let info = Call::new("GET", "/api/v1/info").send(sidecar.api).await;
    assert_eq!(info.json()["listeners"][0]["up"], false);
}

/// The README's glossary ("One vocabulary"): one name per concept, and the spellings of
/// each that the document must not use.
const VOCABULARY: &[(&str, &[&str])] = &[
    ("client", &["client_ip", "peer", "remote_addr", "ip_port"]),
    ("type", &["event_type"]),
    ("kind", &["reply", "reply_kind"]),
    ("verdict", &["outcome"]),
    ("rule", &["rule_name"]),
    ("key", &["blocked_key", "scope_key"]),
    (
        "until",
        &["block_until", "blocked_until", "ends_at", "expires"],
    ),
];

/// Every property name in `value`, at any depth, with where it is.
fn property_names(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(properties)) = map.get("properties") {
                for name in properties.keys() {
                    out.push((name.clone(), at.to_owned()));
                }
            }
            for (name, v) in map {
                property_names(v, &format!("{at}/{name}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                property_names(v, &format!("{at}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[test]
fn the_document_speaks_the_readme_vocabulary() {
    let doc = document();
    let readme = include_str!("../README.md");
    let glossary = readme
        .split("#### One vocabulary")
        .nth(1)
        .and_then(|rest| rest.split("\n#### ").next())
        .expect("the README has a section \"One vocabulary\"");
    let mut names = Vec::new();
    property_names(&doc, "", &mut names);
    for (name, others) in VOCABULARY {
        assert!(
            glossary.contains(&format!("| `{name}` |")),
            "the README's glossary names `{name}`"
        );
        assert!(
            names.iter().any(|(n, _)| n == name),
            "the document uses `{name}`"
        );
        for other in *others {
            let found: Vec<&String> = names
                .iter()
                .filter(|(n, _)| n == other)
                .map(|(_, at)| at)
                .collect();
            assert!(
                found.is_empty(),
                "`{other}` is spelt `{name}` in this API: {found:?}"
            );
        }
    }
    let schemas = &doc["components"]["schemas"];
    // Every `client` is an IP address; every `until` and `at` a time; every response
    // time in the one format (checked on live answers by `every_operation_answers_as_documented`).
    for (schema, body) in schemas.as_object().expect("schemas") {
        let mut props = Vec::new();
        property_names(body, schema, &mut props);
        for (name, at) in props {
            let property = pointer(&doc, &at, &name);
            match name.as_str() {
                "client" => assert_eq!(
                    property["type"], "string",
                    "{at}: a client is an IP address"
                ),
                "until" | "at" => {
                    assert_eq!(property["$ref"], "#/components/schemas/Time", "{at}.{name}")
                }
                _ => {}
            }
            if name == "client" {
                let description = property["description"].as_str().unwrap_or_default();
                assert!(
                    description.contains("IP address") && !description.contains("port"),
                    "{at}.client: {description}"
                );
            }
        }
    }
}

/// The property `name` of the schema at `at` (a path of object keys and `[i]` indexes
/// under `components/schemas`).
fn pointer<'d>(doc: &'d Value, at: &str, name: &str) -> &'d Value {
    let mut value = &doc["components"]["schemas"];
    for part in at.split('/') {
        let (key, indexes) = part
            .split_once('[')
            .map_or((part, ""), |(k, rest)| (k, rest));
        value = &value[key];
        for index in indexes.split('[').filter(|s| !s.is_empty()) {
            let i: usize = index.trim_end_matches(']').parse().expect("an index");
            value = &value[i];
        }
    }
    &value["properties"][name]
}
