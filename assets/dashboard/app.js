// The qqmx dashboard. Plain JavaScript, no build step, no dependencies.
//
// Everything shown from the server is put in the page with textContent or as an
// attribute value, never parsed as HTML: subjects, addresses, headers and bodies are the
// sender's, and may be hostile. An HTML part is shown in a sandboxed frame without
// scripts (and the page's Content-Security-Policy, which the frame inherits, loads
// nothing remote). Events arrive in bursts; they are queued and drawn once per animation
// frame, and every list is bounded, so a busy server does not freeze the tab.
"use strict";

const TOKEN_KEY = "qqmx-token";
const MAX_EVENTS = 5000; // events kept in memory for filtering
const MAX_ROWS = 300; // event rows in the page
const MAX_SESSIONS = 20000; // sessions remembered for the sender and recipient filters
const CHART_MINUTES = 30; // at most; fewer on a narrow screen
const MINUTE = 60000;

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c); // append() takes text as text
  }
  return node;
}

// ---- the API ---------------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function headers(extra) {
  const h = Object.assign({}, extra || {});
  const t = token();
  if (t) h["Authorization"] = "Bearer " + t;
  return h;
}

class Unauthorized extends Error {}

async function call(method, path, body, type) {
  const init = { method, headers: headers(), cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = type || "application/json";
    init.body = typeof body === "string" ? body : JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401) {
    showLogin(token() ? "The token was refused." : "");
    throw new Unauthorized("401");
  }
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch (_) {
    json = null;
  }
  if (!res.ok) {
    const message = json && json.error ? json.error : text || res.statusText;
    const err = new Error(method + " " + path + ": " + res.status + " " + message);
    err.status = res.status;
    throw err;
  }
  return json === null ? text : json;
}

const get = (path) => call("GET", path);

// ---- the server's clock ----------------------------------------------------------------

const clock = { now: 0, at: 0, manual: true };

function serverNow() {
  // A manual clock stands still between reads; a running one moves with real time.
  return clock.manual ? clock.now : clock.now + (performance.now() - clock.at);
}

async function readClock() {
  const c = await get("/api/v1/clock");
  clock.now = Date.parse(c.now);
  clock.at = performance.now();
  clock.manual = c.manual;
  dirty.chart = true;
  dirty.policy = true;
}

function fmtTime(ms) {
  return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, "Z");
}

function fmtLeft(ms) {
  if (ms <= 0) return "ended";
  let s = Math.ceil(ms / 1000);
  const parts = [];
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) parts.push(d + "d");
  if (h) parts.push(h + "h");
  if (m) parts.push(m + "m");
  if (s || !parts.length) parts.push(s + "s");
  return parts.join(" ");
}

// ---- state -----------------------------------------------------------------------------

const state = {
  info: null,
  config: null,
  events: [], // newest last, at most MAX_EVENTS
  pending: [], // received, not yet drawn
  lastSeq: 0,
  sessions: new Map(), // session -> {from, rcpts}
  minutes: new Map(), // minute index -> {accepted, kinds: {kind: n}}
  kinds: new Set(),
  firstSeen: new Map(), // ip -> ms of its first connection seen
  accepted: [], // {at, client} of accepted messages, for the usage bars
  stats: null,
  blocks: [],
  view: "live",
};

const dirty = { chart: true, events: false, rebuild: true, policy: true, messages: false };

function sessionOf(id) {
  let s = state.sessions.get(id);
  if (!s) {
    s = { from: "", rcpts: [] };
    state.sessions.set(id, s);
    if (state.sessions.size > MAX_SESSIONS) {
      state.sessions.delete(state.sessions.keys().next().value);
    }
  }
  return s;
}

function minuteOf(ms) {
  return Math.floor(ms / MINUTE);
}

function bucket(ms) {
  const m = minuteOf(ms);
  let b = state.minutes.get(m);
  if (!b) {
    b = { accepted: 0, kinds: {} };
    state.minutes.set(m, b);
  }
  return b;
}

