#!/usr/bin/env bash
# Configures and builds thinwire with a CMake preset (default: release) into build/<preset>.
#   scripts/build.sh [preset] [ninja targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
preset=${1:-release}
shift || true
extra=()
[[ ${CI:-} == true ]] && extra+=(-DTHINWIRE_WERROR=ON)
cmake --preset "$preset" "${extra[@]}" >/dev/null
# env -u: nproc honours OMP_NUM_THREADS, which HPC environments often set to 1.
jobs=${THINWIRE_BUILD_JOBS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}
cmake --build --preset "$preset" -j "$jobs" ${1:+--target "$@"}
