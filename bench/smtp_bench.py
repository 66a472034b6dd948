#!/usr/bin/env python3
"""Server CPU time per message: qqmx against Postfix's smtp-sink.

Both servers are driven by Postfix's smtp-source over loopback, the server pinned to
one CPU and smtp-source to the other. For every (load, server) pair the harness starts a
fresh server, reads its CPU time (utime + stime from /proc/PID/stat) before and after
the load, and times the load. Medians over --runs repetitions are printed as a Markdown
table and written to bench/results/latest.json.

    python3 bench/smtp_bench.py              # full run, 5 repetitions
    python3 bench/smtp_bench.py --runs 1     # quick check
    python3 bench/smtp_bench.py --sign ed25519   # DKIM + DMARC verified on every message
    python3 bench/smtp_bench.py --help

Python 3.11 standard library only. Linux only (/proc, taskset). See bench/README.md.
"""

from __future__ import annotations

import argparse
import hashlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
QQMX_BIN = REPO / "target" / "release" / "qqmx"
QQMX_CONFIG = BENCH_DIR / "qqmx-bench.toml"
RESULTS_DIR = BENCH_DIR / "results"
HOST = "127.0.0.1"  # loopback only, never anything else
CLK_TCK = os.sysconf("SC_CLK_TCK")

SENDER = "sender@example.org"
RECIPIENT = "10001@qq.com"  # qqmx accepts QQ numbers on qq.com
HELO_NAME = "client.example.org"

# --sign: the test keys of tests/auth.rs and dkimpy's signer (an implementation independent
# of the one qqmx verifies with). The key is published under example.org in qqmx's zone.
SIGNER = REPO / "tests" / "clients" / "dkim_sign.py"
KEYS_DIR = REPO / "tests" / "keys"
SIGN_DOMAIN = SENDER.rsplit("@", 1)[1]
SIGNATURES = {
    # --sign value: (key file stem, dkimpy algorithm, selector)
    "ed25519": ("ed25519", "ed25519-sha256", "ed"),
    "rsa": ("rsa2048", "rsa-sha256", "rsa"),
}
SIGN_CHECK_MESSAGES = 20  # messages of the pre-check that DKIM passes (see check_signed)


@dataclass(frozen=True)
class Load:
    name: str
    sessions: int
    messages: int
    description: str


LOADS = {
    "serial": Load("serial", 1, 10_000, "1 connection, 10,000 messages of 1 KB"),
    "parallel": Load("parallel", 20, 50_000, "20 connections, 50,000 messages of 1 KB in total"),
}


# What qqmx runs with (--variants): its config and the message's DKIM signature. Every
# variant is measured against smtp-sink receiving the same bytes.
VARIANTS = {
    # name: (config, --sign)
    "default": (None, None),  # None: --qqmx-config (bench/qqmx-bench.toml)
    "rules": (BENCH_DIR / "qqmx-rules.toml", None),
    "ed25519": (None, "ed25519"),
    "rsa": (None, "rsa"),
}

# Where smtp-source runs (--setups): on the other CPU, or on the server's own.
SETUPS = ("split", "same")


@dataclass
class Sample:
    load: str
    server: str
    run: int
    messages: int
    sessions: int
    wall_s: float
    server_cpu_s: float
    server_user_s: float
    server_sys_s: float
    client_cpu_s: float
    variant: str = "default"
    setup: str = "split"
    server_minflt: int = 0  # minor page faults of the server during the load
    msgs_per_s: float = 0.0
    server_cpu_us_per_msg: float = 0.0
    server_user_us_per_msg: float = 0.0
    server_sys_us_per_msg: float = 0.0
    server_minflt_per_msg: float = 0.0
    client_cpu_us_per_msg: float = 0.0
    server_busy: float = 0.0  # server CPU / wall: 1.0 means its core was saturated
    counted: int = 0  # smtp-source's own DATA counter (-c)
    # Interference: CPU time on the two cores that was not ours, and hypervisor steal.
    server_core_other_s: float = 0.0
    client_core_other_s: float = 0.0
    steal_s: float = 0.0
    disturbed: bool = False
    notes: list[str] = field(default_factory=list)

    def finish(self) -> "Sample":
        self.msgs_per_s = self.messages / self.wall_s
        self.server_cpu_us_per_msg = self.server_cpu_s * 1e6 / self.messages
        self.server_user_us_per_msg = self.server_user_s * 1e6 / self.messages
        self.server_sys_us_per_msg = self.server_sys_s * 1e6 / self.messages
        self.server_minflt_per_msg = self.server_minflt / self.messages
        self.client_cpu_us_per_msg = self.client_cpu_s * 1e6 / self.messages
        self.server_busy = self.server_cpu_s / self.wall_s
        return self


class BenchError(RuntimeError):
    pass


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- helpers


