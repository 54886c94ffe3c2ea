#!/usr/bin/env bash
# TLS 1.3 (mutual) against plain TCP, one node, alternating in one run so
# both see the same machine: the closed-loop preset and an open loop of
# batches of 100 at 50,000 transfers/s (latency from the intended send
# time), with the fsync p50 of each run as the disk's baseline.
#
#   cargo build --release --workspace
#   loadtest/scripts/tls.sh [out-dir] [rounds]
set -euo pipefail
out=${1:-/tmp/harbour-tls}
rounds=${2:-2}
root=$(cd "$(dirname "$0")/../.." && pwd)
harbour=$root/target/release/harbour
loadtest=$root/target/release/harbour-loadtest
rm -rf "$out" && mkdir -p "$out"
"$harbour" certs dev --out "$out/certs" --channel 1 > /dev/null
"$loadtest" gen --out "$out/traffic.htr" --accounts 10000 --transfers 600000 --batch 100 --rate 50000 > /dev/null

config() { # plain|tls -> the node's configuration
    cat <<CONF
data = "$out/data"
listen = "127.0.0.1:7810"
metrics = "127.0.0.1:9490"
[aml]
daily_limit_hkd = "100000000000.00"
behaviour = false
[[channels]]
id = 1
key = "hksw-dev-key"
roles = ["ACCOUNTS", "PAYMENTS", "LENDING", "TREASURY", "OPERATOR", "REPORTING"]
CONF
    if [ "$1" = tls ]; then
        printf '[tls]\ncert = "%s"\nkey = "%s"\nclient_ca = "%s"\n' \
            "$out/certs/server.pem" "$out/certs/server.key" "$out/certs/ca.pem"
    fi
}

pid=""
start() {
    rm -rf "$out/data"
    config "$1" > "$out/$1.toml"
    "$harbour" serve --config "$out/$1.toml" > "$out/$1.out" 2> "$out/$1.err" &
    pid=$!
    for _ in $(seq 100); do grep -q listening "$out/$1.out" 2>/dev/null && break; sleep 0.1; done
    conn="--addr 127.0.0.1:7810"
    if [ "$1" = tls ]; then
        conn="$conn --tls-ca $out/certs/ca.pem --tls-cert $out/certs/channel-1.pem --tls-key $out/certs/channel-1.key"
    fi
}

stop() { kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; }

fsync_p50() {
    curl -s 127.0.0.1:9490/metrics | grep -E 'harbour_stage_seconds_quantiles\{stage="fsync",quantile="0.5"\}' \
        | awk '{printf "%.0f", $2*1e6}'
}

for round in $(seq 1 "$rounds"); do
    for setup in plain tls; do
        start "$setup"
        "$loadtest" bench --accounts 10000 --transfers 2000000 $conn > "$out/$setup-$round-bench.txt" 2>&1 || true
        echo "$setup-$round closed_loop $(grep -m1 throughput "$out/$setup-$round-bench.txt" | awk '{print $2}')tx/s fsync_p50=$(fsync_p50)us"
        stop
        start "$setup"
        "$loadtest" replay "$out/traffic.htr" --rate 50000 $conn > "$out/$setup-$round-replay.txt" 2>&1 || true
        echo "$setup-$round open_loop_50k/s $(grep -E '^\s+(p50|p99|p99.9) ' "$out/$setup-$round-replay.txt" | tr -s ' ' | tr '\n' ' ') fsync_p50=$(fsync_p50)us"
        stop
    done
done
