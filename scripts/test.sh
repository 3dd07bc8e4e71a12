#!/usr/bin/env bash
# Installs what is missing, builds, and runs every ctest tier this machine supports:
#   unit       single process
#   multirank  ranks as threads over the local backend, against single-process references
#   gpu        CUDA kernels and the NCCL backend (tests/gpu); without a GPU every one is Skipped
#   mpi        real mpiexec -n 1..7 (needs Open MPI)
#   fault      kills a rank of a real mpirun job; the others must fail fast
#   netem      multi-host launches over emulated networks (root, iproute2, network namespaces)
#   slurm      a one-node SLURM cluster runs launch/slurm/train.sbatch (root, network
#              namespaces; installs slurm-wlm and munge when missing)
#   tsan       the control plane's threads (store, TCP store, heartbeat, status server, op queue,
#              timeline) under ThreadSanitizer, built apart in build/tsan-control
#              (scripts/sanitize.sh control)
#   fuzz       the libFuzzer targets of fuzz/ (clang, ASan+UBSan), 15 s each (scripts/fuzz.sh)
# A tier whose requirements are missing is reported as not run; it never counts as passed.
#   scripts/test.sh [extra ctest args]      e.g. -R Config
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/build.sh release
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
# The gpu tier runs everywhere: without a usable GPU (or with THINWIRE_WITH_CUDA off) each of its
# tests reports Skipped, never Passed (tests/gpu/CMakeLists.txt), and ctest lists them at the end.
labels="unit|multirank|gpu"
if command -v mpiexec >/dev/null; then
  labels+="|mpi|fault"
else
  echo "test.sh: mpiexec not found: the mpi and fault tiers do not run" >&2
fi
# The netem tier needs to create network namespaces: probe for that rather than guess.
netem_probe=twnet$$-probe
if [[ $(id -u) -ne 0 ]]; then
  echo "test.sh: not root: the netem tier (network namespaces) does not run" >&2
elif ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
  echo "test.sh: iproute2 (ip, tc) missing: the netem and slurm tiers do not run" >&2
elif ! command -v mpiexec >/dev/null; then
  echo "test.sh: mpiexec missing: the netem and slurm tiers do not run" >&2
elif ! ip netns add "$netem_probe" 2>/dev/null; then
  echo "test.sh: cannot create a network namespace here: the netem and slurm tiers do not run" >&2
else
  ip netns del "$netem_probe"
  labels+="|netem|slurm"
fi
ctest --test-dir build/release -L "^($labels)\$" --output-on-failure -j "${THINWIRE_TEST_JOBS:-2}" "$@"
# The tsan tier (a whole-suite run only, not with extra ctest arguments): the torch-free control
# plane and its unit tests built with -fsanitize=thread; any report fails the run. The whole tree
# under TSan and ASan+UBSan (scripts/sanitize.sh tsan|asan) takes hours on 2 cores: by hand.
if (($# == 0)); then
  scripts/sanitize.sh control
fi
# The fuzz tier (a whole-suite run only, not with extra ctest arguments): every libFuzzer target
# for THINWIRE_FUZZ_SECONDS (default 15) from its seeds, with ASan+UBSan (scripts/fuzz.sh).
if (($# == 0)); then
  rc=0
  scripts/fuzz.sh "${THINWIRE_FUZZ_SECONDS:-15}" || rc=$?
  if ((rc == 3)); then
    echo "test.sh: clang/libFuzzer missing: the fuzz tier does not run" >&2
  elif ((rc != 0)); then
    exit "$rc"
  fi
fi
