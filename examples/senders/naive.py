#!/usr/bin/env python3
"""A naive sender: everything at once, to mx1 only.

It sends the whole workload as fast as it can over mx1, retries any failure at once (up
to three times), keeps addresses that were `Mailbox not found`, never signs, and when a
scenario's workload has `naive_from` it forges that sender (a qq.com address, say).
"""
import sys

from workload import HOSTS, RECIPIENTS, WORKLOAD, Dropped, attempt, message, out_of_budget

def main():
    # mx1 by name: QQMX_SMTP_ADDRS lists the hosts in preference order (mx3 first).
    _, host, port = next((h for h in HOSTS if h[0] == "mx1"), HOSTS[0])
    sender = WORKLOAD.get("naive_from", WORKLOAD["from"])
    sent = failed = retried = 0
    for i in range(WORKLOAD["messages"]):
        if out_of_budget():
            break
        rcpt = RECIPIENTS[i % len(RECIPIENTS)]
        for tries in range(4):
            try:
                code, _, _ = attempt(host, port, sender, rcpt, message(i, rcpt, sender, sign=False), timeout=5)
            except Dropped:
                code = None
            if code is not None and code < 400:
                sent += 1
                break
            if tries < 3:
                retried += 1
        else:
            failed += 1
    print("naive: sent %d, failed %d, retried %d" % (sent, failed, retried))


if __name__ == "__main__":
    sys.exit(main())
