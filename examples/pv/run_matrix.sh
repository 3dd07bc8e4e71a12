#!/usr/bin/env bash
# The PV-Tuning comparison of docs/benchmarks.md ("PV-Tuning"): RTN, P-only, STE and PV on the
# trained text_llama checkpoint, 2 bits, the same steps, seeds 1..3, one process each, then
# the table and the curves (examples/pv/plot_pv.py).
#
#   examples/pv/run_matrix.sh BUILD_DIR TEACHER_CHECKPOINT OUT_DIR [extra --set ...]
set -euo pipefail
build=${1:?build dir}
teacher=${2:?full-precision checkpoint dir}
out=${3:?output dir}
shift 3
mkdir -p "$out"
config=$(dirname "$0")/text_llama_pv.yaml
for seed in 1 2 3; do
  for method in rtn p_only ste pv; do
    if [[ $method == rtn && $seed != 1 ]]; then
      # RTN has no randomness: the same model for every seed.
      continue
    fi
    name=s${seed}_${method}
    if [[ -f $out/$name/pv_metrics.jsonl ]] && grep -q pv_summary "$out/$name/pv_metrics.jsonl"; then
      continue
    fi
    # PV_LOCK: a flock file serialising heavy runs on a shared machine.
    timeout 1200 ${PV_LOCK:+flock "$PV_LOCK"} nice -n 10 "$build/bin/thinwire" quantize "$config" --checkpoint "$teacher" --method "$method" \
      --set run.seed=$seed --set run.name=$name --set run.output_dir="$out" "$@" \
      2>&1 | tee "$out/$name.log" | grep -E "^pv method|step .*: validation"
  done
done
/usr/bin/python3 "$(dirname "$0")/plot_pv.py" "$out"
