#!/usr/bin/env bash
# Issue 15's memory figure: a release switch with its default settings
# under 1,000 connections, each keeping every place in flight taken with
# 2,048-transfer requests (far past what the switch applies), while its
# resident memory is sampled; then the same with funded accounts (the books
# grow too). Prints each run's JSON (`harbour-loadtest flood`).
#
#   cargo build --release --workspace
#   loadtest/scripts/overload.sh [SECONDS] [CONNECTIONS]
set -euo pipefail
seconds=${1:-30}
connections=${2:-1000}
root=$(cd "$(dirname "$0")/../.." && pwd)
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
for mode in --unfunded ""; do
    dir=$(mktemp -d)
    "$root/target/release/harbour" serve --data "$dir/data" --listen 127.0.0.1:7412 --metrics off \
        > "$dir/serve.out" 2> "$dir/serve.err" &
    pid=$!
    until grep -q "listening on" "$dir/serve.out" 2>/dev/null; do sleep 0.1; done
    echo "== flood ${mode:---funded}, $connections connections, $seconds s"
    "$root/target/release/harbour-loadtest" flood --addr 127.0.0.1:7412 --connections "$connections" \
        --seconds "$seconds" --after 10 --pid "$pid" $mode
    kill "$pid"; wait "$pid" || true
    rm -rf "$dir"
done
