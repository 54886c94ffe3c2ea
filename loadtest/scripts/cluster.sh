#!/usr/bin/env bash
# Issue 14's figures: one node against a three-node cluster on this
# machine, alternating in one run so both see the same disk and cores.
# The closed-loop preset and an open-loop replay for each, with the run's
# own fsync p50 (the leader's, for the cluster), then the failover loop.
#
#   loadtest/scripts/cluster.sh [OUT_DIR] [ROUNDS] [KILLS]
#
# Needs `cargo build --release --workspace` first. Prints one line per
# run: `<setup> <run> <figure> fsync_p50=<us>`.
set -euo pipefail
out=${1:-/tmp/harbour-cluster}
rounds=${2:-2}
kills=${3:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
harbour=$root/target/release/harbour
loadtest=$root/target/release/harbour-loadtest
mkdir -p "$out"
# The open-loop workload: AML levels 1 and 3 off on the switch side below,
# so what is measured is payments, not the hold path.
"$loadtest" gen --out "$out/traffic.htr" --accounts 10000 --transfers 600000 --batch 100 --rate 50000 > /dev/null

config() { # node_id -> a node's configuration
    local id=$1
    cat <<CONF
data = "$out/node-$id"
listen = "127.0.0.1:780$id"
metrics = "127.0.0.1:948$id"
[aml]
daily_limit_hkd = "100000000000.00"
behaviour = false
[[channels]]
id = 1
key = "hksw-dev-key"
roles = ["ACCOUNTS", "PAYMENTS", "LENDING", "TREASURY", "OPERATOR", "REPORTING"]
[cluster]
node_id = $id
CONF
    for n in 1 2 3; do
        printf '[[cluster.nodes]]\nid = %s\nchannel = "127.0.0.1:780%s"\npeer = "127.0.0.1:790%s"\n' "$n" "$n" "$n"
    done
}

single_config() {
    cat <<CONF
data = "$out/single"
listen = "127.0.0.1:7800"
metrics = "127.0.0.1:9480"
[aml]
daily_limit_hkd = "100000000000.00"
behaviour = false
[[channels]]
id = 1
key = "hksw-dev-key"
roles = ["ACCOUNTS", "PAYMENTS", "LENDING", "TREASURY", "OPERATOR", "REPORTING"]
CONF
}

pids=()
start() { # setup
    rm -rf "$out"/node-* "$out/single" "$out"/*.out
    pids=()
    if [ "$1" = single ]; then
        single_config > "$out/single.toml"
        "$harbour" serve --config "$out/single.toml" > "$out/single.out" 2> "$out/single.err" &
        pids+=($!)
        addrs="--addr 127.0.0.1:7800"
    else
        for id in 1 2 3; do
            config "$id" > "$out/node-$id.toml"
            "$harbour" serve --config "$out/node-$id.toml" > "$out/node-$id.out" 2> "$out/node-$id.err" &
            pids+=($!)
        done
        addrs="--addr 127.0.0.1:7801 --addr 127.0.0.1:7802 --addr 127.0.0.1:7803"
    fi
    for f in "$out"/*.out; do
        for _ in $(seq 1 600); do grep -q listening "$f" 2>/dev/null && break; sleep 0.1; done
    done
    "$harbour" ping $addrs > /dev/null
}

stop() {
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}

fsync_p50() { # the leader's (or the single node's) fsync p50 in µs
    local best=""
    for port in 9480 9481 9482 9483; do
        local m
        m=$(curl -s "127.0.0.1:$port/metrics" 2>/dev/null) || continue
        if [ "$port" != 9480 ] && ! grep -q '^harbour_cluster_role 3' <<<"$m"; then continue; fi
        best=$(grep -E 'harbour_stage_seconds_quantiles\{stage="fsync",quantile="0.5"\}' <<<"$m" | awk '{printf "%.0f", $2*1e6}')
    done
    echo "${best:-?}"
}

for round in $(seq 1 "$rounds"); do
    for setup in single cluster; do
        start "$setup"
        "$loadtest" bench --accounts 10000 --transfers 2000000 $addrs --json "$out/$setup-$round-bench.json" > "$out/$setup-$round-bench.txt" 2>&1 || true
        echo "$setup-$round closed_loop $(grep -m1 throughput "$out/$setup-$round-bench.txt" | awk '{print $2}')tx/s fsync_p50=$(fsync_p50)us"
        stop
        start "$setup"
        "$loadtest" replay "$out/traffic.htr" --rate 50000 $addrs --json "$out/$setup-$round-replay.json" > "$out/$setup-$round-replay.txt" 2>&1 || true
        echo "$setup-$round open_loop_50k/s $(grep -E '^\s+(p50|p99) ' "$out/$setup-$round-replay.txt" | tr -s ' ' | tr '\n' ' ') fsync_p50=$(fsync_p50)us"
        stop
    done
done
"$loadtest" failover --harbour "$harbour" --dir "$out/failover" --kills "$kills" --json "$out/failover.json" > "$out/failover.txt" 2>&1 || true
python3 - "$out/failover.json" <<'PY'
import json, statistics, sys
r = json.load(open(sys.argv[1]))
ms = sorted(r["failover_ms"])
print(f"failover kills={r['kills']} wipes={r['wipes']} rolling={r['rolling_restarts']} "
      f"p50={statistics.median(ms):.0f}ms max={max(ms)}ms answered={r['transfers_answered']} "
      f"resends={r['resends']} violations={len(r['violations'])}")
PY
