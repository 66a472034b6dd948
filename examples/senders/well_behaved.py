#!/usr/bin/env python3
"""A well-behaved sender, as Tencent asks senders to be.

- Paces itself to the workload's `per_minute` and warms a new IP up: it never sends more
  in a China Standard Time day than the warm-up plan allows (Tencent's advice, 50 a day
  on days 1-3, about 150 on days 4-7, about 300 in week two; a scenario that scales the
  plan down says so in [config.reputation], which stands for the operator's plan).
- One message per transaction, greeting each recipient by name (no two bodies alike);
  it signs with DKIM when the workload has a key.
- A 4xx reply or a dropped connection: the message is retried later, backing off from 5
  virtual minutes (doubling, at most 2 hours); a host that refuses or drops connections
  makes it try the next MX host for that attempt.
- A 550 that means "you are sending too much" (`... frequency limited`, `Connection
  denied`, `Suspected spam ip`) pauses the whole queue, backing off from 10 virtual
  minutes (doubling, at most until the next day); `Mailbox unavailable or access denied`
  pauses that recipient only.
- `Mailbox not found`: the address is dropped for good. Other 5xx: the message is
  dropped.
"""
import heapq
import sys

from workload import (
    HOSTS, RECIPIENTS, SCENARIO_DATA, WORKLOAD, Dropped, attempt, cst_day, message,
    out_of_budget, sync, vnow, vsleep,
)

BLOCKS = ("frequency limited", "Connection denied", "Suspected spam ip")
MINUTE, HOUR, DAY = 60, 3600, 86400
# The sender's idea of the server's time can be off by a little, and a message takes a
# while to arrive: it sends nothing this close to midnight (China Standard Time), so that
# it and the server always agree on the day a message counts for.
DAY_MARGIN = 4 * HOUR


def warmup_plan():
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


def main():
    allowance = warmup_plan()
    first_day = cst_day(vnow())
    sent_today, today = 0, first_day
    gap = MINUTE / max(WORKLOAD["per_minute"], 1)
    # (when, seq, index, recipient, tries)
    queue = [(0.0, i, i, RECIPIENTS[i % len(RECIPIENTS)], 0) for i in range(WORKLOAD["messages"])]
    heapq.heapify(queue)
    dead, paused_until, pause = set(), 0.0, 10 * MINUTE
    rcpt_paused, rcpt_pause = {}, {}
    sent = failed = retried = 0
    seq = len(queue)
    while queue and not out_of_budget():
        when, _, i, rcpt, tries = heapq.heappop(queue)
        if rcpt in dead:
            failed += 1
            continue
        ready = max(when, paused_until, rcpt_paused.get(rcpt, 0.0))
        if ready > vnow():
            vsleep(ready - vnow())
        if allowance:
            sync()
        now = vnow()
        if cst_day(now) != today:
            today, sent_today = cst_day(now), 0
        into_day = (now + 8 * HOUR) % DAY
        near_midnight = into_day < DAY_MARGIN or into_day >= DAY - DAY_MARGIN
        if allowance and (near_midnight or sent_today >= allowance(today - first_day + 1)):
            day = today + 1 if into_day >= DAY_MARGIN else today
            seq += 1
            heapq.heappush(queue, (day * DAY - 8 * HOUR + DAY_MARGIN, seq, i, rcpt, tries))
            continue
        result = None
        for name, host, port in HOSTS:
            try:
                result = attempt(host, port, WORKLOAD["from"], rcpt, message(i, rcpt, personal=True))
                break
            except Dropped:
                continue
        vsleep(gap)
        code, text = result if result else (None, "no MX host answered")
        if code is not None and code < 400:
            sent += 1
            sent_today += 1
            pause = 10 * MINUTE
            rcpt_pause.pop(rcpt, None)
            continue
        if code is not None and code >= 500:
            if "Mailbox not found" in text:
                dead.add(rcpt)
                failed += 1
                continue
            if "Mailbox unavailable" in text:
                wait = rcpt_pause.get(rcpt, 10 * MINUTE)
                rcpt_paused[rcpt] = vnow() + wait
                rcpt_pause[rcpt] = min(wait * 2, DAY)
            elif any(b in text for b in BLOCKS):
                paused_until = vnow() + pause
                pause = min(pause * 2, DAY)
            else:
                failed += 1
                continue
            retried += 1
            seq += 1
            heapq.heappush(queue, (vnow(), seq, i, rcpt, tries + 1))
            continue
        # A 4xx, or no answer at all: back off and try again.
        backoff = min(5 * MINUTE * 2 ** tries, 2 * HOUR)
        retried += 1
        seq += 1
        heapq.heappush(queue, (vnow() + backoff, seq, i, rcpt, tries + 1))
    print("well_behaved: sent %d, failed %d, retried %d, left %d" % (sent, failed, retried, len(queue)))


if __name__ == "__main__":
    sys.exit(main())
