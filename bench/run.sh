#!/usr/bin/env bash
# End-to-end benchmark matrix: methods x emulated networks, side by side in one run on this
# machine, then tables in docs/benchmarks.md and PNG plots in docs/benchmarks/ (bench/report.py).
#
#   bench/run.sh MATRIX [--steps N] [--repeats R] [--out DIR] [--no-docs] [--networks a,b]
#                       [--methods a,b]
#   bench/run.sh MATRIX --from DIR      rewrite the docs (or DIR's report) from an earlier run
#
# Matrices:
#   baseline   fmnist-mlp, 4 ranks: thinwire uncompressed, PyTorch DDP over gloo (no hook, fp16
#              hook), and the compute-only floor (the same thinwire job with comm.gradient_sync:
#              false: each rank steps on its own gradient), on three networks:
#                unthrottled     all ranks in one namespace, TCP over an unshaped loopback
#                shared-1gbit    the same loopback shaped to 1 Gbit/s (bench/netem/shared_fabric.sh)
#                perhost-1gbit   4 hosts, one 1 Gbit/s port each (bench/netem/per_host.sh)
#   peers      fmnist-cnn, 4 ranks: thinwire, DDP none/fp16/PowerSGD/batched PowerSGD, floor,
#              on unthrottled and shared-1gbit (peer failures are recorded as results)
#   compression  fmnist-mlp, 4 ranks, shared-1gbit and perhost-1gbit: thinwire with top-k 1 %
#              + error feedback and with 1-bit sign + error feedback next to thinwire fp32, DDP
#              (no hook, fp16 hook) and the floor
#   smoke      fmnist-mlp, 2 ranks, 12 steps, 1 repeat, unthrottled + perhost: checks the harness
#   text-llama examples/text_llama.yaml (byte-level Llama, 4 ranks), shared-1gbit, 20 steps, 2
#              repeats: thinwire-adamw (float32 gradient allreduce), thinwire-onebit-adam (1-bit
#              Adam with freeze_step 5 = the 5 first steps every summary leaves out of
#              seconds_per_step, so the measured steps are all in the compression stage) and the
#              floor (AdamW with comm.gradient_sync: false)
#   text-llama-qat  the same job, unthrottled, 20 steps, 3 repeats: what quantization-aware
#              training costs per step: thinwire-adamw (full precision), thinwire-quest-w4a4,
#              thinwire-quest-w8a8 and thinwire-ste-w4a4 (qat.* as in examples/qat/)
# --networks and --methods run a subset; a matrix's extra methods run only when named there
# (compression: thinwire-topk-tiny, top-k 0.01 %, what synchronising costs by itself; and
# thinwire-topk-econtrol).
#
# Every (network, method) pair runs --repeats times (default 3), interleaved (rep 1 of every
# method, then rep 2, ...) so drift on the machine hits all methods alike. Each run is bounded by
# BENCH_RUN_TIMEOUT_S (default 1800 s). Results: DIR (default bench/results/MATRIX-<time>) in the
# layout bench/report.py reads (matrix.json, <network>/<method>/rep<k>/metrics.jsonl or
# failed.txt). Unless --no-docs, the section between the markers for MATRIX in
# docs/benchmarks.md is replaced and the plots go to docs/benchmarks/.
#
# Needs root and iproute2 for the emulated networks (it says so and exits 2 otherwise: no result
# is faked), Open MPI, and /usr/bin/python3 with python3-torch and python3-matplotlib
# (scripts/install-deps.sh installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# ---- internal entry point: runs inside an emulated network (see run_network below) -------------
if [[ ${1:-} == __network ]]; then
  shift
  source "$root/bench/run_lib.sh"
  bench_network_main "$@"
  exit $?
fi

usage() { sed -n '2,40p' "$0" | sed 's/^# \{0,1\}//'; }
[[ $# -ge 1 ]] || { usage >&2; exit 2; }
[[ $1 == -h || $1 == --help ]] && { usage; exit 0; }
matrix=$1
shift
steps="" repeats="" out="" docs=1 only_networks="" only_methods="" from=""
while (($#)); do
  case $1 in
    --steps) steps=${2:?--steps needs a value}; shift 2 ;;
    --repeats) repeats=${2:?--repeats needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --networks) only_networks=${2:?--networks needs a value}; shift 2 ;;
    --methods) only_methods=${2:?--methods needs a value}; shift 2 ;;
    --no-docs) docs=0; shift ;;
    --from) from=${2:?--from needs a results directory}; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench/run.sh: unknown option '$1'" >&2; usage >&2; exit 2 ;;
  esac
done

