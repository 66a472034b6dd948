#!/usr/bin/env python3
"""Drives a real `qqmx serve` the way a hostile or broken sender would, and checks that it
keeps its bounds: a reply or a timeout for every client, never a crash, memory under a
ceiling, the control API answering.

    python3 scripts/adversarial.py [--binary PATH] [--quick] [--only a,b] [--json OUT]
    python3 scripts/adversarial.py --soak 600          # RSS over 10 minutes of churn

Every check starts its own server on free loopback ports, is bounded in time and stops
by itself; traffic goes only to 127.0.0.0/8. `--quick` uses small counts (the test suite
runs it through tests/adversarial.rs); the full run uses the counts the README reports.
The process exits 1 if any check failed. Figures are printed, and written as JSON with
`--json`.
"""

import argparse
import asyncio
import json
import os
import random
import re
import resource
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
# Bounds a hang, never decides a pass: a loaded 2-core machine can be slow.
PATIENCE = 120.0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Qqmx:
    """One `qqmx serve` process on free ports, with its API."""

    def __init__(self, binary, env=None, args=(), prefix=()):
        self.smtp_port = free_port()
        self.api_port = free_port()
        environment = dict(os.environ)
        environment.pop("QQMX_CONFIG", None)
        environment.update({"QQMX_LOG": "warn", "QQMX_LOG_FORMAT": "text"})
        environment.update(env or {})
        command = [*prefix, binary, "serve", "--smtp", f"127.0.0.1:{self.smtp_port}",
                   "--api", f"127.0.0.1:{self.api_port}", *args]
        self.stderr_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"qqmx-adv-{os.getpid()}-{self.api_port}.log"
        self.stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE,
                                     stderr=self.stderr)
        line = self.proc.stdout.readline().decode()
        if "listening on" not in line:
            raise RuntimeError(f"qqmx did not start: {line!r} {self.log()[-2000:]}")
        deadline = time.monotonic() + PATIENCE
        while True:
            try:
                self.get("/healthz")
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    @property
    def smtp(self):
        return ("127.0.0.1", self.smtp_port)

    def rss(self):
        return self.status("VmRSS")

    def peak(self):
        return self.status("VmHWM")

    def status(self, field):
        text = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1)) * 1024

    def request(self, method, path, body=None, headers=None, timeout=PATIENCE):
        req = urllib.request.Request(f"http://127.0.0.1:{self.api_port}{path}", method=method,
                                     data=body, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def get(self, path):
        status, body = self.request("GET", path, timeout=10)
        return json.loads(body) if status == 200 and body[:1] in (b"{", b"[") else body

    def alive(self):
        return self.proc.poll() is None

    def log(self):
        self.stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def stop(self):
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()
        self.stderr_path.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


async def read_reply(reader, timeout=PATIENCE):
    """One whole SMTP reply (its last line), or None when the server closed."""
    while True:
        line = await asyncio.wait_for(reader.readline(), timeout)
        if not line:
            return None
        if len(line) < 4 or line[3:4] != b"-":
            return line.decode(errors="replace").rstrip("\r\n")


async def connect(addr, source=None):
    local = (source, 0) if source else None
    return await asyncio.wait_for(asyncio.open_connection(*addr, local_addr=local), PATIENCE)


async def transaction(reader, writer, sender, rcpt, body=b"Subject: hi\r\n\r\nhello\r\n"):
    replies = []
    for command in (f"MAIL FROM:<{sender}>", f"RCPT TO:<{rcpt}>", "DATA"):
        writer.write(command.encode() + b"\r\n")
        await writer.drain()
        reply = await read_reply(reader)
        replies.append(reply)
        if reply is None or reply[0] not in "23":
            if reply is not None and command != "DATA":
                writer.write(b"RSET\r\n")
                await writer.drain()
                await read_reply(reader)
            return replies
    writer.write(body + b".\r\n")
    await writer.drain()
    replies.append(await read_reply(reader))
    return replies


class Check:
    def __init__(self, name):
        self.name = name
        self.figures = {}
        self.failures = []

    def expect(self, ok, what):
        if not ok:
            self.failures.append(what)

    def figure(self, key, value):
        self.figures[key] = value


def loopback_ips(n, seed):
    """n distinct addresses in 127.0.0.0/8 other than 127.0.0.1, in a seeded order."""
    rng = random.Random(seed)
    seen = set()
    while len(seen) < n:
        a, b, c = rng.randrange(1, 255), rng.randrange(0, 256), rng.randrange(1, 255)
        ip = f"127.{a}.{b}.{c}"
        if ip != "127.0.0.1":
            seen.add(ip)
    return sorted(seen, key=lambda _: rng.random())


# ---------------------------------------------------------------------------------------
# The checks


async def check_garbage(binary, quick):
    """Garbage bytes, NULs, a huge line, a pipelined flood: replies, a live server."""
    c = Check("garbage")
    with Qqmx(binary) as q:
        payloads = {
            "random bytes": bytes(random.Random(1).randrange(256) for _ in range(64 * 1024)),
            "NULs": b"\x00" * 10_000 + b"\r\n",
            "a 1 MiB line": b"HELO " + b"a" * MIB + b"\r\n",
            "TLS ClientHello before the banner": bytes.fromhex("160301002a0100002603") + b"\x00" * 40,
            "pipelined flood of 20,000 NOOPs": b"NOOP\r\n" * 20_000,
        }
        for what, payload in payloads.items():
            reader, writer = await connect(q.smtp)
            banner = await read_reply(reader)
            # QUIT after the garbage: the session ends with the server's 221 or close.
            writer.write(payload + b"\r\nQUIT\r\n")
            try:
                await writer.drain()
            except ConnectionError:
                pass
            replies = 0
            last = None
            while True:
                try:
                    reply = await read_reply(reader, timeout=PATIENCE)
                except (ConnectionError, asyncio.TimeoutError):
                    break
                if reply is None:
                    break
                replies += 1
                last = reply
                if reply.startswith(("421", "221")):
                    break
            writer.close()
            c.expect(banner and banner.startswith("220"), f"{what}: no banner")
            c.expect(replies > 0, f"{what}: no reply at all")
            c.figure(what, {"replies": replies, "last": last})
        c.expect(q.alive(), "qqmx died")
        c.figure("rss_mib", round(q.rss() / MIB, 1))
    return c


async def check_burst(binary, quick):
    """A burst of connects beyond the connection cap: every client hears something."""
    c = Check("burst")
    n = 300 if quick else 2000
    cap = 100 if quick else 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n * 2 + 200), hard))
    with Qqmx(binary, env={"QQMX__LIMITS__MAX_CONNECTIONS": str(cap),
                           "QQMX__QUOTAS__IP_CONNECTIONS__ENABLED": "false",
                           "QQMX__QUOTAS__IP_CONCURRENT__ENABLED": "false"}) as q:
        async def one(i):
            try:
                reader, writer = await connect(q.smtp, f"127.1.{i // 250}.{i % 250 + 1}")
            except (OSError, asyncio.TimeoutError) as e:
                return f"connect: {type(e).__name__}"
            try:
                reply = await read_reply(reader)
                return reply[:3] if reply else "closed silently"
            except asyncio.TimeoutError:
                return "silent"
            except ConnectionError:
                return "reset"
            finally:
                writer.close()

        results = await asyncio.gather(*(one(i) for i in range(n)))
        counts = {}
        for r in results:
            counts[r] = counts.get(r, 0) + 1
        c.figure("clients", n)
        c.figure("connection_cap", cap)
        c.figure("outcomes", counts)
        c.expect(counts.get("silent", 0) == 0, f"{counts.get('silent')} clients never heard a line")
        c.expect(q.alive(), "qqmx died")
    return c


