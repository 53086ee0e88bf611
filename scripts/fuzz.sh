#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo fuzz, libFuzzer) for FUZZ_SECONDS each (default 25; 0 skips), from the
# committed seeds (fuzz/seeds/TARGET) plus what earlier local runs found (fuzz/corpus/TARGET, not committed), and
# fails when a target panics, hangs (10 s for one input) or uses more than 2 GiB, printing the
# input that did it. Prints the executions of each target.
#
# The toolchain is stable: `-s none` builds without a sanitizer (they need nightly; the crates forbid unsafe code,
# so the fuzzer looks for panics, overflows (`-a`: debug assertions, overflow checks), hangs and memory blow-ups).
# A crash found becomes a regression test in the crate's own tests (see docs/reliability.md).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${FUZZ_SECONDS:-25}
if [ "$seconds" = 0 ]; then
  echo "   fuzzing skipped (FUZZ_SECONDS=0)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --version 0.13.2 --locked --quiet
fi
flags=(--sanitizer none --debug-assertions --release)
mkdir -p corpus
if ! cargo fuzz build "${flags[@]}" >corpus/build.log 2>&1; then
  grep -v '^\s*\(Compiling\|Downloaded\|Downloading\)' corpus/build.log >&2
  echo "error: cargo fuzz build failed" >&2
  exit 1
fi
failed=0
for target in $(cargo fuzz list); do
  mkdir -p "corpus/$target"
  log="corpus/$target.log"
  if cargo fuzz run "${flags[@]}" "$target" "corpus/$target" "seeds/$target" -- \
      -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    corpus=$(sed -n 's/^stat::new_units_added: *//p' "$log" | tail -1)
    printf '   fuzz %-22s %9s executions in %s s, %s new inputs\n' "$target" "${runs:-?}" "$seconds" "${corpus:-?}"
  else
    failed=1
    echo "error: fuzz target $target failed:" >&2
    grep -v '^#[0-9]' "$log" | tail -40 >&2
  fi
done
exit "$failed"
