#!/usr/bin/env bash
# Builds the test suite with a sanitizer and runs its tiers under it (docs/reliability.md,
# "Sanitizer builds"):
#   asan  AddressSanitizer + LeakSanitizer + UndefinedBehaviorSanitizer (preset asan, build/asan):
#         the whole tree, tiers unit, multirank, mpi and fault
#   tsan  ThreadSanitizer (preset tsan, build/tsan): the binaries whose tests run threads —
#         base_tests (timeline), comm_tests (tcp store, heartbeat, status server),
#         comm_multirank_tests and core_multirank_tests (threads as ranks); tiers unit, multirank
#   control  ThreadSanitizer on the control plane only (tests/tsan/, build/tsan-control): the
#         torch-free sources that own threads (store, TCP store, heartbeat, status server, op
#         queue, timeline) with their unit tests, label tsan; a few minutes, so CI runs it
#         (scripts/test.sh) while the two whole-tree builds above run by hand
# Any sanitizer report fails its test (halt_on_error / abort_on_error). Suppressions
# (sanitizers/*.supp) cover third-party libraries only; each entry says why.
#   scripts/sanitize.sh asan|tsan [ctest args]      e.g. scripts/sanitize.sh tsan -R TcpStore
# Environment: THINWIRE_BUILD_JOBS (default 2; the build runs under nice 15),
# THINWIRE_TEST_JOBS (default 2), THINWIRE_SANITIZE_BUILD=0 skips configure and build.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$PWD
kind=${1:-}
shift || true
case $kind in
  asan)
    targets=()  # everything: every tier's binaries and the thinwire executable the cli tests run
    ;;
  tsan)
    targets=(base_tests comm_tests comm_multirank_tests core_multirank_tests)
    ;;
  control)
    targets=(control_tsan_tests)
    ;;
  *)
    echo "usage: scripts/sanitize.sh asan|tsan|control [ctest args]" >&2
    exit 2
    ;;
esac
build=build/$kind
[[ $kind == control ]] && build=build/tsan-control

if [[ ${THINWIRE_SANITIZE_BUILD:-1} != 0 ]]; then
  extra=(-DTHINWIRE_WITH_CUDA=OFF -DTHINWIRE_WERROR=ON)
  [[ $kind == tsan ]] && extra+=(-DTHINWIRE_BUILD_BENCH=OFF)
  if [[ $kind == control ]]; then
    # No preset: the flags are on the one target (tests/tsan/CMakeLists.txt), nothing else is built.
    configure=(cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
      -DTHINWIRE_BUILD_CONTROL_TSAN=ON -DTHINWIRE_BUILD_TESTS=OFF -DTHINWIRE_BUILD_BENCH=OFF)
  else
    configure=(cmake --preset "$kind")
  fi
  "${configure[@]}" "${extra[@]}" > "$build.configure.log" 2>&1 ||
    { cat "$build.configure.log" >&2; echo "sanitize.sh: configure failed" >&2; exit 1; }
  nice -n 15 ninja -C "$build" -j "${THINWIRE_BUILD_JOBS:-2}" "${targets[@]}" ||
    { echo "sanitize.sh: build failed" >&2; exit 1; }
fi

# Single-threaded libtorch (OpenMP) and OpenBLAS: their pools are not instrumented, and one
# thread per rank keeps the threads-as-ranks tests from oversubscribing the machine.
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
ctest_args=(--test-dir "$build" --output-on-failure
  -j "${THINWIRE_TEST_JOBS:-2}" --timeout 900)
# A sanitizer refuses to start on a missing suppression file: name only those that exist.
supp() { [[ -f $root/sanitizers/$1.supp ]] && echo ":suppressions=$root/sanitizers/$1.supp"; }
rc=0
if [[ $kind == asan ]]; then
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
  export LSAN_OPTIONS=print_suppressions=0$(supp lsan)
  export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1$(supp ubsan)
  echo "sanitize.sh: ctest -L '^(unit|multirank)\$' ${ctest_args[*]} $*"
  ctest -L '^(unit|multirank)$' "${ctest_args[@]}" "$@" || rc=1
  # Open MPI's one-time allocations are made by MCA components that MPI_Finalize unloads, and
  # neither they nor libmpi keep frame pointers: with the fast unwinder their leak stacks hold no
  # library frame to suppress by. The DWARF unwinder (slower on every malloc) finds libmpi.
  ASAN_OPTIONS+=:fast_unwind_on_malloc=0
  echo "sanitize.sh: ASAN_OPTIONS=$ASAN_OPTIONS ctest -L '^(mpi|fault)\$' ${ctest_args[*]} -j 1 $*"
  # One entry at a time: each already runs up to 7 processes, and two at once under ASan took
  # comm_mpi_conformance_n7 past its 120 s limit on 2 cores (77 s alone).
  ctest -L '^(mpi|fault)$' "${ctest_args[@]}" -j 1 "$@" || rc=1
elif [[ $kind == control ]]; then
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1$(supp tsan)
  echo "sanitize.sh: TSAN_OPTIONS=$TSAN_OPTIONS ctest -L '^tsan\$' ${ctest_args[*]} $*"
  ctest -L '^tsan$' "${ctest_args[@]}" "$@" || rc=1
else
  export TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1$(supp tsan)
  # Only the binaries built above: the others' tests appear as <binary>_NOT_BUILT entries.
  ctest_args+=(-E '_NOT_BUILT$')
  echo "sanitize.sh: ctest -L '^(unit|multirank)\$' ${ctest_args[*]} $*"
  ctest -L '^(unit|multirank)$' "${ctest_args[@]}" "$@" || rc=1
fi
exit $rc