def proc_cpu(pid: int) -> tuple[float, float, int]:
    """(user, sys) seconds and minor page faults of the whole process (all threads, live
    and exited)."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    # The command name (field 2) may contain spaces; it ends at the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    minflt = int(fields[7])  # field 10 of proc(5)
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of proc(5)
    return utime / CLK_TCK, stime / CLK_TCK, minflt


def core_times() -> dict[int, tuple[float, float]]:
    """Per CPU (busy, steal) seconds since boot, from /proc/stat."""
    out = {}
    with open("/proc/stat") as f:
        for line in f:
            name, *vals = line.split()
            if not name.startswith("cpu") or name == "cpu":
                continue
            v = [int(x) for x in vals[:8]] + [0] * (8 - len(vals[:8]))
            user, nice, system, idle, iowait, irq, softirq, steal = v
            out[int(name[3:])] = ((user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK)
    return out


def wait_quiet(args: argparse.Namespace) -> float:
    """Waits (at most --quiet-wait seconds) until both cores are nearly idle, so that
    another job on the machine does not share the measurement. Returns the busy fraction
    of the busier core over the last second."""
    deadline = time.monotonic() + args.quiet_wait
    cpus = {args.server_cpu, args.client_cpu}
    while True:
        c0 = core_times()
        time.sleep(1.0)
        c1 = core_times()
        busy = max(c1[c][0] - c0[c][0] for c in cpus)
        if busy <= args.quiet_threshold or time.monotonic() >= deadline:
            return busy
        log(f"    waiting for the machine to quiet down (a core is {busy:.0%} busy)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BenchError(f"server exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listens on {HOST}:{port} after {timeout:.0f}s")


def wait_line(proc: subprocess.Popen, stdout_path: Path, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = stdout_path.read_text(errors="replace")
        for line in text.splitlines():
            if needle in line:
                return line
        if proc.poll() is not None:
            raise BenchError(f"server exited with status {proc.returncode} before `{needle}`")
        time.sleep(0.05)
    raise BenchError(f"no `{needle}` on the server's stdout after {timeout:.0f}s")


def stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL; only the process this harness started."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=grace)


def wait_child(proc: subprocess.Popen, timeout: float) -> tuple[int, float]:
    """Waits for a child with a deadline; returns (exit status, user+sys CPU seconds)."""
    deadline = time.monotonic() + timeout
    delay = 0.001
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            proc.returncode = os.waitstatus_to_exitcode(status)
            return proc.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise BenchError(f"smtp-source did not finish within {timeout:.0f}s")
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --------------------------------------------------------------------------- servers


class Server:
    name = ""

    def __init__(self, args: argparse.Namespace, workdir: Path, cpu: int):
        self.args = args
        self.workdir = workdir
        self.cpu = cpu
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.out = workdir / f"{self.name}.{self.port}.out"
        self.err = workdir / f"{self.name}.{self.port}.err"

    def command(self) -> list[str]:
        raise NotImplementedError

    def wait_ready(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "Server":
        # taskset execs the server: the child's PID is the server's own.
        cmd = ["taskset", "-c", str(self.cpu), *self.command()]
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                cwd=self.workdir,
                env=self.env(),
            )
        try:
            self.wait_ready()
            time.sleep(self.args.settle)  # let start-up work finish before measuring
        except BaseException:
            stop(self.proc)
            raise
        return self

    def env(self) -> dict[str, str]:
        return dict(os.environ)

    def __exit__(self, *exc) -> None:
        if self.proc is not None:
            stop(self.proc)

    def check_after(self, sample: Sample) -> None:
        """Adds notes about anything odd the server logged during the load."""


class Qqmx(Server):
    name = "qqmx"

    def __init__(self, args: argparse.Namespace, workdir: Path, cpu: int, config: Path | None = None):
        super().__init__(args, workdir, cpu)
        self.config = config or args.qqmx_config

    # Servers started with --state, for a key prefix of their own.
    started = 0

    def command(self) -> list[str]:
        cmd = [
            str(self.args.qqmx),
            "serve",
            "--config",
            str(self.config),
            "--smtp",
            f"{HOST}:{self.port}",
            "--api",
            "off",
        ]
        if self.state():
            cmd += ["--state", self.state()]
        return cmd

    def state(self) -> str | None:
        """The Redis URL of the policy state, None for the in-memory state."""
        return self.args.state

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        for key in ("QQMX_CONFIG", "QQMX_SMTP", "QQMX_API", "QQMX_STATE"):
            env.pop(key, None)
        env["QQMX_LOG"] = self.args.qqmx_log
        if self.state():
            # A fresh prefix per server: every run starts from empty counts in Redis, as
            # a fresh server with the memory state does.
            Qqmx.started += 1
            env["QQMX__STATE__PREFIX"] = f"bench-{os.getpid()}-{Qqmx.started}"
        return env

    def wait_ready(self) -> None:
        try:
            wait_line(self.proc, self.out, "qqmx listening on", self.args.start_timeout)
        except BenchError as e:
            raise BenchError(f"{e}\nqqmx stderr:\n{tail(self.err)}") from None

    def check_after(self, sample: Sample) -> None:
        text = self.err.read_text(errors="replace")
        bad = [l for l in text.splitlines() if " WARN " in l or " ERROR " in l]
        if bad:
            sample.notes.append(f"qqmx logged {len(bad)} WARN/ERROR lines, first: {bad[0][:200]}")


class SmtpSink(Server):
    name = "smtp-sink"

    def command(self) -> list[str]:
        cmd = [self.args.smtp_sink]
        if os.geteuid() == 0:
            cmd += ["-u", self.args.sink_user]  # smtp-sink refuses to run as root
        # -m: more simultaneous sessions than any load opens; backlog 1000.
        return cmd + ["-m", "1024", f"{HOST}:{self.port}", "1000"]

    def wait_ready(self) -> None:
        wait_port(self.port, self.proc, self.args.start_timeout)


class QqmxRedis(Qqmx):
    """qqmx with its policy state in Redis (--redis URL), measured in the same runs as
    qqmx with the in-memory state, alternating, for the ratio of the two."""
    name = "qqmx-redis"

    def state(self) -> str | None:
        return self.args.redis


SERVERS = {"qqmx": Qqmx, "qqmx-redis": QqmxRedis, "smtp-sink": SmtpSink}


# --------------------------------------------------------------------------- --sign


def message_body(size: int) -> str:
    """The body smtp-source -l SIZE sends (lines of a digit and 77 X, 80 bytes with CRLF,
    then the rest), so that a signed message carries the same payload as the default load."""
    lines, left, i = [], size, 1
    while left >= 80:
        lines.append(str(i % 10) + "X" * 77)
        left -= 80
        i += 1
    if left:
        lines.append("X" * left)
    return "\r\n".join(lines) + "\r\n"


def zone_toml(spf: str, dkim_record: str, selector: str) -> str:
    """qqmx [dns] records for example.org: SPF, the DKIM key, DMARC p=reject."""
    q = json.dumps  # a JSON string of ASCII text is a TOML basic string
    return (
        f"\n# Added by smtp_bench.py --sign: the zone of {SIGN_DOMAIN}.\n"
        f'[dns.records.{q(SIGN_DOMAIN)}]\ntxt = [{q(spf)}]\n\n'
        f'[dns.records.{q(selector + "._domainkey." + SIGN_DOMAIN)}]\ntxt = [{q(dkim_record)}]\n\n'
        f'[dns.records.{q("_dmarc." + SIGN_DOMAIN)}]\ntxt = [{q("v=DMARC1; p=reject")}]\n'
    )


def prepare_signed(args: argparse.Namespace, workdir: Path) -> dict:
    """Signs one message with dkimpy and writes, in workdir: the message file for
    smtp-source -F (LF line ends: smtp-source sends every line followed by CRLF), a copy
    with one body byte changed (for the check), and two qqmx configs, the one measured
    (SPF passes for 127.0.0.1) and the one of the check (SPF fails, so that DMARC passes
    only through DKIM). Returns facts about the message for the JSON."""
    stem, algorithm, selector = SIGNATURES[args.sign]
    key = KEYS_DIR / f"{stem}.key"
    dkim_record = (KEYS_DIR / f"{stem}.dns").read_text().strip()
    message = (
        f"From: <{SENDER}>\r\n"
        f"To: <{RECIPIENT}>\r\n"
        f"Subject: qqmx benchmark, {algorithm}\r\n"
        f"Date: Mon, 02 Jun 2025 09:00:00 +0800\r\n"
        f"Message-ID: <bench.{args.sign}@{HELO_NAME}>\r\n"
        f"\r\n"
        + message_body(args.size)
    )
    cmd = [args.python, str(SIGNER), "--key", str(key), "--algorithm", algorithm,
           "--domain", SIGN_DOMAIN, "--selector", selector]
    try:
        r = subprocess.run(cmd, input=message.encode(), capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"{SIGNER.name} did not run: {e}") from None
    if r.returncode != 0:
        raise BenchError(f"{SIGNER.name} failed (is dkimpy installed for {args.python}?):\n"
                         f"{r.stderr.decode(errors='replace')[-1500:]}")
    signed = r.stdout
    if not signed.startswith(b"DKIM-Signature:") or b"\n." in signed:
        raise BenchError(f"unexpected output of {SIGNER.name}: {signed[:200]!r}")
    # CRLF on the wire, LF in the file: smtp-source -F reads lines and appends CRLF itself
    # (a CRLF file would be sent with CR CR LF line ends).
    wire = signed
    text = signed.replace(b"\r\n", b"\n")
    if b"\r" in text:
        raise BenchError("the signed message has a bare CR")
    message_file = workdir / f"message.{args.sign}.eml"
    message_file.write_bytes(text)
    tampered = workdir / f"message.{args.sign}.tampered.eml"
    body_at = text.index(b"\n\n") + 2
    assert text[body_at + 1 : body_at + 2] == b"X"
    tampered.write_bytes(text[: body_at + 1] + b"Y" + text[body_at + 2 :])

    base = args.qqmx_config.read_text()
    config = workdir / f"qqmx-sign-{args.sign}.toml"
    config.write_text(base + zone_toml(f"v=spf1 ip4:{HOST} -all", dkim_record, selector))
    check_config = workdir / f"qqmx-sign-{args.sign}-check.toml"
    # The SPF failure itself is refused at the end of data by default (auth.spf_reject_others):
    # off in the check, so that only DMARC, and through it DKIM, decides.
    if "[auth]" in base:
        raise BenchError(f"{args.qqmx_config} has an [auth] table; the --sign check adds its own")
    check_config.write_text(base + zone_toml("v=spf1 -all", dkim_record, selector)
                            + '\n[auth]\nspf_reject_others = "off"\n')
    args.message_file = message_file
    args.qqmx_config = config
    args.sign_check_config = check_config
    args.sign_tampered = tampered
    header_end = wire.index(b"\r\n\r\n") + 4
    return {
        "sign": args.sign,
        "algorithm": algorithm,
        "key": str(key.relative_to(REPO)),
        "selector": f"{selector}._domainkey.{SIGN_DOMAIN}",
        "dkim_record": dkim_record,
        # What the server receives between DATA and the final dot (smtp-source adds one
        # empty line before the dot, which DKIM's body canonicalisation ignores).
        "data_bytes": len(wire) + 2,
        "header_bytes": header_end,
        "body_bytes": len(wire) - header_end,
        "message_text": text.decode(),
    }


def source_cmd(args: argparse.Namespace, port: int, sessions: int, messages: int,
               message_file: Path | None, cpu: int | None = None) -> list[str]:
    cmd = [
        "taskset", "-c", str(args.client_cpu if cpu is None else cpu),
        args.smtp_source,
        "-c",  # count completed DATA commands (checked by the caller)
        "-d",  # keep the connection: every session sends many messages
        "-s", str(sessions),
        "-m", str(messages),
    ]
    if message_file is not None:
        cmd += ["-F", str(message_file)]  # this exact message, headers and all
    else:
        cmd += ["-l", str(args.size)]  # smtp-source writes From/To/Date/Message-Id itself
    return cmd + [
        "-M", HELO_NAME,
        "-f", SENDER,
        "-t", RECIPIENT,
        f"inet:{HOST}:{port}",
    ]  # no -L (LMTP) and no -o: plain SMTP with HELO and message headers


def last_count(path: Path) -> int:
    raw = path.read_text(errors="replace").replace("\n", "\r").split("\r")
    counts = [int(x) for x in raw if x.strip().isdigit()]
    return counts[-1] if counts else 0


def check_signed(args: argparse.Namespace, workdir: Path) -> list[str]:
    """Proves, before measuring, that qqmx finds dkim=pass for the message file.

    In the measured zone SPF passes and is aligned, so DMARC would pass (and the message
    be accepted) even with a broken signature. The check runs qqmx with SPF failing
    instead: DMARC can then pass only through an aligned DKIM pass, and its p=reject
    refuses anything else with 550. The file must be accepted SIGN_CHECK_MESSAGES times,
    and a copy with one body byte changed must be refused, which shows the check bites."""
    notes = []
    for message_file, expect_pass in ((args.message_file, True), (args.sign_tampered, False)):
        messages = SIGN_CHECK_MESSAGES if expect_pass else 1
        with Qqmx(args, workdir, args.server_cpu, config=args.sign_check_config) as server:
            out = workdir / f"check.{message_file.name}.out"
            err = workdir / f"check.{message_file.name}.err"
            cmd = source_cmd(args, server.port, 1, messages, message_file)
            with open(out, "wb") as o, open(err, "wb") as e:
                try:
                    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=o, stderr=e,
                                       timeout=args.load_timeout)
                except subprocess.TimeoutExpired:
                    raise BenchError("the DKIM check's smtp-source timed out") from None
            counted = last_count(out)
            stderr_text = err.read_text(errors="replace").strip()
        if expect_pass:
            if r.returncode != 0 or counted != messages:
                raise BenchError(
                    f"qqmx did not accept the {args.sign}-signed message through DKIM alone "
                    f"(smtp-source status {r.returncode}, {counted}/{messages} DATA): "
                    f"the signature does not verify?\n{stderr_text[-1500:]}")
            notes.append(f"DKIM check: {messages}/{messages} accepted with SPF failing "
                         f"(DMARC p=reject passed through DKIM)")
        else:
            if r.returncode == 0 or " 550" not in stderr_text:
                raise BenchError(
                    f"qqmx did not refuse the tampered message with 550 (smtp-source status "
                    f"{r.returncode}): the DKIM check proves nothing\n{stderr_text[-1500:]}")
            notes.append(f"DKIM check: tampered copy refused: {stderr_text.splitlines()[-1][:200]}")
    return notes


# --------------------------------------------------------------------------- one run


def run_load(args: argparse.Namespace, workdir: Path, server_name: str, load: Load, run: int,
             variant: str = "default", setup: str = "split") -> Sample:
    if args.quiet_wait > 0:
        wait_quiet(args)
    # split: smtp-source on the other CPU; same: on the server's CPU, so that every wake-up
    # is a context switch on one core instead of a cross-CPU one.
    source_cpu = args.server_cpu if setup == "same" else args.client_cpu
    with SERVERS[server_name](args, workdir, args.server_cpu) as server:
        tag = f"{variant}.{setup}.{server_name}.{load.name}.{run}"
        counter = workdir / f"source.{tag}.out"
        errors = workdir / f"source.{tag}.err"
        cmd = source_cmd(args, server.port, load.sessions, load.messages, args.message_file,
                         source_cpu)
        pid = server.proc.pid
        u0, s0, f0 = proc_cpu(pid)
        c0 = core_times()
        t0 = time.perf_counter()
        with open(counter, "wb") as out, open(errors, "wb") as err:
            client = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            status, client_cpu = wait_child(client, args.load_timeout)
        finally:
            if client.returncode is None:  # interrupted: stop our smtp-source too
                client.kill()
                client.wait()
        wall = time.perf_counter() - t0
        time.sleep(args.settle)  # the server finishes QUIT and closes the connections
        if server.proc.poll() is not None:
            raise BenchError(
                f"{server_name} exited (status {server.proc.returncode}) during the load:\n"
                f"{tail(server.err)}\nsmtp-source:\n{tail(errors)}"
            )
        u1, s1, f1 = proc_cpu(pid)
        c1 = core_times()
        if status != 0:
            raise BenchError(
                f"smtp-source against {server_name} exited with status {status}:\n{tail(errors)}"
            )
        counted = last_count(counter)
        sample = Sample(
            load=load.name,
            server=server_name,
            run=run,
            messages=load.messages,
            sessions=load.sessions,
            wall_s=wall,
            server_cpu_s=(u1 - u0) + (s1 - s0),
            server_user_s=u1 - u0,
            server_sys_s=s1 - s0,
            client_cpu_s=client_cpu,
            counted=counted,
            variant=variant,
            setup=setup,
            server_minflt=f1 - f0,
        )
        sc, cc = args.server_cpu, args.client_cpu
        # What else ran on the two cores: the server's core minus the server (and
        # smtp-source, when it shares it); the client's core minus smtp-source (this
        # script's own polling is counted as "other" there).
        on_server_core = sample.server_cpu_s + (client_cpu if setup == "same" else 0.0)
        on_client_core = client_cpu if setup == "split" else 0.0
        sample.server_core_other_s = max(0.0, (c1[sc][0] - c0[sc][0]) - on_server_core)
        sample.client_core_other_s = max(0.0, (c1[cc][0] - c0[cc][0]) - on_client_core)
        sample.steal_s = sum(c1[c][1] - c0[c][1] for c in {sc, cc})
        limit = 0.05 * wall
        if sample.server_core_other_s > limit or sample.client_core_other_s > limit or sample.steal_s > limit:
            sample.disturbed = True
            sample.notes.append(
                f"interference: other work {sample.server_core_other_s:.2f}s on the server's CPU, "
                f"{sample.client_core_other_s:.2f}s on the client's, steal {sample.steal_s:.2f}s "
                f"(wall {wall:.2f}s): msgs/s of this run is unreliable"
            )
        if counted != load.messages:
            raise BenchError(
                f"smtp-source counted {counted} completed DATA commands against {server_name}, "
                f"expected {load.messages}:\n{tail(errors)}"
            )
        server.check_after(sample)
        stderr_text = errors.read_text(errors="replace").strip()
        if stderr_text:
            sample.notes.append(f"smtp-source stderr: {stderr_text[:300]}")
        return sample.finish()


# --------------------------------------------------------------------------- report


def summarise(samples: list[Sample], loads: list[str], servers: list[str],
              variants: list[str] | None = None, setups: list[str] | None = None) -> list[dict]:
    rows = []
    groups = [(v, st, l) for v in (variants or ["default"]) for st in (setups or ["split"])
              for l in loads]
    for variant, setup, load in groups:
        per = {}
        for server in servers:
            s = [x for x in samples
                 if x.load == load and x.server == server and x.variant == variant and x.setup == setup]
            if not s:
                continue
            per[server] = {
                "variant": variant,
                "setup": setup,
                "load": load,
                "server": server,
                "runs": len(s),
                "disturbed_runs": sum(x.disturbed for x in s),
                "sessions": s[0].sessions,
                "messages": s[0].messages,
                "msgs_per_s": statistics.median(x.msgs_per_s for x in s),
                "server_cpu_us_per_msg": statistics.median(x.server_cpu_us_per_msg for x in s),
                "server_cpu_us_per_msg_min": min(x.server_cpu_us_per_msg for x in s),
                "server_cpu_us_per_msg_max": max(x.server_cpu_us_per_msg for x in s),
                "server_user_us_per_msg": statistics.median(x.server_user_us_per_msg for x in s),
                "server_sys_us_per_msg": statistics.median(x.server_sys_us_per_msg for x in s),
                "server_minflt_per_msg": statistics.median(x.server_minflt_per_msg for x in s),
                "server_busy": statistics.median(x.server_busy for x in s),
                "client_cpu_us_per_msg": statistics.median(x.client_cpu_us_per_msg for x in s),
                "wall_s": statistics.median(x.wall_s for x in s),
            }
        ratio = None
        if "qqmx" in per and "smtp-sink" in per and per["smtp-sink"]["server_cpu_us_per_msg"] > 0:
            ratio = per["qqmx"]["server_cpu_us_per_msg"] / per["smtp-sink"]["server_cpu_us_per_msg"]
        redis = None
        if "qqmx" in per and "qqmx-redis" in per:
            # Run by run (the two alternate within a run), then the median: drift between
            # runs moves both servers of a run alike.
            by_run = {x.run: x.server_cpu_us_per_msg for x in samples
                      if x.load == load and x.server == "qqmx" and x.variant == variant and x.setup == setup}
            pairs = [x.server_cpu_us_per_msg / by_run[x.run] for x in samples
                     if x.load == load and x.server == "qqmx-redis" and x.variant == variant
                     and x.setup == setup and by_run.get(x.run)]
            if pairs:
                redis = {"median": statistics.median(pairs), "runs": pairs}
        for server in servers:
            if server in per:
                per[server]["cpu_ratio_qqmx_over_sink"] = ratio
                if server == "qqmx-redis":
                    per[server]["cpu_ratio_redis_over_memory"] = redis
                rows.append(per[server])
    return rows


def markdown(rows: list[dict], runs: int, title: str = "") -> str:
    out = [title, ""] if title else []
    out += [
        f"| variant | setup | load | server | msgs/s (median) | server CPU µs/msg (median) | min–max | "
        f"user µs/msg | system µs/msg | page faults/msg | server core busy | client CPU µs/msg | "
        f"CPU/msg qqmx ÷ smtp-sink | runs (disturbed) |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = r["cpu_ratio_qqmx_over_sink"]
        out.append(
            "| {variant} | {setup} | {load} | {server} | {mps:,.0f} | {cpu:.1f} | {lo:.1f}–{hi:.1f} | "
            "{user:.1f} | {sys:.1f} | {flt:.2f} | {busy:.0%} | {cli:.1f} | {ratio} | {runs} ({dist}) |".format(
                variant=r["variant"],
                setup=r["setup"],
                sys=r["server_sys_us_per_msg"],
                flt=r["server_minflt_per_msg"],
                runs=r["runs"],
                dist=r["disturbed_runs"],
                load=f"{r['load']} ({r['sessions']} conn, {r['messages']:,} msgs)",
                server=r["server"],
                mps=r["msgs_per_s"],
                cpu=r["server_cpu_us_per_msg"],
                user=r["server_user_us_per_msg"],
                lo=r["server_cpu_us_per_msg_min"],
                hi=r["server_cpu_us_per_msg_max"],
                busy=r["server_busy"],
                cli=r["client_cpu_us_per_msg"],
                ratio=("—" if ratio is None else f"{ratio:.2f}×") if r["server"] == "qqmx" else "",
            )
        )
    for r in rows:
        redis = r.get("cpu_ratio_redis_over_memory")
        if redis:
            out.append("")
            out.append(
                f"qqmx-redis ÷ qqmx, server CPU per message, {r['variant']} {r['setup']} {r['load']}: "
                f"{redis['median']:.2f}× (median of the runs' ratios: "
                + ", ".join(f"{x:.2f}" for x in redis["runs"]) + ")"
            )
    out.append("")
    out.append(f"Medians of {runs} run(s) per row; a fresh server process for every run.")
    if any(r["disturbed_runs"] for r in rows):
        out.append(
            "Disturbed runs had other work on the benchmark's CPUs (see the log or the JSON); "
            "their msgs/s is not meaningful and their CPU/msg is inflated by cache sharing."
        )
    return "\n".join(out)


def git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=30
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def environment(args: argparse.Namespace) -> dict:
    def first(cmd: list[str]) -> str:
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            return (r.stdout or r.stderr).strip().splitlines()[0]
        except (OSError, subprocess.TimeoutExpired, IndexError):
            return ""

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--", "src", "Cargo.toml", "Cargo.lock")),
        "kernel": platform.release(),
        "cpu_model": cpu_model,
        "cpus": os.cpu_count(),
        "loadavg_before": Path("/proc/loadavg").read_text().split()[:3],
        "postfix_version": first(["postconf", "-dh", "mail_version"]),
        "rustc": first(["rustc", "--version"]),
        "clk_tck": CLK_TCK,
    }


# --------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Server CPU time per message: qqmx vs Postfix smtp-sink, driven by smtp-source.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--runs", type=int, default=5, help="repetitions of every (server, load) pair")
    p.add_argument("--loads", default="serial,parallel", help=f"comma-separated, from {sorted(LOADS)}")
    p.add_argument("--servers", default="qqmx,smtp-sink", help="comma-separated, from qqmx,smtp-sink")
    p.add_argument("--size", type=int, default=1024, help="message payload bytes (smtp-source -l)")
    p.add_argument("--sign", choices=sorted(SIGNATURES),
                   help="send one DKIM-signed message (dkimpy, tests/keys) with smtp-source -F to "
                        "both servers, qqmx verifying SPF, DKIM and DMARC against a zone of example.org")
    p.add_argument("--variants", default=None,
                   help=f"comma-separated, from {list(VARIANTS)}, or 'all': what qqmx runs with "
                        "(default: default, or the one --sign names); each against smtp-sink")
    p.add_argument("--setups", default="split,same",
                   help="comma-separated, from split (smtp-source on --client-cpu) and same "
                        "(smtp-source on the server's CPU)")
    p.add_argument("--no-alloc", action="store_true",
                   help="skip the allocation count (cargo test --release --test alloc)")
    p.add_argument("--python", default=sys.executable,
                   help="Python with dkimpy, for tests/clients/dkim_sign.py (--sign)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every load's message count (e.g. 0.1 for a smoke test)")
    p.add_argument("--server-cpu", type=int, default=1, help="CPU the server is pinned to")
    p.add_argument("--client-cpu", type=int, default=0, help="CPU smtp-source (and this script) run on")
    p.add_argument("--no-build", action="store_true", help="use target/release/qqmx as it is")
    p.add_argument("--qqmx", type=Path, default=QQMX_BIN, help="qqmx binary")
    p.add_argument("--qqmx-config", type=Path, default=QQMX_CONFIG, help="qqmx config (limits off)")
    p.add_argument("--qqmx-log", default="info", help="QQMX_LOG filter for the server")
    p.add_argument("--state", metavar="URL",
                   help="keep qqmx's policy state in this Redis (qqmx serve --state URL), "
                        "under a fresh key prefix for every server started")
    p.add_argument("--redis", metavar="URL",
                   help="the Redis of the qqmx-redis server (--servers qqmx,qqmx-redis): qqmx with "
                        "--state URL, run alternately with qqmx, for their ratio")
    p.add_argument("--smtp-source", default=shutil.which("smtp-source") or "/usr/sbin/smtp-source",
                   help="Postfix smtp-source (the load generator)")
    p.add_argument("--smtp-sink", default=shutil.which("smtp-sink") or "/usr/sbin/smtp-sink",
                   help="Postfix smtp-sink (the reference server)")
    p.add_argument("--sink-user", default="nobody", help="smtp-sink -u when run as root")
    p.add_argument("--build-timeout", type=float, default=1800, help="seconds for cargo build")
    p.add_argument("--start-timeout", type=float, default=30, help="seconds for a server to listen")
    p.add_argument("--load-timeout", type=float, default=300, help="seconds for one smtp-source run")
    p.add_argument("--settle", type=float, default=0.2,
                   help="seconds of idle before and after each load")
    p.add_argument("--quiet-wait", type=float, default=60,
                   help="seconds to wait, before each run, for both CPUs to be idle (0: don't)")
    p.add_argument("--quiet-threshold", type=float, default=0.10,
                   help="busy fraction of a core over one second that counts as idle")
    p.add_argument("--output", type=Path, default=RESULTS_DIR / "latest.json", help="JSON results")
    p.add_argument("--keep-logs", action="store_true", help="keep server and client logs (path printed)")
    args = p.parse_args(argv)
    args.loads = [x.strip() for x in args.loads.split(",") if x.strip()]
    args.servers = [x.strip() for x in args.servers.split(",") if x.strip()]
    for x in args.loads:
        if x not in LOADS:
            p.error(f"unknown load {x!r}")
    for x in args.servers:
        if x not in SERVERS:
            p.error(f"unknown server {x!r}")
    if "qqmx-redis" in args.servers and not args.redis:
        p.error("the qqmx-redis server needs --redis URL")
    if args.runs < 1:
        p.error("--runs must be at least 1")
    if args.variants is None:
        args.variants = args.sign or "default"
    if args.variants == "all":
        args.variants = ",".join(VARIANTS)
    args.variants = [x.strip() for x in args.variants.split(",") if x.strip()]
    args.setups = [x.strip() for x in args.setups.split(",") if x.strip()]
    for x in args.variants:
        if x not in VARIANTS:
            p.error(f"unknown variant {x!r}")
    for x in args.setups:
        if x not in SETUPS:
            p.error(f"unknown setup {x!r}")
    if args.sign and args.variants != [args.sign]:
        p.error("--sign names one variant; use --variants for several")
    if any(VARIANTS[v][1] for v in args.variants) and args.size < 80:
        p.error("a signed variant needs --size of at least 80")
    args.base_config = args.qqmx_config
    args.message_file = None  # set by prepare_signed for --sign
    return args


def preflight(args: argparse.Namespace) -> None:
    if not sys.platform.startswith("linux"):
        raise BenchError("Linux only (/proc and taskset)")
    for tool in ("taskset", args.smtp_source, args.smtp_sink):
        if not shutil.which(tool) and not Path(tool).is_file():
            raise BenchError(f"{tool} not found (apt-get install postfix / util-linux)")
    cpus = os.sched_getaffinity(0)
    for cpu in (args.server_cpu, args.client_cpu):
        if cpu not in cpus:
            raise BenchError(f"CPU {cpu} is not available (have {sorted(cpus)})")
    if args.server_cpu == args.client_cpu:
        log("warning: server and client share one CPU; CPU/msg stays valid, msgs/s does not")


def build(args: argparse.Namespace) -> None:
    if args.no_build:
        return
    cmd = ["cargo", "build", "--release", "--features", "cli"]
    log(f"$ {' '.join(cmd)}")
    try:
        subprocess.run(cmd, cwd=REPO, check=True, timeout=args.build_timeout)
    except subprocess.CalledProcessError as e:
        raise BenchError(f"cargo build failed with status {e.returncode}") from None
    except subprocess.TimeoutExpired:
        raise BenchError(f"cargo build took more than {args.build_timeout:.0f}s") from None


def allocations(args: argparse.Namespace) -> dict | None:
    """Allocations and event memory per message in qqmx's steady state, from the
    allocation-counting test (tests/alloc.rs: one connection, many 1 KB messages, the
    default config without limits). An external process's allocations cannot be counted
    from here; the test counts qqmx's own, in process, deterministically."""
    if args.no_alloc:
        return None
    cmd = ["cargo", "test", "--release", "--features", "cli", "--test", "alloc", "--", "--nocapture"]
    log(f"$ {' '.join(cmd)}")
    try:
        r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True,
                           timeout=args.build_timeout)
    except (OSError, subprocess.TimeoutExpired) as e:
        log(f"warning: the allocation count did not run: {e}")
        return None
    line = next((l for l in r.stdout.splitlines() if l.startswith("steady state:")), None)
    if r.returncode != 0 or line is None:
        log(f"warning: the allocation count failed:\n{(r.stdout + r.stderr)[-1500:]}")
        return None
    # "steady state: 83 allocations per message, 2 per NOOP; 14.0 events and 3196 event
    # bytes per message (228 per event)"
    words = line.replace(",", " ").replace(";", " ").replace("(", " ").split()
    numbers = [float(w) for w in words if w.replace(".", "", 1).isdigit()]
    keys = ["allocations_per_message", "allocations_per_noop", "events_per_message",
            "event_bytes_per_message", "event_bytes_per_event"]
    result = dict(zip(keys, numbers))
    result["line"] = line
    log(line)
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the servers started here are stopped.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.default_int_handler)
    try:
        preflight(args)
        build(args)
        qqmx_runs = any(x.startswith("qqmx") for x in args.servers)
        if qqmx_runs and not args.qqmx.is_file():
            raise BenchError(f"{args.qqmx} does not exist")
        env = environment(args)
        # Keep this script off the server's CPU.
        os.sched_setaffinity(0, {args.client_cpu})
        loads = [Load(l.name, l.sessions, max(l.sessions, round(l.messages * args.scale)), l.description)
                 for l in (LOADS[n] for n in args.loads)]
        samples: list[Sample] = []
        workdir = Path(tempfile.mkdtemp(prefix="qqmx-bench-"))
        alloc = allocations(args) if qqmx_runs else None
        signed_by_variant: dict[str, dict] = {}
        configs: dict[str, str | None] = {}
        if qqmx_runs:
            # Run a private copy: a `cargo build` elsewhere cannot swap the binary mid-run.
            copy = workdir / "qqmx"
            shutil.copy2(args.qqmx, copy)
            env["qqmx_binary"] = str(args.qqmx)
            env["qqmx_sha256"] = hashlib.sha256(copy.read_bytes()).hexdigest()
            args.qqmx = copy
        total = args.runs * len(loads) * len(args.servers) * len(args.variants) * len(args.setups)
        done = 0
        started = time.monotonic()
        try:
            for variant in args.variants:
                config, sign = VARIANTS[variant]
                args.qqmx_config = config or args.base_config
                args.sign = sign
                args.message_file = None
                if sign:
                    signed = prepare_signed(args, workdir)
                    log(f"signed message ({signed['algorithm']}, {signed['data_bytes']} bytes of DATA, "
                        f"headers {signed['header_bytes']}): {args.message_file}")
                    if qqmx_runs:
                        signed["check"] = check_signed(args, workdir)
                        for note in signed["check"]:
                            log(note)
                    signed_by_variant[variant] = signed
                configs[variant] = args.qqmx_config.read_text() if qqmx_runs else None
                for setup in args.setups:
                    for run in range(1, args.runs + 1):
                        for load in loads:
                            # Alternate which server goes first, so drift affects both alike.
                            order = args.servers if run % 2 else list(reversed(args.servers))
                            for server in order:
                                done += 1
                                s = run_load(args, workdir, server, load, run, variant, setup)
                                samples.append(s)
                                log(
                                    f"[{done}/{total}] {variant} {setup} run {run} {load.name:8} {server:9} "
                                    f"{s.msgs_per_s:8,.0f} msg/s  server {s.server_cpu_us_per_msg:6.1f} µs/msg "
                                    f"(user {s.server_user_s:.2f}s sys {s.server_sys_s:.2f}s, "
                                    f"{s.server_minflt_per_msg:.2f} faults/msg, busy {s.server_busy:.0%})  "
                                    f"client {s.client_cpu_us_per_msg:5.1f} µs/msg"
                                    + ("".join(f"\n    note: {n}" for n in s.notes))
                                )
        finally:
            if args.keep_logs:
                log(f"logs kept in {workdir}")
            else:
                shutil.rmtree(workdir, ignore_errors=True)
        rows = summarise(samples, [l.name for l in loads], args.servers, args.variants, args.setups)
        if args.base_config.resolve() != QQMX_CONFIG.resolve():
            # The default variant ran with the config of --qqmx-config: say which.
            for r in rows:
                if r["variant"] == "default":
                    r["variant"] = f"default ({args.base_config.name})"
        titles = []
        for variant, signed in signed_by_variant.items():
            titles.append(f"{variant}: one {signed['algorithm']}-signed message of {signed['data_bytes']} "
                          f"bytes (smtp-source -F), qqmx verifying SPF, DKIM and DMARC (p=reject).")
        if "rules" in args.variants:
            titles.append("rules: bench/qqmx-rules.toml, every policy rule on.")
        table = markdown(rows, args.runs, "\n".join(titles))
        if alloc is not None:
            table += (f"\n\nqqmx in process (tests/alloc.rs, default config without limits): "
                      f"{alloc['allocations_per_message']:.0f} allocations per message, "
                      f"{alloc['allocations_per_noop']:.0f} per NOOP; "
                      f"{alloc['events_per_message']:.1f} events and "
                      f"{alloc['event_bytes_per_message']:.0f} bytes of events per message.")
        print(table)
        result = {
            "description": "server CPU time (utime+stime) per message, qqmx vs Postfix smtp-sink, "
                           "driven by smtp-source over loopback",
            "environment": env,
            "parameters": {
                "runs": args.runs,
                "size_bytes": args.size,
                "server_cpu": args.server_cpu,
                "client_cpu": args.client_cpu,
                "sender": SENDER,
                "recipient": RECIPIENT,
                "helo": HELO_NAME,
                "variants": args.variants,
                "setups": args.setups,
                "qqmx_config": str(args.base_config),
                "qqmx_config_text": configs,
                "sign": signed_by_variant or None,
                "qqmx_log": args.qqmx_log,
                "state": args.state,
                "redis": args.redis,
                "loads": [asdict(l) for l in loads],
                "elapsed_s": round(time.monotonic() - started, 1),
            },
            "summary": rows,
            "allocations": alloc,
            "table_markdown": table,
            "samples": [asdict(s) for s in samples],
        }
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
        log(f"wrote {args.output}")
        return 0
    except BenchError as e:
        log(f"smtp_bench: error: {e}")
        return 1
    except KeyboardInterrupt:
        log("smtp_bench: interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