function takeEvent(e) {
  state.lastSeq = Math.max(state.lastSeq, e.seq);
  const at = Date.parse(e.at);
  e._at = at;
  if (e.type === "command" && e.verb === "mail") {
    const s = sessionOf(e.session);
    s.from = e.address || "";
    s.rcpts = [];
  } else if (e.type === "command" && e.verb === "rcpt") {
    sessionOf(e.session).rcpts.push(e.address || "");
  } else if (e.type === "connected") {
    if (!state.firstSeen.has(e.client)) state.firstSeen.set(e.client, at);
  } else if (e.type === "accepted") {
    bucket(at).accepted += 1;
    state.accepted.push({ at, client: e.client });
    if (state.accepted.length > MAX_EVENTS * 4) state.accepted.splice(0, MAX_EVENTS);
    dirty.messages = true;
  } else if (e.type === "reply" && e.code >= 400) {
    const b = bucket(at);
    b.kinds[e.kind] = (b.kinds[e.kind] || 0) + 1;
    state.kinds.add(e.kind);
  }
  const s = state.sessions.get(e.session);
  if (s) e._from = s.from;
  if (s) e._rcpts = s.rcpts.slice();
  state.events.push(e);
}

// ---- the event stream ------------------------------------------------------------------

let streamAbort = null;

async function follow() {
  if (streamAbort) streamAbort.abort();
  const abort = new AbortController();
  streamAbort = abort;
  for (;;) {
    const q = state.lastSeq ? "after=" + state.lastSeq : "history=true";
    try {
      const res = await fetch("/api/v1/events/stream?" + q, {
        headers: headers({ Accept: "text/event-stream" }),
        signal: abort.signal,
        cache: "no-store",
      });
      if (res.status === 401) {
        showLogin("The token was refused.");
        return;
      }
      if (!res.ok || !res.body) throw new Error("stream: " + res.status);
      setConn(true);
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          const data = block
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).replace(/^ /, ""))
            .join("\n");
          if (data) {
            try {
              state.pending.push(JSON.parse(data));
            } catch (_) {
              // a malformed event is skipped
            }
          }
        }
      }
    } catch (err) {
      if (abort.signal.aborted) return;
    }
    setConn(false);
    await new Promise((r) => setTimeout(r, 1000));
    if (abort.signal.aborted) return;
  }
}

function setConn(up) {
  const c = $("conn");
  c.textContent = up ? "● live" : "● reconnecting";
  c.className = up ? "" : "down";
}

// ---- drawing, once per frame -----------------------------------------------------------

function frame() {
  if (state.pending.length) {
    const batch = state.pending;
    state.pending = [];
    for (const e of batch) takeEvent(e);
    // The rows in the page are bounded on their own; trimming what is held for the
    // filters redraws nothing.
    if (state.events.length > MAX_EVENTS) state.events.splice(0, state.events.length - MAX_EVENTS);
    dirty.newEvents = (dirty.newEvents || []).concat(batch);
    if (dirty.newEvents.length > MAX_ROWS) dirty.newEvents = dirty.newEvents.slice(-MAX_ROWS);
    dirty.chart = true;
    dirty.events = true;
    const newest = batch[batch.length - 1];
    if (clock.manual && newest && newest._at > clock.now) clock.now = newest._at;
  }
  if (state.view === "live") {
    if (dirty.chart) drawChart();
    if (dirty.events || dirty.rebuild) drawEvents();
  }
  if (state.view === "policy" && dirty.policy) drawPolicy();
  if (state.view === "messages" && dirty.messages) scheduleMessages();
  drawClock();
  requestAnimationFrame(frame);
}

function drawClock() {
  const now = serverNow();
  if (!now) return;
  const text = fmtTime(now) + (clock.manual ? " (manual)" : "");
  const c = $("clock");
  if (c.textContent !== text) c.textContent = text;
}

const PALETTE = ["#e53935", "#fb8c00", "#8e24aa", "#3949ab", "#00897b", "#6d4c41", "#c0ca33", "#d81b60", "#546e7a", "#fdd835"];

function colourOf(kind) {
  const kinds = Array.from(state.kinds).sort();
  return PALETTE[kinds.indexOf(kind) % PALETTE.length];
}

