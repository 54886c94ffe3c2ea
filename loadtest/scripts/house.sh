#!/usr/bin/env bash
# Issue 18's figures: the reshaped house must not be slower. The engine,
# log, round-trip and AML criterion benches and the closed-loop bench
# preset, for a build from before the reshaping and one from after,
# alternating in one run so both see the same machine.
#
#   git worktree add /tmp/before18 <commit before issue 18>
#   loadtest/scripts/house.sh /tmp/before18 [OUT_DIR] [ROUNDS]
#
# Builds both trees (release and bench profiles) first. Prints one line
# per bench and build: `<build> <bench> <median>`, and the closed loop's
# records/s with the run's own fsync p50.
set -euo pipefail
before=${1:?usage: house.sh BEFORE_TREE [OUT_DIR] [ROUNDS]}
out=${2:-/tmp/harbour-house}
rounds=${3:-2}
after=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$out"
for tree in "$before" "$after"; do
    (cd "$tree" && cargo build -q --release --workspace && cargo bench -q --no-run --bench engine --bench wal --bench roundtrip --bench aml)
done

criterion() { # tree name bench filter
    local tree=$1 name=$2 bench=$3 filter=$4
    (cd "$tree" && ENGINE_BENCH_SKIP_MEMORY=1 cargo bench -q --bench "$bench" -- "$filter" 2>/dev/null) > "$out/$name-$bench.txt" || true
    # "group/bench  time: [low median high]" -> "name bench median unit"
    awk -v who="$name" '/^[a-z_]+\/[A-Za-z0-9_]+/ {id=$1} /time:/ {gsub(/\[/,""); print who, id, $4, $5}' "$out/$name-$bench.txt"
}

closed_loop() { # tree name
    local tree=$1 name=$2 dir=$out/data
    rm -rf "$dir"
    "$tree/target/release/harbour" serve --data "$dir" --metrics 127.0.0.1:9464 > "$out/$name.out" 2> "$out/$name.err" &
    local pid=$!
    for _ in $(seq 1 600); do grep -q listening "$out/$name.out" 2>/dev/null && break; sleep 0.1; done
    "$after/target/release/harbour-loadtest" bench --accounts 10000 --transfers 4000000 > "$out/$name-bench.txt" 2>&1 || true
    local fs
    fs=$(curl -s 127.0.0.1:9464/metrics | grep -E 'harbour_stage_seconds_quantiles\{stage="fsync",quantile="0.5"\}' | awk '{printf "%.0fus", $2*1e6}')
    kill -TERM "$pid"; wait "$pid" || true
    rm -rf "$dir"
    echo "$name closed_loop $(grep -m1 throughput "$out/$name-bench.txt" | awk '{print $2}') records/s fsync_p50=$fs"
}

for round in $(seq 1 "$rounds"); do
    for build in before after; do
        tree=$before
        [ $build = after ] && tree=$after
        name=$build-$round
        closed_loop "$tree" "$name"
        criterion "$tree" "$name" engine 'engine/(same_currency|cross_currency|pending|cross_shard)'
        criterion "$tree" "$name" wal 'wal/'
        criterion "$tree" "$name" roundtrip ''
        criterion "$tree" "$name" aml ''
    done
done
