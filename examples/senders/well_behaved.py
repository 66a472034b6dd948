#!/usr/bin/env python3
"""A well-behaved sender, as Tencent asks senders to be.

- Paces itself to the workload's `per_minute` and warms a new IP up: it never sends more
  in a China Standard Time day than the warm-up plan allows (a third-party deliverability
  guide's ramp for QQ, 50 a day on days 1-3, about 150 on days 4-7, about 300 in week
  two; a scenario that scales the plan down says so in [config.reputation], which stands for the operator's plan). When
  the plan holds it back, it sends only between 02:00 and 12:00 CST, so that it and the
  server always agree on the day a message counts for.
- One message per transaction, greeting each recipient by name (no two bodies alike);
  it signs with DKIM when the workload has a key.
- A host that refuses the connection, or drops it (or answers 4xx) before the
  transaction begins, is skipped: the next MX host is tried at once.
- A 4xx reply, a connection dropped during the transaction, or no host answering: the
  message is retried later, backing off from 5 virtual minutes (doubling, at most an
  hour); after a drop the retry starts at the next MX host.
- A 550 that means "you are sending too much" (`Ip / Connection / Sender / Domain
  frequency limited`, `Connection denied`, `Suspected spam ip`) pauses the whole queue,
  backing off from 10 virtual minutes (doubling, but never past the start of the next
  CST day, when day tiers reset), then the message is retried. `Mailbox unavailable or
  access denied` (one recipient got too much) pauses that recipient only, as QQ holds
  off that mailbox and not the IP: from 10 minutes, doubling, at most a day.
- `Mailbox not found`: the address is dropped for good, with every message queued for
  it. Other 5xx: the message is dropped.

It stops when every message is delivered or has failed for good, or when the real-time
budget (QQMX_SENDER_BUDGET, default 60 s) runs out, and prints one summary line.
"""
import heapq
import sys

from workload import (
    HOSTS, RECIPIENTS, SCENARIO_DATA, WORKLOAD, Dropped, attempt, cst_day, debug, message,
    out_of_budget, sync, vnow, vsleep,
)

BLOCKS = (
    "Ip frequency limited",
    "Connection frequency limited",
    "Sender frequency limited",
    "Domain frequency limited",
    "Connection denied",
    "Suspected spam ip",
)
RECIPIENT_BLOCK = "Mailbox unavailable or access denied"
UNKNOWN = "Mailbox not found"
MINUTE, HOUR, DAY = 60, 3600, 86400
CST = 8 * HOUR
# While the warm-up plan holds it back, messages go out only in this part of the CST
# day: far from midnight, so that a slow transaction cannot make the server count a
# message for another day than the sender did (twelve virtual hours: 0.4 real seconds
# even at 100,000x).
WINDOW = (2 * HOUR, 12 * HOUR)


def warmup_plan():
    """The daily allowance by day of the IP's age (1 = its first day), or None."""
    reputation = SCENARIO_DATA.get("config", {}).get("reputation", {})
    if not reputation.get("warmup", True):
        return None
    steps = reputation.get(
        "warmup_schedule",
        [{"until_day": 3, "daily": 50}, {"until_day": 7, "daily": 150}, {"until_day": 14, "daily": 300}],
    )
    growth = reputation.get("warmup_growth_per_day", 25)

    def allowance(day):
        for step in steps:
            if day <= step["until_day"]:
                return step["daily"]
        last = steps[-1]
        return last["daily"] + (day - last["until_day"]) * growth

    return allowance


def window_start(day):
    """Virtual time at which the sending window of CST day `day` opens."""
    return day * DAY - CST + WINDOW[0]