function drawChart() {
  dirty.chart = false;
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth;
  const h = canvas.clientHeight;
  if (!w || !h) return;
  if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
  if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const now = serverNow() || Date.now();
  const shown = Math.max(8, Math.min(CHART_MINUTES, Math.floor((w - 40) / 18)));
  const last = minuteOf(now);
  const first = last - shown + 1;
  for (const m of state.minutes.keys()) {
    if (m < first - 120) state.minutes.delete(m);
  }
  const kinds = Array.from(state.kinds).sort();
  let max = 1;
  for (let m = first; m <= last; m++) {
    const b = state.minutes.get(m);
    if (!b) continue;
    let total = b.accepted;
    for (const k of kinds) total += b.kinds[k] || 0;
    max = Math.max(max, total);
  }
  const left = 36;
  const bottom = 18;
  const plotH = h - bottom - 6;
  const slot = (w - left - 4) / shown;
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "#5d6875";
  g.strokeStyle = "#e6e9ed";
  g.textAlign = "right";
  for (const frac of max > 1 ? [0, 0.5, 1] : [0, 1]) {
    const y = 6 + plotH * (1 - frac);
    g.beginPath();
    g.moveTo(left, y);
    g.lineTo(w, y);
    g.stroke();
    g.fillText(String(Math.round(max * frac)), left - 4, y + 4);
  }
  g.textAlign = "center";
  for (let i = 0; i < shown; i++) {
    const m = first + i;
    const x = left + i * slot;
    const b = state.minutes.get(m);
    let y = 6 + plotH;
    const bar = (n, colour) => {
      if (!n) return;
      const hh = (n / max) * plotH;
      y -= hh;
      g.fillStyle = colour;
      g.fillRect(x + 1, y, Math.max(1, slot - 2), hh);
    };
    if (b) {
      bar(b.accepted, "#2e7d32");
      for (const k of kinds) bar(b.kinds[k] || 0, colourOf(k));
    }
    if (i % Math.max(1, Math.round(shown / (w / 60))) === 0) {
      g.fillStyle = "#5d6875";
      g.fillText(new Date(m * MINUTE).toISOString().slice(11, 16), x + slot / 2, h - 4);
    }
  }
  // The current minute in words, for screen readers (and tests).
  const current = state.minutes.get(last) || { accepted: 0, kinds: {} };
  const refusedNow = Object.values(current.kinds).reduce((a, b) => a + b, 0);
  canvas.setAttribute(
    "aria-label",
    "minute " + new Date(last * MINUTE).toISOString().slice(11, 16) + ": " + current.accepted + " accepted, " + refusedNow + " refused",
  );
  // The current minute, by the server's clock.
  g.fillStyle = "rgba(26,111,208,.12)";
  g.fillRect(left + (shown - 1) * slot, 6, slot, plotH);
  const legend = $("legend");
  const items = [["accepted", "#2e7d32"]].concat(kinds.map((k) => [k, colourOf(k)]));
  const key = items.map((i) => i[0]).join(",");
  if (legend.dataset.key !== key) {
    legend.dataset.key = key;
    legend.replaceChildren(
      ...items.map(([name, colour]) => {
        const swatch = el("i");
        swatch.style.background = colour;
        return el("li", null, swatch, name);
      }),
    );
  }
}

function summary(e) {
  switch (e.type) {
    case "connected":
      return "connected to " + e.mx + " (" + e.local + ")";
    case "command":
      return e.line;
    case "reply":
      return e.text + " [" + e.kind + "]";
    case "decision": {
      let s = e.verdict + (e.kind ? " " + e.kind : "") + " by " + e.rule;
      if (e.key) s += " on " + e.key;
      if (e.counter !== undefined) s += " (" + e.counter + "/" + e.limit + (e.window ? " per " + e.window : "") + ")";
      return s + ": " + e.detail;
    }
    case "accepted":
      return "message " + e.message + " stored";
    case "closed":
      return "closed: " + e.reason;
    case "fault":
      return "fault " + e.fault + (e.stage ? " at " + e.stage : "");
    case "tls_failed":
      return "TLS failed: " + e.error;
    case "discarded":
      return e.bytes + " bytes discarded";
    case "spf":
      return "SPF " + e.result + " for " + e.domain;
    default:
      return e.type;
  }
}

function filters() {
  return {
    ip: $("f-ip").value.trim(),
    sender: $("f-sender").value.trim().toLowerCase(),
    rcpt: $("f-rcpt").value.trim().toLowerCase(),
    type: $("f-type").value,
    kind: $("f-kind").value.trim(),
  };
}

function matches(e, f) {
  if (f.ip && !String(e.client).includes(f.ip)) return false;
  if (f.type && e.type !== f.type) return false;
  if (f.kind && e.kind !== f.kind) return false;
  if (f.sender && !(e._from || "").toLowerCase().includes(f.sender)) return false;
  if (f.rcpt && !(e._rcpts || []).some((r) => r.toLowerCase().includes(f.rcpt))) return false;
  return true;
}

function isRefusal(e) {
  return (e.type === "reply" && e.code >= 400) || (e.type === "decision" && (e.verdict === "reject" || e.verdict === "disconnect"));
}

