"""What both reference senders share: the environment `qqmx run` gives them, the
scenario's [workload], virtual time, message building and one SMTP delivery attempt.

Standard library only, plus dkimpy (`import dkim`) when the workload signs.
"""
import datetime
import email.utils
import json
import os
import smtplib
import socket
import sys
import time
import tomllib
import urllib.request

SPEED = float(os.environ.get("QQMX_CLOCK_SPEED", "1"))
BUDGET = float(os.environ.get("QQMX_SENDER_BUDGET", "60"))
DEBUG = bool(os.environ.get("QQMX_SENDER_DEBUG"))
SCENARIO = os.environ["QQMX_SCENARIO"]
HOSTS = []
for item in os.environ["QQMX_SMTP_ADDRS"].split(","):
    name, addr = item.split("=", 1)
    host, port = addr.rsplit(":", 1)
    HOSTS.append((name, host, int(port)))

with open(SCENARIO, "rb") as f:
    SCENARIO_DATA = tomllib.load(f)
WORKLOAD = {
    "messages": 10,
    "per_minute": 10,
    "from": "news@example.org",
    "recipients": [],
    "recipient_count": 10,
    "body": "Hello from a qqmx scenario.",
    "dkim_key": None,
    "dkim_selector": None,
}
WORKLOAD.update(SCENARIO_DATA.get("workload", {}))
RECIPIENTS = WORKLOAD["recipients"] or [
    "%d@qq.com" % (10001 + i) for i in range(WORKLOAD["recipient_count"])
]

def _server_now():
    """The server's virtual time, from the control API (a sender under a virtual clock
    has no other way to know the date)."""
    try:
        with urllib.request.urlopen(os.environ["QQMX_API_URL"] + "/api/v1/clock", timeout=5) as r:
            now = json.load(r)["now"]
        return datetime.datetime.fromisoformat(now.replace("Z", "+00:00")).timestamp()
    except (OSError, KeyError, ValueError):
        return time.time()


def _read_clock():
    """(real instant, virtual time) of one reading of the server's clock; the real
    instant is the start of the request. The server answered later than that, so the
    estimate it gives is never behind the server's clock."""
    before = time.monotonic()
    return before, _server_now()


_STARTED = time.monotonic()
_REAL_START, VIRTUAL_START = _read_clock()


def sync():
    """Reads the server's virtual time again, so that small real delays, multiplied by
    the clock's speed, do not add up; returns the reading, which the server's clock has
    certainly reached.

    Every estimate is ahead of the server by the time its request took to reach the
    server; the estimate kept is the smaller, so that the error never grows. A wait
    measured by `vnow` is then never shorter on the server's clock, however slow the
    machine and whatever the readings in between (a retry "5 minutes later" is at
    least 5 minutes later for the server too)."""
    global VIRTUAL_START, _REAL_START
    before, now = _read_clock()
    if now < VIRTUAL_START + (before - _REAL_START) * SPEED:
        _REAL_START, VIRTUAL_START = before, now
    return now


def vnow():
    """Virtual seconds since the Unix epoch."""
    return VIRTUAL_START + (time.monotonic() - _REAL_START) * SPEED


def vsleep(seconds):
    """Waits `seconds` of virtual time."""
    if seconds > 0:
        time.sleep(seconds / SPEED)


def out_of_budget():
    return time.monotonic() - _STARTED > BUDGET


def cst_day(t):
    """The China Standard Time day number of virtual time `t`."""
    return int((t + 8 * 3600) // 86400)


def message(i, rcpt, sender=None, sign=True, personal=False):
    """Message `i` to `rcpt`; `personal` greets the recipient by address, so that no two
    recipients get the same body."""
    sender = sender or WORKLOAD["from"]
    domain = sender.rsplit("@", 1)[1]
    body = WORKLOAD["body"]
    if personal:
        body = "Dear %s,\r\n\r\n%s" % (rcpt, body)
    text = (
        "From: <%s>\r\nTo: <%s>\r\nSubject: scenario message %d\r\nDate: %s\r\n"
        "Message-ID: <%d.%d@%s>\r\n\r\n%s\r\n"
        % (sender, rcpt, i, email.utils.formatdate(vnow()), i, os.getpid(), domain, body)
    ).encode()
    key, selector = WORKLOAD["dkim_key"], WORKLOAD["dkim_selector"]
    if sign and key and selector:
        import dkim

        path = os.path.join(os.path.dirname(SCENARIO), key)
        with open(path, "rb") as f:
            secret = f.read().strip()
        algorithm = b"rsa-sha256" if secret.startswith(b"-----") else b"ed25519-sha256"
        text = dkim.sign(
            text,
            selector.encode(),
            domain.encode(),
            secret,
            include_headers=[b"from", b"to", b"subject", b"date", b"message-id"],
            signature_algorithm=algorithm,
        ) + text
    return text


class Dropped(Exception):
    """The connection failed, or closed without a reply. `stage` is the command that went
    unanswered: "connect" (refused, or closed before the greeting), "ehlo", "mail",
    "rcpt", "data" or "end_of_data"."""

    def __init__(self, stage, why):
        super().__init__("%s: %s" % (stage, why))
        self.stage = stage

    @property
    def in_transaction(self):
        """Whether the transaction had begun (MAIL FROM was sent): the host was up, so
        the message is retried later rather than at once on another host."""
        return self.stage not in ("connect", "ehlo")


class _SMTP(smtplib.SMTP):
    def _get_socket(self, host, port, timeout):
        sock = super()._get_socket(host, port, timeout)
        # A port nobody listens on can be handed out as the local end of this very
        # connection, which then connects to itself (TCP simultaneous open) and waits
        # for a greeting that never comes: that is a refused connection.
        if sock.getsockname() == sock.getpeername():
            sock.close()
            raise ConnectionRefusedError("nothing listens on %s:%s" % (host, port))
        return sock


def debug(text):
    """One line on standard error when QQMX_SENDER_DEBUG is set, stamped with the
    virtual time."""
    if DEBUG:
        stamp = datetime.datetime.fromtimestamp(vnow(), datetime.timezone.utc)
        print("%s %s" % (stamp.strftime("%m-%dT%H:%M:%SZ"), text), file=sys.stderr)


def attempt(host, port, sender, rcpt, data, timeout=10):
    """One transaction. Returns (code, text, stage) of the reply that ended it: the end
    of data on success, or the first refusal and the stage it came at. Raises Dropped
    when a command got no reply."""
    stage = "connect"
    s = _SMTP(timeout=timeout)
    try:
        code, text = s.connect(host, port)
        if code != 220:
            s.close()
            return code, text.decode(errors="replace"), stage
        steps = (
            ("ehlo", "EHLO sender.example.org"),
            ("mail", "MAIL FROM:<%s>" % sender),
            ("rcpt", "RCPT TO:<%s>" % rcpt),
            ("data", "DATA"),
        )
        for stage, command in steps:
            code, text = s.docmd(command)
            if code >= 400:
                try:
                    s.quit()
                except (smtplib.SMTPException, OSError):
                    pass
                return code, text.decode(errors="replace"), stage
        stage = "end_of_data"
        s.send(data.replace(b"\r\n.", b"\r\n..") + b"\r\n.\r\n")
        code, text = s.getreply()
        try:
            s.quit()
        except (smtplib.SMTPException, OSError):
            pass
        return code, text.decode(errors="replace"), stage
    except (OSError, smtplib.SMTPException) as e:
        s.close()
        raise Dropped(stage, e) from e