extra_methods=()
case $matrix in
  baseline)
    workload=fmnist-mlp ranks=4 steps=${steps:-60} repeats=${repeats:-3}
    networks=(unthrottled shared-1gbit perhost-1gbit)
    methods=(floor thinwire-fp32 ddp-none ddp-fp16) ;;
  peers)
    workload=fmnist-cnn ranks=4 steps=${steps:-100} repeats=${repeats:-3}
    networks=(unthrottled shared-1gbit)
    methods=(floor thinwire-fp32 ddp-none ddp-fp16 ddp-powersgd ddp-powersgd-batched) ;;
  compression)
    workload=fmnist-mlp ranks=4 steps=${steps:-60} repeats=${repeats:-3}
    networks=(shared-1gbit perhost-1gbit)
    methods=(floor thinwire-fp32 thinwire-topk-ef thinwire-sign-ef ddp-none ddp-fp16)
    # Only with --methods: top-k at 0.01 % + EF sends almost nothing and measures what
    # synchronising the ranks every step costs by itself.
    extra_methods=(thinwire-topk-tiny thinwire-topk-econtrol) ;;
  smoke)
    workload=fmnist-mlp ranks=2 steps=${steps:-12} repeats=${repeats:-1}
    networks=(unthrottled perhost-1gbit)
    methods=(floor thinwire-fp32 ddp-none) ;;
  text-llama)
    workload=text-llama ranks=4 steps=${steps:-20} repeats=${repeats:-2}
    networks=(shared-1gbit)
    methods=(floor thinwire-adamw thinwire-onebit-adam) ;;
  text-llama-qat)
    workload=text-llama ranks=4 steps=${steps:-20} repeats=${repeats:-3}
    networks=(unthrottled)
    methods=(thinwire-adamw thinwire-quest-w4a4 thinwire-quest-w8a8 thinwire-ste-w4a4) ;;
  *) echo "bench/run.sh: unknown matrix '$matrix' (baseline, peers, compression, smoke, text-llama, text-llama-qat)" >&2; exit 2 ;;
esac
[[ $steps =~ ^[0-9]+$ ]] && ((steps >= 6)) || { echo "bench/run.sh: --steps must be >= 6, got '$steps'" >&2; exit 2; }
[[ $repeats =~ ^[0-9]+$ ]] && ((repeats >= 1)) || { echo "bench/run.sh: --repeats must be >= 1, got '$repeats'" >&2; exit 2; }
if [[ -n $only_networks ]]; then
  IFS=, read -r -a wanted <<<"$only_networks"
  for n in "${wanted[@]}"; do
    [[ " ${networks[*]} " == *" $n "* ]] || { echo "bench/run.sh: matrix $matrix has no network '$n' (${networks[*]})" >&2; exit 2; }
  done
  networks=("${wanted[@]}")
fi
if [[ -n $only_methods ]]; then
  IFS=, read -r -a wanted <<<"$only_methods"
  for m in "${wanted[@]}"; do
    [[ " ${methods[*]} ${extra_methods[*]} " == *" $m "* ]] || { echo "bench/run.sh: matrix $matrix has no method '$m' (${methods[*]} ${extra_methods[*]})" >&2; exit 2; }
  done
  methods=("${wanted[@]}")
fi

write_report() {  # write_report RESULTS: tables, JSON and plots; into docs/ unless --no-docs
  local results=$1
  local report=(/usr/bin/python3 -B bench/report.py "$results" --json "$results/summary.json")
  if ((docs)); then
    mkdir -p docs/benchmarks
    "${report[@]}" --markdown "$results/report.md" --plots docs/benchmarks --prefix "$matrix"
    /usr/bin/python3 - docs/benchmarks.md "$matrix" "$results/report.md" <<'EOF'
import sys
doc_path, matrix, report_path = sys.argv[1:]
begin, end = f"<!-- bench/run.sh {matrix}: begin -->", f"<!-- bench/run.sh {matrix}: end -->"
doc = open(doc_path).read()
# The report's headings sit two levels below this document's section for the matrix.
lines = ["##" + l if l.startswith("#") else l for l in open(report_path).read().strip().split("\n")]
block = begin + "\n" + "\n".join(lines) + "\n" + end
if begin in doc and end in doc:
    doc = doc[:doc.index(begin)] + block + doc[doc.index(end) + len(end):]
else:
    doc = doc.rstrip() + f"\n\n## `bench/run.sh {matrix}`\n\n{block}\n"
open(doc_path, "w").write(doc)
EOF
    echo "bench/run.sh: docs/benchmarks.md updated; plots in docs/benchmarks/" >&2
  else
    "${report[@]}" --markdown "$results/report.md" --plots "$results" --prefix "$matrix"
  fi
  cat "$results/report.md"
}

if [[ -n $from ]]; then
  [[ -f $from/matrix.json ]] || { echo "bench/run.sh: --from $from: no matrix.json there" >&2; exit 2; }
  write_report "$from"
  exit 0
fi

# ---- prerequisites: say what is missing, never fake a result -----------------------------------
[[ $(id -u) -eq 0 ]] || { echo "bench/run.sh: needs root for network namespaces (emulated networks); nothing measured" >&2; exit 2; }
for tool in ip tc mpirun; do
  command -v $tool >/dev/null || { echo "bench/run.sh: '$tool' not found (scripts/install-deps.sh); nothing measured" >&2; exit 2; }
