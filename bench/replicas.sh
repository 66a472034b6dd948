#!/usr/bin/env bash
# Throughput of 1, 2 and 3 qqmx replicas sharing one Redis (README, "Running several
# qqmx"): N replicas with every rule on (bench/qqmx-rules.toml), one Postfix
# smtp-source per replica (20 connections, 4,000 messages), all started at once; prints
# the messages a second from the first connection to the last reply, and the round
# trips to Redis per message (`qqmx_state_calls_total` of every replica). Run from the
# repository after `cargo build --release --features cli` (QQMX=path to use another
# binary; MESSAGES=n per replica for a short check); needs redis-server, redis-cli, bc,
# curl, python3 and /usr/sbin/smtp-source. Every port is a free loopback port picked at
# the start.
set -u
BIN=${QQMX:-target/release/qqmx}
MESSAGES=${MESSAGES:-4000}
CFG=${CFG:-$PWD/bench/qqmx-rules.toml}
# Free loopback ports, as many as asked, picked by binding port 0 (all held at once, so
# they differ).
free_ports() {
  python3 -c 'import socket, sys
held = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in held:
    s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in held))' "$1"
}
read -r RPORT S1 S2 S3 A1 A2 A3 <<< "$(free_ports 7)"
SMTP=(0 $S1 $S2 $S3)
API=(0 $A1 $A2 $A3)
redis-server --port $RPORT --bind 127.0.0.1 --save "" --appendonly no --dir ${TMPDIR:-/tmp} > ${TMPDIR:-/tmp}/redis.log 2>&1 &
RPID=$!
for _ in $(seq 1 100); do redis-cli -p $RPORT ping > /dev/null 2>&1 && break; sleep 0.1; done
for n in 1 2 3; do
  redis-cli -p $RPORT flushall > /dev/null
  pids=()
  for i in $(seq 1 $n); do
    QQMX__STATE__BACKEND=redis QQMX__STATE__URL=redis://127.0.0.1:$RPORT/0 QQMX_LOG=warn \
      $BIN serve -c $CFG --smtp 127.0.0.1:${SMTP[$i]} --api 127.0.0.1:${API[$i]} --replica r$i > ${TMPDIR:-/tmp}/q$i.log 2>&1 &
    pids+=($!)
  done
  # Each replica answers its API once it listens (at most 30 s).
  for i in $(seq 1 $n); do
    for _ in $(seq 1 300); do curl -sf http://127.0.0.1:${API[$i]}/metrics > /dev/null && break; sleep 0.1; done
  done
  start=$(date +%s.%N)
  cpids=()
  for i in $(seq 1 $n); do
    /usr/sbin/smtp-source -s 20 -m $MESSAGES -d -l 1024 -f sender@example.org -t 10001@qq.com 127.0.0.1:${SMTP[$i]} > ${TMPDIR:-/tmp}/s$i.log 2>&1 &
    cpids+=($!)
  done
  for p in "${cpids[@]}"; do wait $p; done
  end=$(date +%s.%N)
  total=$((MESSAGES*n))
  calls=0
  for i in $(seq 1 $n); do
    c=$(curl -s http://127.0.0.1:${API[$i]}/metrics | awk '$1 == "qqmx_state_calls_total" { print $2 }')
    calls=$((calls + ${c:-0}))
  done
  echo "replicas=$n messages=$total seconds=$(echo "$end - $start" | bc) msgs_per_s=$(echo "$total / ($end - $start)" | bc) round_trips_per_msg=$(echo "scale=2; $calls / $total" | bc)"
  for p in "${pids[@]}"; do kill $p; done
  for p in "${pids[@]}"; do wait $p 2>/dev/null; done
done
kill $RPID
wait $RPID 2>/dev/null
