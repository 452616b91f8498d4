#!/usr/bin/env bash
# Runs every fuzz target for SECONDS seconds each (default 60) with the nightly
# toolchain, one after another, and prints each target's final libFuzzer line.
# Usage: fuzz/run-all.sh [SECONDS] [extra libFuzzer flags...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
mkdir -p fuzz/logs
for target in $(cargo +nightly fuzz list); do
    echo "== $target (${seconds}s)"
    cargo +nightly fuzz run "$target" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
        -max_len=1048576 "$@" 2>&1 | tee "fuzz/logs/$target.log" | grep -E '^#[0-9]+ +DONE|Done [0-9]+ runs|ERROR|panicked' || true
done
