#!/usr/bin/env bash
# Trainer overhead: seconds per step of `thinwire train` next to the same loop written directly
# against libtorch and MPI (bench/baselines/plain_loop.cc), same config, same ranks, alternating
# runs in one invocation. Prints a Markdown table with medians and the ratio.
#   bench/train_overhead.sh [CONFIG] [RANKS] [STEPS] [REPEATS]
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:-examples/fmnist_mlp.yaml}
ranks=${2:-4}
steps=${3:-60}
repeats=${4:-3}
bin=build/release/bin
[[ -x $bin/thinwire && -x $bin/thinwire_plain_loop ]] || scripts/build.sh release thinwire thinwire_plain_loop
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
sets=(--set train.steps=$steps --set train.eval_every=0 --set train.checkpoint_every=0 --set optim.schedule.warmup_steps=0
      --set run.log_every=$steps --set run.progress=false --set train.resume=never
      --set run.output_dir=$out/runs --set run.name=overhead)
mpi=(mpirun -n "$ranks" --oversubscribe --bind-to none)
thinwire_times=()
plain_times=()
for ((i = 1; i <= repeats; i++)); do
  t=$("${mpi[@]}" $bin/thinwire train "$config" "${sets[@]}" 2>&1 |
      sed -n 's/.*per step (rank 0):.* total \([0-9.e-]*\) s.*/\1/p')
  p=$("${mpi[@]}" $bin/thinwire_plain_loop "$config" "${sets[@]}" 2>&1 |
      sed -n 's/.*seconds_per_step=\([0-9.e-]*\).*/\1/p')
  [[ -n $t && -n $p ]] || { echo "train_overhead: a run failed (thinwire='$t', plain='$p')" >&2; exit 1; }
  echo "repeat $i: thinwire $t s/step, plain loop $p s/step" >&2
  thinwire_times+=("$t")
  plain_times+=("$p")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
mt=$(median "${thinwire_times[@]}")
mp=$(median "${plain_times[@]}")
echo "| config | ranks | steps | thinwire s/step (median of $repeats) | plain libtorch+MPI s/step | ratio |"
echo "|---|---|---|---|---|---|"
echo "| $config | $ranks | $steps | $mt | $mp | $(awk -v a="$mt" -v b="$mp" 'BEGIN {printf "%.3f", a/b}') |"
