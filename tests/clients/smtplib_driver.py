"""Sends batches of messages to qqmx with Python's smtplib, one batch per stdin line.

Usage: smtplib_driver.py HOST PORT
Each input line is JSON: {"source": "127.0.0.2", "count": 50, "first": 10000}
It sends `count` messages over one connection from `source`, each to a different QQ
number starting at `first`, each with its own body, and prints one JSON line:
{"accepted": N, "refused": [[code, text], ...]}.
"""

import json
import smtplib
import sys


def batch(host: str, port: int, source: str, count: int, first: int) -> dict:
    accepted, refused = 0, []
    try:
        smtp = smtplib.SMTP(host, port, local_hostname="mailer.example.org",
                            source_address=(source, 0), timeout=30)
    except smtplib.SMTPConnectError as e:
        # Refused instead of greeted: every message of the batch is refused with it.
        return {"accepted": 0, "refused": [[e.smtp_code, e.smtp_error.decode()]] * count}
    with smtp:
        for n in range(first, first + count):
            rcpt = f"{n}@qq.com"
            body = f"From: shop@example.org\r\nTo: {rcpt}\r\nSubject: Order {n}\r\n\r\nYour order {n} has shipped.\r\n"
            try:
                smtp.sendmail("shop@example.org", [rcpt], body.encode())
                accepted += 1
            except smtplib.SMTPResponseException as e:
                refused.append([e.smtp_code, e.smtp_error.decode()])
            except smtplib.SMTPRecipientsRefused as e:
                for code, text in e.recipients.values():
                    refused.append([code, text.decode()])
    return {"accepted": accepted, "refused": refused}


def main() -> int:
    host, port = sys.argv[1], int(sys.argv[2])
    for line in sys.stdin:
        plan = json.loads(line)
        print(json.dumps(batch(host, port, plan["source"], plan["count"], plan["first"])), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