class Sender:
    def __init__(self):
        self.allowance = warmup_plan()
        self.first_day = None  # the CST day of the first attempt: day 1 of the IP
        self.today, self.sent_today = None, 0
        self.gap = MINUTE / max(WORKLOAD["per_minute"], 1)
        # (when, seq, index, recipient, tries, first MX host to try)
        self.queue = [
            (0.0, i, i, RECIPIENTS[i % len(RECIPIENTS)], 0, 0) for i in range(WORKLOAD["messages"])
        ]
        heapq.heapify(self.queue)
        self.seq = len(self.queue)
        self.dead = set()
        self.paused_until, self.pause = 0.0, 10 * MINUTE
        self.rcpt_paused, self.rcpt_pause = {}, {}
        self.sent = self.failed = self.retried = 0

    def later(self, when, i, rcpt, tries, mx=0):
        self.seq += 1
        heapq.heappush(self.queue, (when, self.seq, i, rcpt, tries, mx))

    def held_back(self):
        """When the warm-up plan forbids sending now: the virtual time to wait for;
        otherwise None."""
        if not self.allowance:
            return None
        # The reading, not the estimate: the server's clock has certainly reached it, so
        # the day and the window have certainly begun for the server too.
        now = sync()
        day = cst_day(now)
        if day != self.today:
            self.today, self.sent_today = day, 0
        age = day - (self.first_day if self.first_day is not None else day) + 1
        cap = self.allowance(age)
        waiting = 1 + sum(1 for q in self.queue if q[3] not in self.dead)
        if self.sent_today + waiting <= cap:
            # Everything left fits in today's allowance: the plan does not bind, and
            # allowances never shrink, so a message counted tomorrow is harmless too.
            return None
        if self.sent_today >= cap:
            return window_start(day + 1)
        into_day = (now + CST) % DAY
        if into_day < WINDOW[0]:
            return window_start(day)
        if into_day >= WINDOW[1]:
            return window_start(day + 1)
        return None

    def run(self):
        while self.queue and not out_of_budget():
            when, _, i, rcpt, tries, mx = heapq.heappop(self.queue)
            if rcpt in self.dead:
                self.failed += 1
                continue
            ready = max(when, self.paused_until, self.rcpt_paused.get(rcpt, 0.0))
            if ready > vnow():
                vsleep(ready - vnow())
            wait = self.held_back()
            if wait is not None:
                debug("message %d held back by the warm-up plan" % i)
                self.later(wait, i, rcpt, tries, mx)
                continue
            if self.first_day is None:
                self.first_day = cst_day(vnow())
            self.deliver(i, rcpt, tries, mx)
            vsleep(self.gap)
        print(
            "well_behaved: sent %d, failed %d, retried %d, left %d"
            % (self.sent, self.failed, self.retried, len(self.queue))
        )

    def deliver(self, i, rcpt, tries, mx):
        data = message(i, rcpt, personal=True)
        result, dropped_at = None, None
        for k in range(len(HOSTS)):
            n = (mx + k) % len(HOSTS)
            _, host, port = HOSTS[n]
            try:
                code, text, stage = attempt(host, port, WORKLOAD["from"], rcpt, data)
            except Dropped as e:
                debug("message %d to %s via %s: dropped at %s" % (i, rcpt, HOSTS[n][0], e))
                if e.in_transaction:
                    dropped_at = n
                    break
                continue  # refused or dropped before the transaction: next host
            debug("message %d to %s via %s: %s" % (i, rcpt, HOSTS[n][0], text))
            if 400 <= code < 500 and stage == "connect":
                continue  # a host that turns connections away: next host
            result = (code, text)
            break
        if result is None:
            # Dropped during the transaction, or no host would talk: back off, and
            # start the retry at the host after the one that dropped.
            start = (dropped_at + 1) % len(HOSTS) if dropped_at is not None else 0
            self.backoff(i, rcpt, tries, start)
            return
        code, text = result
        if code < 400:
            self.sent += 1
            self.sent_today += 1
            self.pause = 10 * MINUTE
            self.rcpt_pause.pop(rcpt, None)
        elif code < 500:
            self.backoff(i, rcpt, tries, 0)
        elif UNKNOWN in text:
            self.dead.add(rcpt)
            self.failed += 1
        elif RECIPIENT_BLOCK in text:
            wait = self.rcpt_pause.get(rcpt, 10 * MINUTE)
            self.rcpt_paused[rcpt] = vnow() + wait
            self.rcpt_pause[rcpt] = min(wait * 2, DAY)
            self.retried += 1
            self.later(vnow(), i, rcpt, tries)
        elif any(b in text for b in BLOCKS):
            # Day tiers end at midnight CST: no pause runs past the next day's start.
            now = vnow()
            next_day = (cst_day(now) + 1) * DAY - CST + 5 * MINUTE
            self.paused_until = min(now + self.pause, next_day)
            self.pause = min(self.pause * 2, DAY)
            self.retried += 1
            self.later(vnow(), i, rcpt, tries)
        else:
            self.failed += 1

    def backoff(self, i, rcpt, tries, mx):
        """A temporary failure: try again 5 minutes later, doubling, at most an hour (half
        of the two hours a scenario may allow, so that a slow machine's delays in
        getting to the retry cannot push it past them)."""
        self.retried += 1
        self.later(vnow() + min(5 * MINUTE * 2 ** tries, HOUR), i, rcpt, tries + 1, mx)


if __name__ == "__main__":
    sys.exit(Sender().run())
