#!/usr/bin/env python3
"""A non-Rust user's test against a qqmx sidecar: Python's smtplib for mail, the HTTP
control API for everything else. Standard library only.

    QQMX_SMTP_ADDR=127.0.0.1:2525 QQMX_API_URL=http://127.0.0.1:8025 \
        python3 examples/python/test_sender.py

Set QQMX_API_TOKEN when the sidecar has one. Start the sidecar with a manual clock
(`qqmx serve --clock manual`) so the test can move time.
"""
import json
import os
import smtplib
import sys
import unittest
import urllib.error
import urllib.request

SMTP_HOST, SMTP_PORT = os.environ.get("QQMX_SMTP_ADDR", "127.0.0.1:2525").rsplit(":", 1)
API = os.environ.get("QQMX_API_URL", "http://127.0.0.1:8025").rstrip("/")
TOKEN = os.environ.get("QQMX_API_TOKEN")


def api(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(API + path, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    if TOKEN:
        request.add_header("Authorization", "Bearer " + TOKEN)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)
    except urllib.error.HTTPError as e:
        raise AssertionError("%s %s: %s %s" % (method, path, e.code, e.read().decode())) from None


def send(to, subject="Hello", sender="news@example.org"):
    """What the code under test would do: deliver one message to QQ's MX."""
    with smtplib.SMTP(SMTP_HOST, int(SMTP_PORT), timeout=10) as smtp:
        smtp.sendmail(sender, [to], "From: %s\r\nTo: %s\r\nSubject: %s\r\n\r\nHi!\r\n" % (sender, to, subject))


class QQDelivery(unittest.TestCase):
    def setUp(self):
        api("POST", "/api/v1/reset")

    def test_a_message_arrives_with_qq_headers(self):
        send("10001@qq.com", subject="Welcome")
        found = api("GET", "/api/v1/messages?to=10001@qq.com")
        self.assertEqual(found["total"], 1)
        message = api("GET", "/api/v1/message/%d" % found["messages"][0]["id"])
        self.assertEqual(message["subject"], "Welcome")
        names = [name for name, _ in message["headers"]]
        self.assertIn("X-QQ-mid", names)
        self.assertEqual(message["auth"]["spf"]["result"], "none")

    def test_an_unknown_mailbox_is_refused_as_qq_does(self):
        with self.assertRaises(smtplib.SMTPRecipientsRefused) as refused:
            send("nobody@qq.com")
        code, text = refused.exception.recipients["nobody@qq.com"]
        self.assertEqual(code, 550)
        self.assertTrue(text.decode().startswith("Mailbox not found."), text)

    def test_a_blacklisted_ip_is_told_ip_frequency_limited_until_lifted(self):
        # Our address as qqmx sees it: 127.0.0.1 on one host, another address when qqmx
        # runs in a container (a CI service, docker compose).
        send("10001@qq.com")
        ip = api("GET", "/api/v1/messages")["messages"][0]["client"].rsplit(":", 1)[0].strip("[]")
        api("POST", "/api/v1/blacklist", {"ip": ip, "for": "1h"})

        with self.assertRaises(smtplib.SMTPDataError) as refused:
            send("10001@qq.com")
        self.assertEqual(refused.exception.smtp_code, 550)
        self.assertIn(b"Ip frequency limited", refused.exception.smtp_error)
        replies = api("GET", "/api/v1/events?type=reply")["events"]
        self.assertTrue(any("Ip frequency limited" in e["text"] for e in replies))
        why = api("GET", "/api/v1/explain?ip=" + ip)
        self.assertEqual(why["rule"], "blacklist.ip")

        # An hour later, by the server's clock, the listing is over.
        api("POST", "/api/v1/clock/advance", {"by": "61m"})
        send("10001@qq.com")
        self.assertEqual(api("GET", "/api/v1/messages")["total"], 2)


if __name__ == "__main__":
    result = unittest.main(exit=False, verbosity=2).result
    sys.exit(0 if result.wasSuccessful() else 1)