function row(e) {
  const li = el(
    "li",
    { class: isRefusal(e) ? "refusal" : e.type === "accepted" ? "accepted" : "" },
    el("span", { text: e.at.slice(11, 19), title: e.at }),
    el("span", { text: "#" + e.session }),
    el("span", { text: e.client }),
    el("span", { text: e.type }),
    el("span", { text: summary(e), title: summary(e) }),
  );
  if (e.type === "decision" && isRefusal(e)) {
    li.append(el("button", { type: "button", text: "why?", class: "why", onclick: () => explain(e.client, e.at) }));
  } else {
    li.append(el("span"));
  }
  return li;
}

function drawEvents() {
  const list = $("events");
  if ($("f-pause").checked && !dirty.rebuild) return;
  const f = filters();
  if (dirty.rebuild) {
    const shown = [];
    for (let i = state.events.length - 1; i >= 0 && shown.length < MAX_ROWS; i--) {
      if (matches(state.events[i], f)) shown.push(row(state.events[i]));
    }
    list.replaceChildren(...shown);
  } else {
    const fresh = (dirty.newEvents || []).filter((e) => matches(e, f));
    const frag = document.createDocumentFragment();
    for (let i = fresh.length - 1; i >= 0; i--) frag.append(row(fresh[i]));
    list.prepend(frag);
    while (list.childElementCount > MAX_ROWS) list.lastElementChild.remove();
  }
  dirty.rebuild = false;
  dirty.events = false;
  dirty.newEvents = [];
  $("event-count").textContent =
    list.childElementCount + " shown (newest first, at most " + MAX_ROWS + "); " + state.events.length + " held in this page";
}

// ---- stats, polled ---------------------------------------------------------------------

async function poll() {
  try {
    await readClock();
    const stats = await get("/api/v1/stats");
    state.stats = stats;
    state.blocks = stats.blocks || [];
    $("stat-connections").textContent = stats.connections_open;
    $("stat-accepted").textContent = stats.since_reset.messages_accepted;
    $("stat-refused").textContent = countRefusals(stats);
    $("stat-blocks").textContent = state.blocks.length;
    dirty.policy = true;
  } catch (err) {
    if (err instanceof Unauthorized) return;
  }
}

function countRefusals(stats) {
  const byStage = (stats.in_log && stats.in_log.decisions_by_stage) || {};
  let n = 0;
  for (const v of Object.values(byStage)) n += v.refused || 0;
  return n;
}

// ---- messages --------------------------------------------------------------------------

let messagesTimer = null;
let selected = null;

function scheduleMessages() {
  dirty.messages = false;
  if (messagesTimer) return;
  messagesTimer = setTimeout(() => {
    messagesTimer = null;
    loadMessages();
  }, 300);
}

async function loadMessages() {
  const q = new URLSearchParams();
  const to = $("m-to").value.trim();
  const from = $("m-from").value.trim();
  const folder = $("m-folder").value;
  const mx = $("m-mx").value;
  if (to) q.set("to", to);
  if (from) q.set("from", from);
  if (folder) q.set("folder", folder);
  if (mx) q.set("mx", mx);
  const subject = $("m-subject").value.trim().toLowerCase();
  try {
    q.set("limit", "0");
    const head = await get("/api/v1/messages?" + q);
    const page = 500;
    q.set("start", String(Math.max(0, head.total - page)));
    q.set("limit", String(page));
    const list = await get("/api/v1/messages?" + q);
    let messages = list.messages.slice().reverse();
    if (subject) messages = messages.filter((m) => (m.subject || "").toLowerCase().includes(subject));
    $("message-count").textContent = messages.length + " shown of " + head.total + " matching (newest first)";
    $("messages").replaceChildren(...messages.map(messageRow));
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("message-count").textContent = err.message;
  }
}

function messageRow(m) {
  const li = el(
    "li",
    { "data-id": m.ID, class: selected === m.ID ? "selected" : "" },
    el("span", { class: "subject", text: m.subject === undefined ? "(no subject)" : m.subject }),
    el("span", {
      class: "meta",
      text: m.mail_from + " → " + m.rcpt_to.join(", ") + " · " + m.mx + " · " + m.received_at.slice(0, 19).replace("T", " "),
    }),
    " ",
    el("span", { class: "meta folder-" + m.folder, text: m.folder }),
  );
  // `ID` names the replica that holds it when replicas share a Redis (`b:7`).
  li.addEventListener("click", () => showMessage(m.ID));
  return li;
}

