#!/usr/bin/env bash
# Installs what is missing, builds, and runs every ctest tier this machine supports:
#   unit       single process
#   multirank  ranks as threads over the local backend, against single-process references
#   mpi        real mpiexec -n 1..7 (needs Open MPI)
#   fault      kills a rank of a real mpirun job; the others must fail fast
# A tier whose requirements are missing is reported as not run; it never counts as passed.
#   scripts/test.sh [extra ctest args]      e.g. -R Config
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
labels="unit|multirank"
if command -v mpiexec >/dev/null; then
  labels+="|mpi|fault"
else
  echo "test.sh: mpiexec not found: the mpi and fault tiers do not run" >&2
fi
ctest --test-dir build/release -L "^($labels)\$" --output-on-failure -j "${THINWIRE_TEST_JOBS:-2}" "$@"
