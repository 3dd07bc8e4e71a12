#!/usr/bin/env bash
# Builds the libFuzzer targets (fuzz/: config parser, IDX loader, checkpoint reader, text loader;
# clang with AddressSanitizer + UndefinedBehaviorSanitizer) into build/fuzz and runs each for
# SECONDS (default 20), starting from seeds the targets write themselves (and, for the config
# parser, every examples/**/*.yaml). The corpus grows in build/fuzz/corpus/<target>; a crash,
# sanitizer report, leak, timeout (> 10 s per input) or allocation over 1 GiB leaves the input in
# build/fuzz/artifacts/ and makes the script exit 1.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     e.g. scripts/fuzz.sh 300 (the docs' long run)
set -uo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true
[[ $seconds =~ ^[0-9]+$ ]] && ((seconds >= 1)) || { echo "fuzz.sh: SECONDS must be a positive integer, got '$seconds'" >&2; exit 2; }
targets=("$@")
((${#targets[@]})) || targets=(config_fuzz idx_fuzz checkpoint_fuzz text_fuzz)
clang=$(command -v clang++ || command -v clang++-14 || true)
runtime=$(ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a 2>/dev/null | head -1)
if [[ -z $clang || -z $runtime ]]; then
  echo "fuzz.sh: clang and libFuzzer (Debian: clang libclang-rt-14-dev) are missing: not run" >&2
  exit 3
fi
build=build/fuzz
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$clang" \
  -DTHINWIRE_BUILD_FUZZ=ON -DTHINWIRE_WITH_CUDA=OFF -DTHINWIRE_BUILD_TESTS=OFF \
  -DTHINWIRE_BUILD_BENCH=OFF ${CI:+-DTHINWIRE_WERROR=ON} > "$build.configure.log" 2>&1 ||
  { cat "$build.configure.log" >&2; echo "fuzz.sh: configure failed" >&2; exit 1; }
ninja -C "$build" -j "${THINWIRE_BUILD_JOBS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}" fuzz_targets || { echo "fuzz.sh: build failed" >&2; exit 1; }
mkdir -p "$build/artifacts"
failed=()
for target in "${targets[@]}"; do
  binary=$build/fuzz/$target
  [[ -x $binary ]] || { echo "fuzz.sh: no target '$target'" >&2; exit 2; }
  corpus=$build/corpus/$target
  seeds=$build/seeds/$target
  rm -rf "$seeds"
  mkdir -p "$corpus" "$seeds"
  THINWIRE_FUZZ_WRITE_SEEDS=$seeds "$binary" > /dev/null 2>&1 ||
    { echo "fuzz.sh: $target could not write its seeds" >&2; failed+=("$target"); continue; }
  if [[ $target == config_fuzz ]]; then
    find examples -name '*.yaml' | while read -r f; do cp "$f" "$seeds/example-${f//\//_}"; done
  fi
  log=$build/$target.log
  echo "fuzz.sh: $target for ${seconds}s ($(ls "$seeds" | wc -l) seeds, $(ls "$corpus" | wc -l) in the corpus)"
  # -rss_limit_mb and -malloc_limit_mb: a loader that trusts a header's size fails here.
  timeout $((seconds + 120)) "$binary" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
    -malloc_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$build/artifacts/$target-" \
    "$corpus" "$seeds" > "$log" 2>&1
  rc=$?
  runs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$')
  if [[ $rc -ne 0 ]]; then
    failed+=("$target")
    echo "fuzz.sh: $target FAILED (rc $rc); the input is in $build/artifacts/, log $log:" >&2
    grep -E 'ERROR|SUMMARY|terminate|what\(\)|Test unit written' "$log" | head -20 >&2
  else
    echo "fuzz.sh: $target ok: ${runs:-?} inputs in ${seconds}s, corpus $(ls "$corpus" | wc -l)"
  fi
done
((${#failed[@]} == 0)) || { echo "fuzz.sh: failed: ${failed[*]}" >&2; exit 1; }
echo "fuzz.sh: all ${#targets[@]} targets ran ${seconds}s each without a finding"