async def check_fd_limit(binary, quick):
    """File descriptors run out (prlimit): clients are answered or refused, the API stays
    up, qqmx recovers when they go, and the accept loop does not flood the log."""
    c = Check("fd_limit")
    with Qqmx(binary, prefix=["prlimit", "--nofile=96:96"],
              env={"QQMX_LOG": "warn",
                   "QQMX__QUOTAS__IP_CONNECTIONS__ENABLED": "false",
                   "QQMX__QUOTAS__IP_CONCURRENT__ENABLED": "false"}) as q:
        held = []
        outcomes = {}
        for i in range(200):
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*q.smtp, local_addr=(f"127.2.0.{i % 250 + 1}", 0)), 10)
                held.append((reader, writer))
            except (OSError, asyncio.TimeoutError) as e:
                outcomes[type(e).__name__] = outcomes.get(type(e).__name__, 0) + 1
        await asyncio.sleep(2)
        for reader, writer in held:
            writer.close()
        held.clear()
        await asyncio.sleep(1)
        reader, writer = await connect(q.smtp)
        banner = await read_reply(reader)
        writer.close()
        warnings = q.log().count("WARN")
        c.figure("connect_failures", outcomes)
        c.figure("warnings_logged", warnings)
        c.expect(banner and banner.startswith("220"), f"no banner after the flood: {banner}")
        c.expect(q.alive(), "qqmx died")
        # Failing accepts are logged at most once per 10 s per listener (SMTP and API).
        c.expect(warnings <= 4, f"{warnings} warnings in 3 s: the accept loop spins")
    return c


