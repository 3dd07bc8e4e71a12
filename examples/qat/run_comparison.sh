#!/bin/sh
# The QuEST comparison of docs/benchmarks.md ("Quantization-aware training (QuEST)"): the same
# shortened text_llama run (4 ranks, seed 1, STEPS optimizer steps, WARMUP warm-up steps) in full
# precision and with QuEST W8A8, W4A4, W2A2, W1A1 and the W4A4 STE baseline, one after another,
# then the W4A4 export evaluated with `thinwire eval --quantized`.
#
#   examples/qat/run_comparison.sh [THINWIRE_BINARY] [STEPS] [WARMUP] ["VARIANTS"]
set -eu
bin=${1:-build/release/bin/thinwire}
steps=${2:-200}
warmup=${3:-20}
variants=${4:-fp w8a8 w4a4 w4a4_ste w2a2 w1a1}
common="--set train.steps=$steps --set optim.schedule.warmup_steps=$warmup --set run.progress=false"
for variant in $variants; do
  if [ "$variant" = fp ]; then
    config=examples/text_llama.yaml
    name=quest_fp
  else
    config=examples/qat/text_llama_$variant.yaml
    name=quest_$variant
  fi
  rm -rf "runs/$name"
  # shellcheck disable=SC2086
  timeout 3600 "$bin" launch "$config" --set run.name=$name $common
done
checkpoint=$(ls -d runs/quest_w4a4/checkpoints/step-* | tail -n 1)
# shellcheck disable=SC2086
"$bin" quantize examples/qat/text_llama_w4a4.yaml --checkpoint "$checkpoint" \
  --out runs/quest_w4a4/quantized.twc $common
# shellcheck disable=SC2086
"$bin" eval examples/qat/text_llama_w4a4.yaml --checkpoint "$checkpoint" $common
# shellcheck disable=SC2086
"$bin" eval examples/qat/text_llama_w4a4.yaml --quantized runs/quest_w4a4/quantized.twc $common
