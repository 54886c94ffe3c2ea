#!/usr/bin/env bash
# Default AML with realistic traffic (issue 17, docs/benchmarks.md): the
# closed-loop preset with default AML against level 3 off, alternating in
# one run (fresh data each run, AML holds read from the metrics), then the
# README's one-minute load test on default AML.
#
#   cargo build --release --workspace
#   loadtest/scripts/aml.sh [out-dir] [rounds]
set -euo pipefail
out=${1:-/tmp/harbour-aml}
rounds=${2:-2}
root=$(cd "$(dirname "$0")/../.." && pwd)
harbour=$root/target/release/harbour
loadtest=$root/target/release/harbour-loadtest
rm -rf "$out" && mkdir -p "$out"
cd "$out"
export HARBOUR_ADDR=127.0.0.1:7431

start() { # extra configuration lines
    rm -rf data
    printf 'metrics = "127.0.0.1:9481"\n%s\n[[channels]]\nid = 1\nkey = "hksw-dev-key"\nroles = ["ACCOUNTS", "PAYMENTS", "LENDING", "TREASURY", "OPERATOR", "REPORTING"]\n' "$1" > cfg.toml
    "$harbour" serve --data ./data --listen "$HARBOUR_ADDR" --config cfg.toml > serve.log 2>&1 &
    pid=$!
    for _ in $(seq 1 120); do grep -q listening serve.log && return; sleep 0.5; done
    echo "the switch did not start" >&2; exit 1
}
stop() { kill -TERM "$pid"; wait "$pid" || true; }
holds() { curl -s 127.0.0.1:9481/metrics | grep -E 'harbour_aml_holds_total\{|stage="fsync",quantile="0.(5|99)"' | tr '\n' ' '; echo; }

for round in $(seq 1 "$rounds"); do
    for mode in default level3-off; do
        if [ "$mode" = default ]; then start ""; else start $'[aml]\nbehaviour = false'; fi
        echo "== round $round, $mode"
        "$loadtest" bench --accounts 10000 --transfers 10000000 | grep -E "batches|posted"
        holds
        stop
    done
done
start ""
echo "== the README's one-minute load test, default AML"
"$loadtest" gen --out traffic.htr --accounts 100000 --transfers 12000000 --rate 200000
"$loadtest" replay traffic.htr -c 4 2> /dev/null
holds
stop
