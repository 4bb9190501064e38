#!/usr/bin/env bash
# Builds one fuzz target with libFuzzer's coverage instrumentation on stable Rust and runs
# one campaign (1 job, low priority).
#   fuzz/run.sh TARGET SECONDS [extra libFuzzer flags...]
#   TARGET: checkpoint | template | csv
# Corpus: fuzz/corpus/TARGET (grows; seeded from fuzz/seeds and fuzz/regressions);
# crashes, timeouts, OOMs: fuzz/artifacts/TARGET/; log: fuzz/logs/TARGET-<time>.log.
# Reproduce one input: fuzz/run.sh TARGET 0 path/to/input   (runs just that file)
set -euo pipefail

target=${1:?usage: fuzz/run.sh TARGET SECONDS [libFuzzer flags]}
seconds=${2:?usage: fuzz/run.sh TARGET SECONDS [libFuzzer flags]}
shift 2
case $target in
    checkpoint) max_len=16384 ;;
    template) max_len=512 ;;
    csv) max_len=16384 ;;
    *) echo "unknown target $target (checkpoint, template, csv)" >&2; exit 2 ;;
esac

fuzz=$(cd "$(dirname "$0")" && pwd)
host=$(rustc -vV | sed -n 's/^host: //p')

# sancov passes as in cargo-fuzz, none of which need nightly; no sanitizer runtime (ASan needs
# -Zsanitizer). --target keeps these flags off build scripts and proc macros.
export RUSTFLAGS="-Cpasses=sancov-module \
-Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
-Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares \
--cfg fuzzing -Cdebug-assertions -Coverflow-checks -Cforce-frame-pointers=yes"
export CARGO_TARGET_DIR="$fuzz/target"
nice -n 19 cargo build --release --jobs 1 --manifest-path "$fuzz/Cargo.toml" \
    --target "$host" --bin "$target"
bin="$fuzz/target/$host/release/$target"

corpus="$fuzz/corpus/$target"
artifacts="$fuzz/artifacts/$target"
mkdir -p "$corpus" "$artifacts" "$fuzz/logs"
export RUST_BACKTRACE=1
# The checkpoint harness writes every input to a file: keep it in memory where possible.
if [ -z "${TMPDIR:-}" ] && [ -d /dev/shm ] && [ -w /dev/shm ]; then export TMPDIR=/dev/shm; fi

flags=(-rss_limit_mb=4096 -malloc_limit_mb=4096 -max_len="$max_len" -timeout=10
       -artifact_prefix="$artifacts/" -print_final_stats=1)
[ -f "$fuzz/dict/$target.dict" ] && flags+=(-dict="$fuzz/dict/$target.dict")

if [ "$seconds" = 0 ]; then
    # Replay the given files (no fuzzing).
    exec nice -n 19 "$bin" "${flags[@]}" "$@"
fi

log="$fuzz/logs/$target-$(date +%Y%m%d-%H%M%S).log"
echo "log: $log"
set +e
nice -n 19 "$bin" "${flags[@]}" -max_total_time="$seconds" "$@" \
    "$corpus" "$fuzz/seeds/$target" "$fuzz/regressions/$target" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
echo "corpus: $(find "$corpus" -type f | wc -l) files; artifacts: $(find "$artifacts" -type f | wc -l) files; exit $status"
exit "$status"