async function showMessage(id) {
  selected = id;
  for (const li of $("messages").children) li.classList.toggle("selected", li.dataset.id === String(id));
  try {
    const m = await get("/api/v1/message/" + encodeURIComponent(id));
    const raw = await get("/api/v1/message/" + encodeURIComponent(id) + "/raw");
    $("message").hidden = false;
    $("msg-subject").textContent = m.subject === undefined ? "(no subject)" : m.subject;
    pairs($("msg-envelope"), [
      ["id", m.ID],
      ["MAIL FROM", m.mail_from || "<>"],
      ["RCPT TO", m.rcpt_to.join(", ")],
      ["client", m.client + ":" + m.client_port + " (HELO " + m.helo + ")"],
      ["MX", m.mx],
      ["folder", m.folder],
      ["TLS", m.tls ? "yes" : "no"],
      ["received", m.received_at],
      ["size", m.size + " bytes"],
    ]);
    const body = $("msg-headers").tBodies[0];
    // The headers QQ adds come first: its `Received` and the `X-QQ-` ones.
    const added = (k, i) => /^x-qq-/i.test(k) || (i === 0 && /^received$/i.test(k));
    body.replaceChildren(
      ...(m.headers || []).map(([k, v], i) =>
        el("tr", { class: added(k, i) ? "qq-added" : "", title: added(k, i) ? "added by QQ" : "" }, el("td", { text: k }), el("td", { text: v })),
      ),
    );
    $("msg-auth").textContent = m.auth ? JSON.stringify(m.auth, null, 2) : "(no authentication results)";
    $("msg-raw").textContent = raw;
    const parts = mimeParts(raw);
    $("msg-text").textContent = parts.text !== null ? parts.text : parts.html !== null ? "(no plain-text part)" : raw.split(/\r?\n\r?\n/).slice(1).join("\n\n");
    // srcdoc is an attribute: the HTML is parsed only inside the sandboxed frame.
    $("msg-html").srcdoc = parts.html !== null ? parts.html : "";
    $("msg-tabs").querySelector('[data-part="html"]').disabled = parts.html === null;
    showPart(parts.text === null && parts.html !== null ? "html" : "text");
  } catch (err) {
    if (!(err instanceof Unauthorized)) $("message-count").textContent = err.message;
  }
}

function pairs(dl, items) {
  dl.replaceChildren(...items.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: String(v) })]));
}

function showPart(name) {
  const ids = { text: "msg-text", html: "msg-html", headers: "msg-headers", auth: "msg-auth", raw: "msg-raw" };
  for (const [part, id] of Object.entries(ids)) $(id).hidden = part !== name;
  for (const b of $("msg-tabs").children) b.classList.toggle("active", b.dataset.part === name);
}

// A small MIME reader: enough to find the first text/plain and text/html parts.
function splitHead(text) {
  const m = /\r?\n\r?\n/.exec(text);
  if (!m) return [text, ""];
  return [text.slice(0, m.index), text.slice(m.index + m[0].length)];
}

