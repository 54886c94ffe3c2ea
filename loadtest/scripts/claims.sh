#!/usr/bin/env bash
# Issue 13's end-to-end figures: the closed-loop bench preset and open-loop
# saturation with 2 and 4 shards, for a build from before the switch-wide
# claims and MULTI rounds and one from after, alternating in one run so
# both see the same machine.
#
#   git worktree add /tmp/before <commit before issue 13>
#   (cd /tmp/before && cargo build --release --workspace)
#   cargo build --release --workspace
#   loadtest/scripts/claims.sh /tmp/before/target/release [OUT_DIR]
#
# SHARDS="2 4" picks the shard counts (default 1 2 4).
#
# Each run starts a fresh switch, runs the load, scrapes the metrics (the
# fsync baseline of the same run) and stops the switch. The load tester
# is this tree's for both builds (same client, same traffic file).
set -euo pipefail
before=${1:?usage: claims.sh BEFORE_TARGET_RELEASE_DIR [OUT_DIR]}
out=${2:-/tmp/harbour-claims}
root=$(cd "$(dirname "$0")/../.." && pwd)
after=$root/target/release
tester=$after/harbour-loadtest
mkdir -p "$out"
traffic=$out/mix.htr
if [ ! -f "$traffic" ]; then
    "$tester" gen --out "$traffic" --accounts 100000 --transfers 2000000 --rate 1000000 --zipf 0 --batch 1000
fi

serve() { # bin shards behaviour name -- loadtest args
    local bin=$1 shards=$2 behaviour=$3 name=$4
    shift 5
    local dir=$out/data
    rm -rf "$dir"
    mkdir -p "$dir"
    local cap=$((16777216 / shards))
    cat > "$out/$name.toml" <<T
data = "$dir"
shards = $shards
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
    "$tester" "$@" --json "$out/$name.json" > "$out/$name.txt" 2>&1 || true
    curl -s 127.0.0.1:9464/metrics > "$out/$name.metrics" || true
    kill -TERM "$pid"
    wait "$pid" || true
    rm -rf "$dir"
    local tput p fs
    tput=$(grep -m1 throughput "$out/$name.txt" | awk '{print $2}')
    p=$(grep -E '^ +p(50|99) ' "$out/$name.txt" | awk '{printf "%s=%s%s ", $1, $2, $3}')
    fs=$(grep -E 'harbour_stage_seconds_quantiles\{stage="fsync",quantile="0.(5|99)"\}' "$out/$name.metrics" | awk '{printf "%.0fus ", $2*1e6}')
    echo "$name: $tput records/s $p fsync(p50 p99)=$fs"
}

for shards in ${SHARDS:-1 2 4}; do
    for round in 1 2; do
        for build in before after; do
            bin=$before
            [ $build = after ] && bin=$after
            serve "$bin" $shards true "bench-$build-$shards-$round" -- bench --accounts 10000 --transfers 4000000
            serve "$bin" $shards false "benchl3off-$build-$shards-$round" -- bench --accounts 10000 --transfers 4000000
            serve "$bin" $shards false "max-$build-$shards-$round" -- replay "$traffic" -c 4 --max
        done
    done
done
