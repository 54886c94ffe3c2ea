#!/usr/bin/env bash
# Issue 8's end-to-end figures: for 1, 2 and 4 shards, the closed-loop
# bench preset and the open-loop synthetic mix (saturation, then half of
# it), with default AML and with AML level 3 off, over loopback.
#
#   cargo build --release --workspace
#   loadtest/scripts/shards.sh [OUT_DIR]
#
# Each run starts a fresh switch (data in OUT_DIR/data, sized per shard
# count), runs the load, scrapes the metrics (OUT_DIR/*.metrics: the fsync
# baseline of the same run) and stops the switch. Results: OUT_DIR/*.json.
set -euo pipefail
out=${1:-/tmp/harbour-shards}
root=$(cd "$(dirname "$0")/../.." && pwd)
bin=$root/target/release
mkdir -p "$out"
traffic=$out/mix.htr
if [ ! -f "$traffic" ]; then
    # 80% same-currency, 15% HKD->USD, 5% remittances; uniform accounts,
    # so with several shards most payments cross.
    "$bin/harbour-loadtest" gen --out "$traffic" --accounts 100000 --transfers 3000000 \
        --rate 1000000 --zipf 0 --batch 1000
fi

serve() { # shards behaviour backend name -- loadtest args
    local shards=$1 behaviour=$2 backend=$3 name=$4
    shift 5
    local dir=$out/data
    rm -rf "$dir"
    mkdir -p "$dir"
    local cap=$((16777216 / shards))
    cat > "$out/$name.toml" <<T
data = "$dir"
shards = $shards
backend = "$backend"
accounts_capacity = 1048576
transfers_capacity = $cap
pending_capacity = $cap
[aml]
behaviour = $behaviour
[[channels]]
id = 1
key = "hksw-dev-key"
roles = ["ACCOUNTS", "PAYMENTS", "LENDING", "TREASURY", "OPERATOR", "REPORTING"]
T
    "$bin/harbour" serve --config "$out/$name.toml" --metrics 127.0.0.1:9464 > "$out/$name.out" 2> "$out/$name.err" &
    local pid=$!
    for _ in $(seq 1 600); do grep -q listening "$out/$name.out" 2>/dev/null && break; sleep 0.1; done
    "$bin/harbour-loadtest" "$@" --json "$out/$name.json" > "$out/$name.txt" 2>&1 || true
    curl -s 127.0.0.1:9464/metrics > "$out/$name.metrics" || true
    kill -TERM "$pid"
    wait "$pid" || true
    rm -rf "$dir"
    local tput
    tput=$(grep -m1 throughput "$out/$name.txt" | awk '{print $2}')
    local p=$(grep -E '^ +p(50|99|99\.9) ' "$out/$name.txt" | awk '{printf "%s=%s%s ", $1, $2, $3}')
    local fs=$(grep -E 'harbour_stage_seconds_quantiles\{stage="fsync",quantile="0.(5|99)"\}' "$out/$name.metrics" | awk '{printf "%.0fus ", $2*1e6}')
    echo "$name: $tput records/s $p fsync(p50 p99)=$fs"
}

for shards in 1 2 4; do
    for behaviour in true false; do
        serve $shards $behaviour std "bench-$shards-l3$behaviour" -- bench --accounts 10000 --transfers 10000000
    done
done
for shards in 1 2 4; do
    for behaviour in true false; do
        name="max-$shards-l3$behaviour"
        serve $shards $behaviour std "$name" -- replay "$traffic" -c 4 --max
        rate=$(python3 -c "import json;print(int(json.load(open('$out/$name.json'))['records_per_second']/2))")
        serve $shards $behaviour std "half-$shards-l3$behaviour" -- replay "$traffic" -c 4 --rate "$rate/s"
    done
done
for backend in std uring std uring; do
    serve 1 false $backend "backend-$backend-$RANDOM" -- replay "$traffic" -c 4 --max
done