function headerMap(head) {
  const map = {};
  for (const line of head.replace(/\r?\n[ \t]+/g, " ").split(/\r?\n/)) {
    const i = line.indexOf(":");
    if (i > 0) map[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
  }
  return map;
}

function param(value, name) {
  const m = new RegExp(";\\s*" + name + '\\s*=\\s*(?:"([^"]*)"|([^;\\s]+))', "i").exec(value || "");
  return m ? m[1] || m[2] : null;
}

function decodeBody(body, encoding, charset) {
  encoding = (encoding || "").toLowerCase();
  let bytes;
  if (encoding === "base64") {
    try {
      const bin = atob(body.replace(/[^A-Za-z0-9+/=]/g, ""));
      bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
    } catch (_) {
      return body;
    }
  } else if (encoding === "quoted-printable") {
    const text = body.replace(/=\r?\n/g, "");
    const out = [];
    for (let i = 0; i < text.length; i++) {
      const hex = text.slice(i + 1, i + 3);
      if (text[i] === "=" && /^[0-9A-Fa-f]{2}$/.test(hex)) {
        out.push(parseInt(hex, 16));
        i += 2;
      } else {
        out.push(text.charCodeAt(i) & 0xff);
      }
    }
    bytes = Uint8Array.from(out);
  } else {
    return body;
  }
  try {
    return new TextDecoder(charset || "utf-8").decode(bytes);
  } catch (_) {
    return new TextDecoder("utf-8").decode(bytes);
  }
}

function mimeParts(raw, depth) {
  const found = { text: null, html: null };
  const [head, body] = splitHead(raw);
  const h = headerMap(head);
  const type = (h["content-type"] || "text/plain").toLowerCase();
  const boundary = param(h["content-type"], "boundary");
  if (type.startsWith("multipart/") && boundary && (depth || 0) < 8) {
    const pieces = body.split("--" + boundary);
    for (const piece of pieces.slice(1)) {
      if (piece.startsWith("--")) break;
      // The line break before a boundary belongs to the boundary (RFC 2046).
      const sub = mimeParts(piece.replace(/^\r?\n/, "").replace(/\r?\n$/, ""), (depth || 0) + 1);
      if (found.text === null) found.text = sub.text;
      if (found.html === null) found.html = sub.html;
    }
  } else if (type.startsWith("text/html")) {
    found.html = decodeBody(body, h["content-transfer-encoding"], param(h["content-type"], "charset"));
  } else if (type.startsWith("text/")) {
    found.text = decodeBody(body, h["content-transfer-encoding"], param(h["content-type"], "charset"));
  }
  return found;
}

// ---- policy ----------------------------------------------------------------------------

async function explain(ip, at) {
  location.hash = "#policy";
  $("x-ip").value = ip;
  $("x-at").value = at || "";
  await runExplain();
}

async function runExplain() {
  const q = new URLSearchParams({ ip: $("x-ip").value.trim() });
  const at = $("x-at").value.trim();
  if (at) q.set("at", at);
  $("explain-error").textContent = "";
  try {
    const x = await get("/api/v1/explain?" + q);
    const items = [
      ["client", x.client],
      ["at", x.at],
      ["session", x.session],
      ["stage", x.stage],
      ["verdict", x.verdict + (x.kind ? " (" + x.kind + ")" : "")],
      ["rule", x.rule],
    ];
    if (x.key) items.push(["key", x.key]);
    if (x.counter !== undefined) items.push(["count", x.counter + " of " + x.limit + (x.window ? " per " + x.window : "")]);
    if (x.until) items.push(["until", x.until + " (" + fmtLeft(Date.parse(x.until) - serverNow()) + " left)"]);
    items.push(["detail", x.detail]);
    pairs($("explain-pairs"), items);
    $("explain").hidden = false;
  } catch (err) {
    $("explain").hidden = true;
    if (!(err instanceof Unauthorized)) $("explain-error").textContent = err.message;
  }
}

const repCache = new Map();

function drawPolicy() {
  dirty.policy = false;
  const now = serverNow();
  const tbody = $("blocks").tBodies[0];
  tbody.replaceChildren(
    ...state.blocks.map((b) =>
      el(
        "tr",
        { "data-key": b.key },
        el("td", { text: b.key }),
        el("td", { text: b.quota }),
        el("td", { text: b.window || "" }),
        el("td", { text: b.until }),
        el("td", { class: "left", text: fmtLeft(Date.parse(b.until) - now) }),
        el("td", { text: String(b.refused) }),
      ),
    ),
  );
  $("blocks-none").hidden = state.blocks.length > 0;
  drawUsage(now);
  drawReputation(now);
  drawLists();
}

function windowStart(ms, window) {
  const d = new Date(ms);
  if (window === "minute") d.setUTCSeconds(0, 0);
  else if (window === "hour") d.setUTCMinutes(0, 0, 0);
  else d.setUTCHours(0, 0, 0, 0);
  return d.getTime();
}

function bar(label, count, limit, note) {
  const frac = limit ? Math.min(1, count / limit) : 0;
  const fill = el("div", { class: "fill" + (limit && count >= limit ? " full" : "") });
  fill.style.width = (frac * 100).toFixed(1) + "%";
  return el("div", { class: "bar" }, el("span", { text: label, title: label }), el("div", { class: "track" }, fill), el("span", { text: count + " / " + (limit ?? "∞") + (note ? " " + note : "") }));
}

function drawUsage(now) {
  const box = $("usage");
  const rows = [];
  const tiers = state.config && state.config.quotas && state.config.quotas.ip_messages;
  if (tiers && tiers.enabled !== false) {
    const ips = Array.from(new Set(state.accepted.map((a) => a.client))).slice(0, 50);
    for (const ip of ips) {
      for (const w of ["minute", "hour", "day"]) {
        const tier = tiers[w];
        if (!tier) continue;
        const from = windowStart(now, w);
        const n = state.accepted.filter((a) => a.client === ip && a.at >= from && a.at <= now).length;
        rows.push(bar("ip:" + ip + " (" + w + ")", n, tier.limit));
      }
    }
  }
  // Each key's count at its latest refusal, as the decision gave it.
  const latest = new Map();
  for (const e of state.events) {
    if (e.type === "decision" && e.counter !== undefined && e.key) latest.set(e.key + " " + e.rule + " " + (e.window || ""), e);
  }
  for (const e of latest.values()) {
    const what = e.key + " (" + (e.window ? e.window + ", " : "") + e.rule + ")";
    rows.push(bar(what, e.counter, e.limit, "at " + e.at.slice(11, 19)));
  }
  if (!rows.length) rows.push(el("p", { class: "hint", text: "Nothing counted yet." }));
  box.replaceChildren(...rows);
}

function drawReputation(now) {
  const byIp = (state.stats && state.stats.in_log && state.stats.in_log.decisions_by_ip) || {};
  const ips = new Set([...Object.keys(byIp), ...state.firstSeen.keys()]);
  const tbody = $("reputation").tBodies[0];
  const rows = [];
  for (const ip of Array.from(ips).slice(0, 200)) {
    const first = state.firstSeen.get(ip);
    const day = first !== undefined ? Math.floor((now - first) / 86400000) + 1 : "";
    const rep = repCache.get(ip);
    const decisions = byIp[ip];
    rows.push(
      el(
        "tr",
        null,
        el("td", { text: ip }),
        el("td", { text: rep === undefined ? "…" : String(rep) }),
        el("td", { text: first !== undefined ? fmtTime(first) : "" }),
        el("td", { text: String(day) }),
        el("td", { text: decisions === undefined ? "" : decisions.accepted + " accepted, " + decisions.refused + " refused" }),
      ),
    );
  }
  tbody.replaceChildren(...rows);
}

async function refreshReputation() {
  const byIp = (state.stats && state.stats.in_log && state.stats.in_log.decisions_by_ip) || {};
  const ips = new Set([...Object.keys(byIp), ...state.firstSeen.keys()]);
  for (const ip of Array.from(ips).slice(0, 200)) {
    try {
      const r = await get("/api/v1/reputation/" + encodeURIComponent(ip));
      repCache.set(ip, r.reputation);
    } catch (err) {
      if (err instanceof Unauthorized) return;
    }
  }
  dirty.policy = true;
}

function drawLists() {
  const c = state.config;
  if (!c) return;
  const names = (list) => (list || []).map((e) => (typeof e === "string" ? e : e.ip || e.sender || e.domain || JSON.stringify(e))).join(", ") || "none";
  const bl = c.blacklist || {};
  const items = [
    ["blacklisted IPs (config)", names(bl.ips)],
    ["blacklisted senders (config)", names(bl.senders)],
    ["blacklisted domains (config)", names(bl.domains)],
    ["random IP listing", String(bl.random_ip_probability ?? "")],
  ];
  if (c.whitelist) items.push(["whitelists (config)", JSON.stringify(c.whitelist)]);
  pairs($("lists"), items);
}

// ---- control ---------------------------------------------------------------------------

function showResult(what, answer) {
  $("c-result").textContent = what + "\n" + (typeof answer === "string" ? answer : JSON.stringify(answer, null, 2));
}

async function act(what, method, path, body, type) {
  try {
    const answer = await call(method, path, body, type);
    showResult(method + " " + path + (body !== undefined ? " " + (typeof body === "string" ? body : JSON.stringify(body)) : ""), answer);
    await poll();
    await loadConfig();
    return answer;
  } catch (err) {
    if (!(err instanceof Unauthorized)) showResult(what + " failed", err.message);
    return null;
  }
}

function formValues(form) {
  const out = {};
  for (const input of form.querySelectorAll("input, textarea")) {
    const v = input.value.trim();
    if (v) out[input.name] = v;
  }
  return out;
}

function setupControl() {
  $("c-advance").addEventListener("submit", (ev) => {
    ev.preventDefault();
    act("advance", "POST", "/api/v1/clock/advance", { by: formValues(ev.target).by || "1m" });
  });
  $("c-list").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const action = ev.submitter ? ev.submitter.dataset.action : "blacklist";
    const v = formValues(ev.target);
    const body = {};
    if (action === "complain") {
      body.ip = v.ip;
      if (v.sender) body.sender = v.sender;
    } else {
      if (v.ip) body.ip = v.ip;
      if (v.sender && !v.ip) body.sender = v.sender;
      if (action === "blacklist" && v.for) body.for = v.for;
    }
    act(action, "POST", "/api/v1/" + action, body);
  });
  $("c-whitelist").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const v = formValues(ev.target);
    act("whitelist", "POST", "/api/v1/whitelist", { recipient: v.recipient, sender: v.sender });
  });
  $("c-faults").addEventListener("submit", (ev) => {
    ev.preventDefault();
    act("faults", "PUT", "/api/v1/faults", ev.target.elements.faults.value || "[]");
  });
  $("c-load").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const action = ev.submitter ? ev.submitter.dataset.action : "scenario";
    act(action, "PUT", "/api/v1/" + action, ev.target.elements.toml.value, "application/toml");
  });
  $("c-reset").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const action = ev.submitter ? ev.submitter.dataset.action : "all";
    act("reset", "POST", "/api/v1/reset", action === "counters" ? { counters: true } : {}).then(() => {
      if (action !== "counters") forget();
    });
  });
}

