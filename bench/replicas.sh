#!/usr/bin/env bash
# Throughput of 1, 2 and 3 qqmx replicas sharing one Redis (README, "Running several
# qqmx"): N replicas with every rule on (bench/qqmx-rules.toml), one Postfix
# smtp-source per replica (20 connections, 4,000 messages), all started at once; prints
# the messages a second from the first connection to the last reply, and the round
# trips to Redis per message (`qqmx_state_calls_total` of every replica). Run from the
# repository after `cargo build --release --features cli` (QQMX=path to use another
# binary; MESSAGES=n per replica for a short check); needs redis-server, redis-cli, bc,
# curl and /usr/sbin/smtp-source, and the ports 6411, 3601-3603 and 3611-3613 free.
set -u
BIN=${QQMX:-target/release/qqmx}
MESSAGES=${MESSAGES:-4000}
CFG=${CFG:-$PWD/bench/qqmx-rules.toml}
redis-server --port 6411 --bind 127.0.0.1 --save "" --appendonly no --dir ${TMPDIR:-/tmp} > ${TMPDIR:-/tmp}/redis.log 2>&1 &
RPID=$!
sleep 1
for n in 1 2 3; do
  redis-cli -p 6411 flushall > /dev/null
  pids=()
  for i in $(seq 1 $n); do
    QQMX__STATE__BACKEND=redis QQMX__STATE__URL=redis://127.0.0.1:6411/0 QQMX_LOG=warn \
      $BIN serve -c $CFG --smtp 127.0.0.1:$((3600+i)) --api 127.0.0.1:$((3610+i)) --replica r$i > ${TMPDIR:-/tmp}/q$i.log 2>&1 &
    pids+=($!)
  done
  sleep 1.5
  start=$(date +%s.%N)
  cpids=()
  for i in $(seq 1 $n); do
    /usr/sbin/smtp-source -s 20 -m $MESSAGES -d -l 1024 -f sender@example.org -t 10001@qq.com 127.0.0.1:$((3600+i)) > ${TMPDIR:-/tmp}/s$i.log 2>&1 &
    cpids+=($!)
  done
  for p in "${cpids[@]}"; do wait $p; done
  end=$(date +%s.%N)
  total=$((MESSAGES*n))
  calls=0
  for i in $(seq 1 $n); do
    c=$(curl -s http://127.0.0.1:$((3610+i))/metrics | awk '$1 == "qqmx_state_calls_total" { print $2 }')
    calls=$((calls + ${c:-0}))
  done
  echo "replicas=$n messages=$total seconds=$(echo "$end - $start" | bc) msgs_per_s=$(echo "$total / ($end - $start)" | bc) round_trips_per_msg=$(echo "scale=2; $calls / $total" | bc)"
  for p in "${pids[@]}"; do kill $p; done
  for p in "${pids[@]}"; do wait $p 2>/dev/null; done
done
kill $RPID
wait $RPID 2>/dev/null