done
/usr/bin/python3 -c 'import torch, matplotlib' 2>/dev/null ||
  { echo "bench/run.sh: /usr/bin/python3 needs torch and matplotlib (scripts/install-deps.sh); nothing measured" >&2; exit 2; }
bin=$root/build/release/bin/thinwire
# THINWIRE_BENCH_BIN: measure another build's executable (e.g. build/onebit/bin/thinwire).
[[ -n ${THINWIRE_BENCH_BIN:-} ]] && bin=$THINWIRE_BENCH_BIN
[[ -x $bin ]] || scripts/build.sh release thinwire

out=${out:-bench/results/$matrix-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$out"
out=$(cd "$out" && pwd)
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1

/usr/bin/python3 - "$out/matrix.json" "$matrix" "$workload" "$ranks" "$steps" "$repeats" \
  "${networks[*]}" "${methods[*]}" <<'EOF'
import json, os, platform, subprocess, sys, time
path, matrix, workload, ranks, steps, repeats, networks, methods = sys.argv[1:]
labels = {
    "unthrottled": "unshaped loopback TCP, one namespace",
    "shared-1gbit": "1 Gbit/s shared fabric (one shaped loopback)",
    "perhost-1gbit": "1 Gbit/s per host (4 namespaces, shaped veth ports)",
}
method_info = {
    "thinwire-fp32": ("thinwire, uncompressed", "thinwire", False),
    "thinwire-topk-ef": ("thinwire, top-k 1 % (sampled threshold, fp16 values) + error feedback", "thinwire", False),
    "thinwire-topk-econtrol": ("thinwire, top-k 1 % (sampled threshold, fp16 values) + EControl", "thinwire", False),
    "thinwire-topk-tiny": ("thinwire, top-k 0.01 % (sampled threshold, fp16 values) + error feedback: the cost of synchronising at all", "thinwire", False),
    "thinwire-sign-ef": ("thinwire, 1-bit sign (scale per 2048) + error feedback", "thinwire", False),
    "thinwire-adamw": ("thinwire, AdamW, float32 gradient allreduce", "thinwire", False),
    "thinwire-onebit-adam": ("thinwire, 1-bit Adam in its compression stage (freeze_step 5)", "thinwire", False),
    "thinwire-quest-w4a4": ("thinwire, AdamW, QuEST W4A4 (Half) quantization-aware training", "thinwire", False),
    "thinwire-quest-w8a8": ("thinwire, AdamW, QuEST W8A8 (Half) quantization-aware training", "thinwire", False),
    "thinwire-ste-w4a4": ("thinwire, AdamW, W4A4 straight-through (STE) quantization-aware training", "thinwire", False),
    "floor": ("compute-only floor (no gradient communication)", "thinwire", True),
    "ddp-none": ("PyTorch DDP (gloo), no hook", "pytorch-ddp", False),
    "ddp-fp16": ("PyTorch DDP (gloo), fp16_compress_hook", "pytorch-ddp", False),
    "ddp-powersgd": ("PyTorch DDP (gloo), powerSGD_hook rank 1", "pytorch-ddp", False),
    "ddp-powersgd-batched": ("PyTorch DDP (gloo), batched_powerSGD_hook rank 1", "pytorch-ddp", False),
}
mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
cpu = ""
try:
    cpu = [l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")][0]
except Exception:
    pass
machine = f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB, {platform.system()} {platform.release()}"
json.dump({
    "matrix": matrix, "workload": workload, "ranks": int(ranks), "steps": int(steps),
    "repeats": int(repeats), "machine": machine,
    "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "networks": [{"name": n, "label": labels[n]} for n in networks.split()],
    "methods": [dict(name=m, label=method_info[m][0], framework=method_info[m][1],
                     # text-llama-qat: the reference is the full-precision step.
                     **({"floor": True} if method_info[m][2] or (
                         matrix == "text-llama-qat" and m == "thinwire-adamw") else {}))
                for m in methods.split()],
}, open(path, "w"), indent=1)
EOF

echo "bench/run.sh: matrix $matrix ($workload, $ranks ranks, $steps steps, $repeats repeats) -> $out" >&2
started=$SECONDS
status=0
for network in "${networks[@]}"; do
  case $network in
    unthrottled) wrap=(bench/netem/shared_fabric.sh --rate none --) ;;
    shared-1gbit) wrap=(bench/netem/shared_fabric.sh --rate 1gbit --) ;;
    perhost-1gbit) wrap=(bench/netem/per_host.sh --hosts "$ranks" --rate 1gbit --) ;;
  esac
  echo "bench/run.sh: network $network" >&2
  "${wrap[@]}" bash "$root/bench/run.sh" __network "$out" "$network" "$workload" "$ranks" \
    "$steps" "$repeats" "${methods[@]}" || status=$?
  ((status == 0)) || { echo "bench/run.sh: network $network failed to set up or run (status $status)" >&2; exit "$status"; }
done
echo "bench/run.sh: all runs done in $((SECONDS - started)) s" >&2

write_report "$out"