function forget() {
  state.events = [];
  state.minutes.clear();
  state.accepted = [];
  state.firstSeen.clear();
  dirty.rebuild = true;
  dirty.chart = true;
  dirty.messages = true;
}

async function drawMx() {
  const info = await get("/api/v1/info");
  state.info = info;
  const select = $("m-mx");
  if (select.options.length <= 1) {
    for (const l of info.listeners) select.append(el("option", { value: l.mx, text: l.mx }));
  }
  $("mx-list").replaceChildren(
    ...info.listeners.map((l) =>
      el(
        "li",
        { "data-mx": l.mx },
        el("span", { class: l.up ? "" : "down-mx", text: l.mx + " " + l.addr + " (" + l.host + ") " + (l.up ? "up" : "down") }),
        el("button", { type: "button", text: "Down", onclick: () => act("mx down", "POST", "/api/v1/mx/" + encodeURIComponent(l.mx) + "/down").then(drawMx) }),
        el("button", { type: "button", text: "Up", onclick: () => act("mx up", "POST", "/api/v1/mx/" + encodeURIComponent(l.mx) + "/up").then(drawMx) }),
      ),
    ),
  );
}

async function loadConfig() {
  try {
    state.config = await get("/api/v1/config");
    dirty.policy = true;
  } catch (_) {
    // shown by the login form when it is the token
  }
}

