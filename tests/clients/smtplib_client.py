"""Delivers to qqmx with Python's smtplib and prints what the server answered as JSON.

Usage: smtplib_client.py HOST PORT MODE, where MODE is one of
  deliver   EHLO, MAIL, RCPT, DATA, QUIT in plain text
  starttls  the same after STARTTLS (the certificate is self-signed, so not verified)
  unknown   a delivery to one known and one unknown QQ address
"""

import json
import smtplib
import ssl
import sys

MESSAGE = b"From: sender@example.org\r\nTo: 10001@qq.com\r\nSubject: from smtplib\r\n\r\nHello from Python.\r\n"


def main() -> int:
    host, port, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    out = {}
    with smtplib.SMTP(host, port, local_hostname="python.example.org", timeout=10) as smtp:
        out["banner"] = smtp.ehlo_resp.decode() if smtp.ehlo_resp else None
        code, text = smtp.ehlo()
        out["ehlo"] = [code, text.decode()]
        if mode == "starttls":
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            code, text = smtp.starttls(context=context)
            out["starttls"] = [code, text.decode()]
            code, text = smtp.ehlo()
            out["ehlo_tls"] = [code, text.decode()]
        recipients = ["10001@qq.com"]
        if mode == "unknown":
            recipients.append("nobody@qq.com")
        refused = smtp.sendmail("sender@example.org", recipients, MESSAGE)
        out["refused"] = {rcpt: [code, text.decode()] for rcpt, (code, text) in refused.items()}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