async def many_ips(binary, quick, name, env, ceiling):
    """Many distinct client IPs, three messages each from new sender domains to new
    recipients: RSS levels off under a ceiling once the policy's key cap and the store's
    caps are reached."""
    c = Check(name)
    n = 3000 if quick else 100_000
    with Qqmx(binary, env=env) as q:
        before = q.rss()
        ips = loopback_ips(n, 7)
        sem = asyncio.Semaphore(64)
        accepted = 0
        done = 0
        samples = []

        async def client(i, ip):
            nonlocal accepted, done
            async with sem:
                try:
                    reader, writer = await connect(q.smtp, ip)
                except (OSError, asyncio.TimeoutError):
                    return
                try:
                    await read_reply(reader)
                    writer.write(b"EHLO client.example\r\n")
                    await read_reply(reader)
                    for k in range(3):
                        # Distinct recipients and bodies: the recipient quota and the bulk
                        # detector stay out of the way, and count their keys too.
                        r = await transaction(reader, writer, f"s{k}@d{i}-{k}.example",
                                              f"{10001 + 3 * i + k}@qq.com",
                                              f"Subject: {i}/{k}\r\n\r\nhello {i} {k}\r\n".encode())
                        accepted += bool(r and r[-1] and r[-1].startswith("250"))
                    writer.write(b"QUIT\r\n")
                    await writer.drain()
                finally:
                    writer.close()
                    done += 1
                    if done % (n // 10) == 0:
                        samples.append((done, round(q.rss() / MIB, 1)))

        started = time.monotonic()
        await asyncio.gather(*(client(i, ip) for i, ip in enumerate(ips)))
        elapsed = time.monotonic() - started
        after = q.rss()
        metrics = q.get("/metrics")
        metrics = metrics.decode() if isinstance(metrics, bytes) else ""
        gauges = dict(re.findall(r"^(qqmx_(?:policy_keys|policy_evictions_total|store_messages|store_events|store_bytes|store_event_bytes)) (\d+)$", metrics, re.M))
        c.figure("client_ips", n)
        c.figure("messages_accepted", accepted)
        c.figure("seconds", round(elapsed, 1))
        c.figure("rss_before_mib", round(before / MIB, 1))
        c.figure("rss_mib_by_clients_done", samples)
        c.figure("rss_after_mib", round(after / MIB, 1))
        c.figure("gauges", {k: int(v) for k, v in gauges.items()})
        c.figure("ceiling_mib", ceiling // MIB)
        c.expect(after < ceiling, f"RSS {after / MIB:.0f} MiB over {ceiling // MIB} MiB")
        c.expect(accepted >= 3 * n, f"only {accepted} accepted of {3 * n}")
        c.expect(q.alive(), "qqmx died")
    return c


async def check_many_ips(binary, quick):
    """The default config: the store's own caps (512 MiB of messages, 256 MiB of events)
    and the policy's key cap bound the memory."""
    return await many_ips(binary, quick, "many_ips", {}, 1024 * MIB)


async def check_many_ips_small_store(binary, quick):
    """The same with a small store, so that what remains is the policy's own memory."""
    env = {"QQMX__STORE__MAX_MESSAGES": "1000", "QQMX__STORE__MAX_EVENTS": "10000"}
    return await many_ips(binary, quick, "many_ips_small_store", env, 150 * MIB)


async def check_big_messages(binary, quick):
    """Several large messages at once: memory stays under a ceiling; each is stored or
    refused with a reply."""
    c = Check("big_messages")
    # 70 MB (in whole chunks of 1,024,000 bytes: 69,632,000), under the 73,400,320 limit.
    count, chunks = (3, 20) if quick else (8, 68)
    with Qqmx(binary) as q:
        chunk = (b"x" * 998 + b"\r\n") * 1024
        size = chunks * len(chunk)

        async def one(i):
            reader, writer = await connect(q.smtp, f"127.3.0.{i + 1}")
            await read_reply(reader)
            writer.write(b"EHLO big.example\r\n")
            await read_reply(reader)
            replies = []
            for command in ("MAIL FROM:<big@example.org>", "RCPT TO:<10001@qq.com>", "DATA"):
                writer.write(command.encode() + b"\r\n")
                replies.append(await read_reply(reader))
                if not replies[-1] or replies[-1][0] not in "23":
                    writer.close()
                    return replies[-1]
            sent = 0
            try:
                while sent < size:
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
                writer.write(b".\r\n")
                await writer.drain()
            except ConnectionError:
                pass
            reply = await read_reply(reader)
            writer.close()
            return reply

        replies = await asyncio.gather(*(one(i) for i in range(count)))
        peak = q.peak()
        c.figure("messages", count)
        c.figure("message_bytes", size)
        c.figure("replies", [r[:40] if r else r for r in replies])
        c.figure("peak_rss_mib", round(peak / MIB, 1))
        ceiling = (200 if quick else 700) * MIB
        c.figure("ceiling_mib", ceiling // MIB)
        c.expect(all(r for r in replies), "a client got no reply")
        c.expect(peak < ceiling, f"peak RSS {peak / MIB:.0f} MiB over {ceiling // MIB} MiB")
        c.expect(q.alive(), "qqmx died")
    return c


async def check_api_stalls(binary, quick):
    """Heavy API reads while the store is full do not stall SMTP."""
    c = Check("api_stalls")
    messages = 2000 if quick else 100_000
    with Qqmx(binary, args=["--no-limits"]) as q:
        sem = asyncio.Semaphore(20)

        async def sender(k, n):
            async with sem:
                # A new session every 1,000 messages, well under limits.max_commands.
                for start in range(0, n, 1000):
                    reader, writer = await connect(q.smtp)
                    await read_reply(reader)
                    writer.write(b"EHLO fill.example\r\n")
                    await read_reply(reader)
                    for _ in range(min(1000, n - start)):
                        await transaction(reader, writer, "fill@example.org", "10001@qq.com")
                    writer.close()

        per = messages // 20
        await asyncio.gather(*(sender(k, per) for k in range(20)))
        stats = q.get("/api/v1/stats")
        events = stats.get("store", {}).get("events", None) if isinstance(stats, dict) else None
        reader, writer = await connect(q.smtp)
        await read_reply(reader)
        stop = asyncio.Event()

        def hammer(path):
            n = 0
            while not stop.is_set():
                q.request("GET", path)
                n += 1
            return n

        loop = asyncio.get_running_loop()
        readers = [loop.run_in_executor(None, hammer, p)
                   for p in ("/api/v1/stats", "/api/v1/messages?limit=1") * 2]
        latencies = []
        end = time.monotonic() + (3 if quick else 10)
        while time.monotonic() < end:
            t = time.monotonic()
            writer.write(b"NOOP\r\n")
            await read_reply(reader)
            latencies.append(time.monotonic() - t)
            await asyncio.sleep(0.005)
        stop.set()
        requests = sum(await asyncio.gather(*readers))
        writer.close()
        latencies.sort()
        c.figure("messages_in_store", messages)
        c.figure("events_in_store", events)
        c.figure("api_requests", requests)
        c.figure("noop_ms_median", round(latencies[len(latencies) // 2] * 1000, 2))
        c.figure("noop_ms_p99", round(latencies[int(len(latencies) * 0.99)] * 1000, 2))
        c.figure("noop_ms_max", round(latencies[-1] * 1000, 2))
        c.expect(q.alive(), "qqmx died")
    return c


async def check_api_abuse(binary, quick):
    """Half-sent requests beyond the API's connection cap, hostile headers and a
    cross-site request: over the cap a client is answered 503 or closed, never left
    hanging; the half-sent requests are dropped after the head timeout and the API
    answers again."""
    c = Check("api_abuse")
    n = 200 if quick else 2000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n * 2 + 200), hard))
    with Qqmx(binary) as q:
        held = []
        for _ in range(n):
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection("127.0.0.1", q.api_port), 10)
                writer.write(b"GET /api/v1/info HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                held.append((reader, writer))
            except (OSError, asyncio.TimeoutError):
                break
        loop = asyncio.get_running_loop()

        def healthz():
            try:
                return q.request("GET", "/healthz", timeout=30)[0]
            except OSError as e:
                return type(e).__name__

        while_held = await loop.run_in_executor(None, healthz)

        async def fate(reader):
            """What a half-sent request gets: an answer, or a close."""
            try:
                head = await asyncio.wait_for(reader.read(64), PATIENCE)
                return head.split(b" ")[1].decode() if head.startswith(b"HTTP/") else "closed"
            except (ConnectionError, asyncio.TimeoutError) as e:
                return type(e).__name__

        fates = {}
        for f in await asyncio.gather(*(fate(r) for r, _ in held)):
            fates[f] = fates.get(f, 0) + 1
        for _, w in held:
            w.close()
        after = await loop.run_in_executor(None, healthz)
        c.figure("half_sent_requests", len(held))
        c.figure("healthz_while_held", while_held)
        c.figure("half_sent_fates", fates)
        c.figure("healthz_after", after)
        c.expect(fates.get("TimeoutError", 0) == 0, f"{fates.get('TimeoutError')} requests left hanging")
        c.expect(after == 200, f"/healthz after the flood: {after}")
        csrf, body = q.request("POST", "/api/v1/reset", b"{}", {
            "Content-Type": "text/plain", "Origin": "http://evil.example"})
        rebinding, _ = q.request("GET", "/api/v1/messages", None, {"Host": "evil.example:8025"})
        c.figure("csrf_status", csrf)
        c.figure("foreign_host_status", rebinding)
        c.expect(csrf == 403, f"a cross-site reset got {csrf}: {body[:200]!r}")
        c.expect(rebinding == 403, f"a foreign Host got {rebinding}")
        c.expect(q.alive(), "qqmx died")
    return c


async def check_sigterm(binary, quick):
    """SIGTERM under load: every message a client saw acknowledged was stored (the server
    logs each stored message's acknowledgement; a client's count can only be lower)."""
    c = Check("sigterm")
    q = Qqmx(binary, args=["--no-limits"], env={"QQMX_LOG": "qqmx=debug"})
    acks = 0
    stop = False

    async def sender(k):
        nonlocal acks
        try:
            reader, writer = await connect(q.smtp)
            await read_reply(reader)
            writer.write(b"EHLO load.example\r\n")
            await read_reply(reader)
            while not stop:
                r = await transaction(reader, writer, "load@example.org", "10001@qq.com")
                if r and r[-1] and r[-1].startswith("250 Ok"):
                    acks += 1
                if not r or r[-1] is None or r[-1].startswith("421"):
                    return
        except (ConnectionError, asyncio.TimeoutError, OSError):
            return

    tasks = [asyncio.create_task(sender(k)) for k in range(20)]
    await asyncio.sleep(1.5)
    q.proc.send_signal(signal.SIGTERM)
    await asyncio.wait_for(asyncio.gather(*tasks), PATIENCE)
    stop = True
    code = q.proc.wait(PATIENCE)
    log = q.log()
    q.stop()
    logged = log.count("250 Ok: queued as")
    c.figure("client_acks", acks)
    c.figure("acks_logged_by_qqmx", logged)
    c.figure("exit_code", code)
    c.expect(code == 0, f"exit code {code}")
    c.expect(acks <= logged, f"clients saw {acks} acknowledgements, qqmx stored {logged}")
    c.expect(acks > 0, "no message got through before the signal")
    return c


async def soak(binary, seconds, rate, env):
    """RSS over `seconds` of churn: new client IPs and new senders at `rate` messages/s."""
    with Qqmx(binary, env=env) as q:
        samples = []
        sent = accepted = 0
        ips = loopback_ips(200_000, 11)
        started = time.monotonic()
        next_sample = started
        i = 0
        sem = asyncio.Semaphore(32)

        async def one(i):
            nonlocal accepted
            async with sem:
                try:
                    reader, writer = await connect(q.smtp, ips[i % len(ips)])
                    await read_reply(reader)
                    writer.write(b"EHLO soak.example\r\n")
                    await read_reply(reader)
                    r = await transaction(reader, writer, f"u{i}@d{i % 5000}.example",
                                          f"{10001 + i % 90000}@qq.com",
                                          f"Subject: {i}\r\n\r\nhello {i}\r\n".encode())
                    accepted += bool(r and r[-1] and r[-1].startswith("250"))
                    writer.close()
                except (OSError, asyncio.TimeoutError):
                    pass

        pending = set()
        while time.monotonic() - started < seconds:
            now = time.monotonic()
            if now >= next_sample:
                samples.append((round(now - started), round(q.rss() / MIB, 1), sent, accepted))
                print(f"soak: {samples[-1][0]:>4} s  RSS {samples[-1][1]:>6} MiB  sent {sent}  accepted {accepted}", flush=True)
                next_sample += 10
            target = int((now - started) * rate)
            while sent < target:
                pending.add(asyncio.create_task(one(i)))
                i += 1
                sent += 1
            pending = {t for t in pending if not t.done()}
            await asyncio.sleep(0.01)
        await asyncio.gather(*pending)
        samples.append((round(time.monotonic() - started), round(q.rss() / MIB, 1), sent, accepted))
        return {"seconds": seconds, "rate": rate, "samples": samples}


CHECKS = {
    "garbage": check_garbage,
    "burst": check_burst,
    "fd_limit": check_fd_limit,
    "many_ips": check_many_ips,
    "many_ips_small_store": check_many_ips_small_store,
    "big_messages": check_big_messages,
    "api_stalls": check_api_stalls,
    "api_abuse": check_api_abuse,
    "sigterm": check_sigterm,
}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--binary", default=str(REPO / "target" / "release" / "qqmx"))
    p.add_argument("--quick", action="store_true", help="small counts, for the test suite")
    p.add_argument("--only", help="comma-separated checks: " + ",".join(CHECKS))
    p.add_argument("--json", help="write the figures here")
    p.add_argument("--soak", type=int, metavar="SECONDS", help="run the soak instead")
    p.add_argument("--soak-rate", type=int, default=300, help="messages a second in the soak")
    p.add_argument("--set", action="append", default=[], metavar="QQMX__TABLE__KEY=VALUE",
                   help="a config variable for the soak's server (repeatable)")
    args = p.parse_args()
    if args.soak:
        env = dict(kv.split("=", 1) for kv in args.set)
        result = asyncio.run(soak(args.binary, args.soak, args.soak_rate, env))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
        return 0
    names = args.only.split(",") if args.only else list(CHECKS)
    results = {}
    failed = False
    for name in names:
        started = time.monotonic()
        try:
            check = asyncio.run(CHECKS[name](args.binary, args.quick))
        except Exception as e:  # a check that cannot finish is a failure, with its reason
            check = Check(name)
            check.expect(False, f"{type(e).__name__}: {e}")
        check.figure("wall_seconds", round(time.monotonic() - started, 1))
        verdict = "ok  " if not check.failures else "FAIL"
        failed |= bool(check.failures)
        print(f"{verdict} {name}: {json.dumps(check.figures)}", flush=True)
        for f in check.failures:
            print(f"     {f}", flush=True)
        results[name] = {"passed": not check.failures, "figures": check.figures,
                         "failures": check.failures}
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