// ---- views, login, start ---------------------------------------------------------------

function route() {
  const view = (location.hash || "#live").slice(1);
  state.view = ["live", "messages", "policy", "control"].includes(view) ? view : "live";
  for (const v of ["live", "messages", "policy", "control"]) $("view-" + v).hidden = v !== state.view || !$("login").hidden;
  for (const a of $("tabs").children) a.classList.toggle("active", a.dataset.view === state.view);
  if (state.view === "messages") loadMessages();
  if (state.view === "policy") {
    dirty.policy = true;
    refreshReputation();
  }
  if (state.view === "live") {
    dirty.chart = true;
    dirty.rebuild = true;
  }
}

function showLogin(message) {
  if (streamAbort) streamAbort.abort();
  $("login").hidden = false;
  for (const v of document.querySelectorAll(".view")) v.hidden = true;
  $("login-error").textContent = message || "";
}

async function start() {
  try {
    await drawMx();
  } catch (err) {
    if (err instanceof Unauthorized) return;
    $("clock").textContent = err.message;
    return;
  }
  $("login").hidden = true;
  await loadConfig();
  try {
    const replies = await get("/api/v1/replies?generation=" + encodeURIComponent(state.info.generation));
    const kinds = Array.from(new Set(replies.map((r) => r.kind))).sort();
    $("kinds").replaceChildren(...kinds.map((k) => el("option", { value: k })));
  } catch (_) {
    // the filter works without suggestions
  }
  route();
  follow();
  poll();
}

function init() {
  for (const name of [
    "connected",
    "command",
    "reply",
    "decision",
    "tls_started",
    "tls_failed",
    "discarded",
    "spf",
    "authenticated",
    "fault",
    "accepted",
    "closed",
  ]) {
    $("f-type").append(el("option", { value: name, text: name }));
  }
  $("login-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("login-token").value);
    $("login-token").value = "";
    start();
  });
  for (const id of ["f-ip", "f-sender", "f-rcpt", "f-type", "f-kind", "f-pause"]) {
    $(id).addEventListener("input", () => (dirty.rebuild = true));
  }
  $("event-filters").addEventListener("submit", (ev) => ev.preventDefault());
  $("message-filters").addEventListener("submit", (ev) => {
    ev.preventDefault();
    loadMessages();
  });
  $("explain-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    runExplain();
  });
  $("msg-tabs").addEventListener("click", (ev) => {
    if (ev.target.dataset.part) showPart(ev.target.dataset.part);
  });
  setupControl();
  window.addEventListener("hashchange", route);
  window.addEventListener("resize", () => (dirty.chart = true));
  setInterval(() => {
    if ($("login").hidden) poll();
  }, 1000);
  setInterval(() => {
    if ($("login").hidden && state.view === "policy") refreshReputation();
  }, 5000);
  requestAnimationFrame(frame);
  start();
}

document.addEventListener("DOMContentLoaded", init);
