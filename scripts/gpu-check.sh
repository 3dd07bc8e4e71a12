#!/usr/bin/env bash
# Runs THERE, on a GPU machine (no internet, PyTorch with CUDA in python3, nvcc, CMake, ninja, no
# Debian packages): builds thinwire against the libtorch of the Python environment and NCCL from
# the nvidia-nccl package (or /usr/local/cuda), with the .deb files that scripts/gpu-deps.sh put
# into .deps/ unpacked (dpkg -x) into a private prefix, never into /. Then runs the `gpu` ctest
# tier, the kernel benchmark and two short text_llama runs on one GPU with single-rank NCCL (QuEST
# W4A4; top-k 1 % with error feedback), and writes a markdown report with the logs next to it.
#   scripts/gpu-check.sh [OUT_DIR]       default: $OUT, else out/gpu-check
# Sized for < 8 minutes on 16 cores and one H100/H200. Without a GPU (or without a CUDA-enabled
# libtorch, as when rehearsing on the development machine with THINWIRE_TORCH_PREFIX pointing at
# Debian's libtorch) the GPU steps are reported as not run. Environment overrides:
#   THINWIRE_TORCH_PREFIX  libtorch's CMake prefix   THINWIRE_NCCL_ROOT  dir with include/nccl.h
#   THINWIRE_DEPS_PREFIX   where .deps is unpacked   THINWIRE_GPU_BUILD  the build directory
#   THINWIRE_TRAIN_STEPS   steps per training run (default 40)
#   THINWIRE_GPU_PARTS     which parts run, comma-separated (default tests,bench,train): e.g.
#                          `train` builds only the thinwire executable and runs the two trainings
set -uo pipefail
cd "$(dirname "$0")/.."
# Not launched by mpirun or srun: stale launcher variables (one GPU image sets PMIX_RANK) would
# make comm::WorldInfo expect a multi-rank job.
for variable in $(env | grep -oE '^(PMIX_|OMPI_COMM_WORLD_|SLURM_)[A-Z_]*'); do unset "$variable"; done
root=$PWD
out=${1:-${OUT:-$root/out/gpu-check}}
mkdir -p "$out"
prefix=${THINWIRE_DEPS_PREFIX:-/tmp/thinwire-deps}
build=${THINWIRE_GPU_BUILD:-$root/build/gpu-check}
# env -u: nproc honours OMP_NUM_THREADS, which HPC environments often set to 1.
jobs=${THINWIRE_BUILD_JOBS:-$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)}
steps=${THINWIRE_TRAIN_STEPS:-40}
parts=,${THINWIRE_GPU_PARTS:-tests,bench,train},
wants() { [[ $parts == *,$1,* ]]; }
targets=(thinwire)
wants tests && targets+=(gpu_tests)
wants bench && targets+=(thinwire_gpu_kernel_bench)
report=$out/report.md
started=$(date +%s)
summary=()
say() { echo "gpu-check [$(( $(date +%s) - started ))s]: $*"; }
record() { summary+=("| $1 | $2 | $(( $(date +%s) - $3 )) s |"); say "$1: $2"; }

# --- the machine ---------------------------------------------------------------------------
gpu_name=$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null \
           | head -1)
[[ -n $gpu_name ]] || gpu_name="no GPU visible (nvidia-smi absent or failed)"
say "device: $gpu_name"

# --- dependencies: the Debian packages into a private prefix --------------------------------
t=$(date +%s)
mkdir -p "$prefix"
debs=0
for deb in .deps/*.deb; do
  [[ -f $deb ]] || continue
  dpkg -x "$deb" "$prefix" && debs=$((debs + 1))
done
multiarch=$prefix/usr/lib/x86_64-linux-gnu
export LD_LIBRARY_PATH=$multiarch:$multiarch/openmpi/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
record "unpack .deps" "$debs packages into $prefix" "$t"

# --- libtorch, NCCL, nvcc, C++ standard ------------------------------------------------------
py_site=$(python3 -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))' \
          2>/dev/null)
torch_version=$(python3 -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)' \
                2>/dev/null || echo "not importable")
torch_prefix=${THINWIRE_TORCH_PREFIX:-$(python3 -c \
  'import torch; print(torch.utils.cmake_prefix_path)' 2>/dev/null)}
nccl_root=${THINWIRE_NCCL_ROOT:-}
if [[ -z $nccl_root && -n $py_site && -d $py_site/nvidia ]]; then
  header=$(find "$py_site/nvidia" -name nccl.h -path '*include*' 2>/dev/null | head -1)
  [[ -n $header ]] && nccl_root=$(dirname "$(dirname "$header")")
fi
[[ -n $nccl_root && -f $nccl_root/include/nccl.h ]] || nccl_root=/usr/local/cuda
nccl_library=$(find "$nccl_root" -name 'libnccl.so*' 2>/dev/null | sort | head -1)
nvcc=$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)
cxx_standard=17
torch_include=$(dirname "$(dirname "$torch_prefix")")/include
if [[ -f $torch_include/c10/macros/Macros.h ]] &&
   ! echo '#include <c10/macros/Macros.h>' | c++ -std=c++17 -fsyntax-only -x c++ \
       -I"$torch_include" - 2>/dev/null; then
  cxx_standard=20  # this libtorch's headers refuse C++17
fi
say "torch $torch_version at $torch_prefix; NCCL $nccl_root ($nccl_library); nvcc $nvcc;" \
    "C++$cxx_standard"

# --- configure and build ---------------------------------------------------------------------
t=$(date +%s)
cmake -S "$root" -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DTHINWIRE_WITH_CUDA=ON -DTHINWIRE_CXX_STANDARD=$cxx_standard \
  -DCMAKE_CUDA_COMPILER="$nvcc" -DCMAKE_CUDA_ARCHITECTURES=90 \
  -DCMAKE_PREFIX_PATH="$torch_prefix;$prefix/usr" \
  -DNCCL_INCLUDE_DIR="$nccl_root/include" ${nccl_library:+-DNCCL_LIBRARY="$nccl_library"} \
  -DPKG_CONFIG_EXECUTABLE=/nonexistent -DMPI_SKIP_COMPILER_WRAPPER=ON -DMPI_CXX_SKIP_MPICXX=ON \
  -DMPI_CXX_HEADER_DIR="$multiarch/openmpi/include" -DMPI_CXX_LIB_NAMES=mpi \
  -DMPI_mpi_LIBRARY="$multiarch/openmpi/lib/libmpi.so" -DMPIEXEC_EXECUTABLE=/bin/false \
  -DZLIB_INCLUDE_DIR="$prefix/usr/include" -DZLIB_LIBRARY="$prefix/lib/x86_64-linux-gnu/libz.so.1" \
  > "$out/configure.log" 2>&1
configured=$?
if [[ $configured -ne 0 ]]; then
  record "configure" "FAILED (configure.log)" "$t"
else
  record "configure" "ok" "$t"
  t=$(date +%s)
  # -k 0: one call shows every compile error.
  ninja -C "$build" -k 0 -j "$jobs" "${targets[@]}" \
    > "$out/build.log" 2>&1
  built=$?
  record "build (${targets[*]})" \
    "$([[ $built -eq 0 ]] && echo ok || echo "FAILED: $(grep -c 'error' "$out/build.log") error lines (build.log)")" "$t"
fi
have_gpu=0
[[ ${configured:-1} -eq 0 && ${built:-1} -eq 0 ]] && nvidia-smi >/dev/null 2>&1 && have_gpu=1

# --- the gpu tier ----------------------------------------------------------------------------
if [[ ${built:-1} -eq 0 ]] && wants tests; then
  t=$(date +%s)
  ctest --test-dir "$build" -L '^gpu$' --output-on-failure -j 4 --timeout 300 \
    > "$out/tests.log" 2>&1
  tests_rc=$?
  record "ctest -L gpu" "$(grep -E 'tests passed|tests failed' "$out/tests.log" | tail -1)$(
    grep -q 'Not Run\|Skipped' "$out/tests.log" && echo "; $(grep -c '\*\*\*Skipped' "$out/tests.log") skipped")" "$t"
fi

# --- kernel benchmark ------------------------------------------------------------------------
if [[ $have_gpu -eq 1 ]] && wants bench; then
  t=$(date +%s)
  "$build/bin/thinwire_gpu_kernel_bench" --mib 256 --iterations 20 --out "$out/kernels.md" \
    > "$out/bench.log" 2>&1
  record "kernel benchmark (256 MiB, median of 20)" "rc $? (kernels.md)" "$t"
else
  record "kernel benchmark" "not run: no GPU, no build, or not in THINWIRE_GPU_PARTS" "$(date +%s)"
fi

# --- text_llama on one GPU, single-rank NCCL --------------------------------------------------
fortunes=$prefix/usr/share/games/fortunes
train() {  # name log config extra-sets...
  local name=$1 log=$2 config=$3
  shift 3
  local t0=$(date +%s)
  timeout 120 "$build/bin/thinwire" train "$config" --set train.device=cuda \
    --set comm.backend=nccl --set train.steps=$steps --set train.eval_every=0 \
    --set optim.schedule.warmup_steps=10 --set train.threads=4 --set data.path="$fortunes" \
    --set run.output_dir="$build/runs" --set run.name="$name" "$@" > "$out/$log" 2>&1
  local rc=$?
  local last=$(grep -iE 'loss' "$out/$log" | tail -1 | cut -c1-160)
  record "text_llama $name ($steps steps)" "rc $rc; last: ${last:-none} ($log)" "$t0"
}
if [[ $have_gpu -eq 1 ]] && wants train; then
  train quest_w4a4 train-quest.log examples/qat/text_llama_w4a4.yaml
  train topk_ef train-topk.log examples/text_llama.yaml --set compression.method=topk \
    --set compression.ratio=0.01 --set compression.feedback=ef
else
  record "text_llama runs" "not run: no GPU, no build, or not in THINWIRE_GPU_PARTS" "$(date +%s)"
fi

# --- report ----------------------------------------------------------------------------------
{
  echo "# thinwire gpu-check"
  echo
  echo "- device: $gpu_name"
  echo "- torch: $torch_version; NCCL: ${nccl_library:-$nccl_root}; nvcc: $($nvcc --version 2>/dev/null | tail -1)"
  echo "- host: $(nproc) cores; C++$cxx_standard; commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  echo "- total: $(( $(date +%s) - started )) s"
  echo
  echo "| step | result | time |"
  echo "|---|---|---|"
  printf '%s\n' "${summary[@]}"
  if [[ -f $out/kernels.md ]]; then
    echo
    echo "## Kernels (256 MiB of float32 per call)"
    echo
    cat "$out/kernels.md"
  fi
  if [[ -f $out/tests.log ]]; then
    echo
    echo "## gpu tier"
    echo
    echo '```'
    grep -E 'Test +#|tests passed|tests failed|Skipped|Failed' "$out/tests.log" | tail -40
    echo '```'
  fi
} > "$report"
cat "$report"
