# Runs one network's share of a bench/run.sh matrix; sourced by bench/run.sh, which calls
# bench_network_main inside the emulated network (bench/netem/*.sh exported TW_NETEM_*).

# bench_run LOGDIR TIMEOUT_S CMD...: runs CMD bounded in time with its output in LOGDIR/output.log;
# on failure writes LOGDIR/failed.txt (the command, then the last 40 lines of output).
bench_run() {
  local dir=$1 limit=$2
  shift 2
  local status=0
  timeout --kill-after=30 "$limit" "$@" >"$dir/output.log" 2>&1 || status=$?
  if ((status != 0)); then
    {
      printf '%q ' "$@"
      echo
      ((status == 124)) && echo "bench/run.sh: timed out after $limit s"
      echo "exit status $status"
      tail -n 40 "$dir/output.log"
    } >"$dir/failed.txt"
  fi
  return "$status"
}

# Starts rank i of a PyTorch job in host i's namespace (TW_NETEM_NAMESPACES), rank 0 on host 1
# (MASTER_ADDR). Waits for all; when one fails the others are stopped at once.
bench_ddp_per_host() {
  local ranks=$1
  shift
  local -a namespaces addrs pids
  read -r -a namespaces <<<"$TW_NETEM_NAMESPACES"
  read -r -a addrs <<<"$TW_NETEM_ADDRS"
  local port=$((20000 + RANDOM % 20000)) rank status=0
  for ((rank = 0; rank < ranks; rank++)); do
    ip netns exec "${namespaces[rank]}" env RANK=$rank LOCAL_RANK=0 WORLD_SIZE=$ranks \
      MASTER_ADDR="${addrs[0]}" MASTER_PORT=$port GLOO_SOCKET_IFNAME=eth0 \
      OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 /usr/bin/python3 -B bench/peers/ddp_train.py "$@" &
    pids+=($!)
  done
  local remaining=$ranks pid
  while ((remaining > 0)); do
    local finished=0
    wait -n "${pids[@]}" 2>/dev/null || finished=$?
    remaining=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && remaining=$((remaining + 1)); done
    if ((finished != 0)); then
      status=$finished
      for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
      wait 2>/dev/null || true
      break
    fi
  done
  return "$status"
}

# The thinwire settings of a benchmark method, as --set arguments on one line. Compressed methods
# start communicating during backward (comm.overlap=on): their sync thread mostly waits on the
# network, so it does not take compute from the other ranks as an fp32 allreduce's copy loop does.
bench_thinwire_method_args() {
  case $1 in
    floor) echo "--set comm.gradient_sync=false" ;;
    thinwire-fp32) echo "" ;;
    thinwire-topk-ef) echo "--set compression.method=topk --set compression.ratio=0.01 --set compression.selection=sampled --set compression.fp16_values=true --set compression.feedback=ef --set comm.overlap=on" ;;
    thinwire-topk-econtrol) echo "--set compression.method=topk --set compression.ratio=0.01 --set compression.selection=sampled --set compression.fp16_values=true --set compression.feedback=econtrol --set comm.overlap=on" ;;
    thinwire-topk-tiny) echo "--set compression.method=topk --set compression.ratio=0.0001 --set compression.selection=sampled --set compression.fp16_values=true --set compression.feedback=ef --set comm.overlap=on" ;;
    thinwire-sign-ef) echo "--set compression.method=sign --set compression.feedback=ef --set comm.overlap=on" ;;
    thinwire-adamw) echo "" ;;
    thinwire-onebit-adam) echo "--set optim.name=onebit_adam --set optim.freeze_step=5" ;;
    thinwire-quest-w4a4) echo "--set qat.method=quest --set qat.w_bits=4 --set qat.a_bits=4 --set qat.variant=half" ;;
    thinwire-quest-w8a8) echo "--set qat.method=quest --set qat.w_bits=8 --set qat.a_bits=8 --set qat.variant=half" ;;
    thinwire-ste-w4a4) echo "--set qat.method=ste --set qat.w_bits=4 --set qat.a_bits=4" ;;
    *) echo "bench/run.sh: unknown thinwire method $1" >&2; return 2 ;;
  esac
}

# bench_network_main OUT NETWORK WORKLOAD RANKS STEPS REPEATS METHOD...
bench_network_main() {
  local out=$1 network=$2 workload=$3 ranks=$4 steps=$5 repeats=$6
  shift 6
  local -a methods=("$@")
  local limit=${BENCH_RUN_TIMEOUT_S:-1800}
  local bin=$PWD/build/release/bin/thinwire
  [[ -n ${THINWIRE_BENCH_BIN:-} ]] && bin=$THINWIRE_BENCH_BIN
  local config warmup=$((steps / 6))
  case $workload in
    fmnist-mlp) config=examples/fmnist_mlp.yaml ;;
    fmnist-cnn) config=examples/fmnist_cnn.yaml ;;
    text-llama) config=examples/text_llama.yaml ;;
    *) echo "bench/run.sh: unknown workload $workload" >&2; return 2 ;;
  esac
  # One job description for both frameworks: steps, batch, optimizer, schedule, seed, logging.
  local log_every=$(((steps + 29) / 30))
  local -a common_tw=(--set "train.steps=$steps" --set "optim.schedule.warmup_steps=$warmup"
    --set train.eval_every=0 --set train.checkpoint_every=0 --set train.resume=never
    --set "run.log_every=$log_every" --set run.progress=false --set run.name=run
    --set train.batch_per_rank=64 --set optim.lr=0.05 --set optim.momentum=0.9
    --set optim.nesterov=true --set run.seed=1 -n "$ranks")
  # The language model keeps its own batch, optimizer and learning rate (the example's).
  [[ $workload == text-llama ]] && common_tw=(--set "train.steps=$steps"
    --set "optim.schedule.warmup_steps=$warmup" --set train.eval_every=0
    --set train.checkpoint_every=0 --set train.resume=never --set "run.log_every=$log_every"
    --set run.progress=false --set run.name=run --set run.seed=1 -n "$ranks")
  local -a common_ddp=(--workload "$workload" --steps "$steps" --warmup-steps "$warmup"
    --batch-per-rank 64 --lr 0.05 --momentum 0.9 --nesterov --seed 1 --eval-every 0
    --log-every "$log_every" --threads 1)
  local -a net_tw
  case $TW_NETEM_MODE in
    shared) net_tw=(--set launch.transport=tcp --set launch.tcp_interface=lo
                    --set "launch.extra_args=[--mca,oob_tcp_if_include,lo]") ;;
    perhost) net_tw=(--hostfile "$TW_NETEM_HOSTFILE" --set launch.transport=tcp
                     --set launch.tcp_interface=eth0
                     --set "launch.extra_args=[--mca,plm_rsh_agent,$TW_NETEM_RSH_AGENT,--mca,oob_tcp_if_include,eth0,--mca,rtc,^hwloc]") ;;
  esac
  local rep method dir
  for ((rep = 1; rep <= repeats; rep++)); do
    for method in "${methods[@]}"; do
      dir=$out/$network/$method/rep$rep
      rm -rf "$dir"
      mkdir -p "$dir"
      local t0=$SECONDS ok=1
      case $method in
        thinwire-* | floor)
          local -a extra
          read -r -a extra <<<"$(bench_thinwire_method_args "$method")" || true
          bench_run "$dir" "$limit" "$bin" launch "$config" "${common_tw[@]}" "${net_tw[@]}" \
            "${extra[@]}" --set "run.output_dir=$dir" || ok=0
          [[ -f $dir/run/metrics.jsonl ]] && mv "$dir/run/metrics.jsonl" "$dir/metrics.jsonl"
          rm -rf "$dir/run" ;;
        ddp-*)
          local hook=${method#ddp-}
          if [[ $TW_NETEM_MODE == perhost ]]; then
            bench_run "$dir" "$limit" bash -c 'source bench/run_lib.sh; bench_ddp_per_host "$@"' \
              _ "$ranks" "${common_ddp[@]}" --hook "$hook" --out "$dir" || ok=0
          else
            GLOO_SOCKET_IFNAME=lo MASTER_ADDR=127.0.0.1 bench_run "$dir" "$limit" \
              bench/peers/run_local.sh "$ranks" "${common_ddp[@]}" --hook "$hook" --out "$dir" || ok=0
          fi ;;
        *) echo "bench/run.sh: unknown method $method" >&2; return 2 ;;
      esac
      if ((ok)) && ! grep -q '"kind": *"summary"' "$dir/metrics.jsonl" 2>/dev/null; then
        { echo "(no summary record)"; echo "the run exited 0 but wrote no summary to $dir/metrics.jsonl"; tail -n 40 "$dir/output.log"; } >"$dir/failed.txt"
        ok=0
      fi
      local spp=""
      ((ok)) && spp=$(sed -n 's/.*"seconds_per_step": *\([0-9.e+-]*\).*/\1/p' "$dir/metrics.jsonl" | tail -1)
      echo "bench/run.sh: $network $method rep $rep: $([[ $ok == 1 ]] && echo "ok, $spp s/step" || echo "FAILED ($(sed -n 2p "$dir/failed.txt"))") ($((SECONDS - t0)) s)" >&2
    done
  done
  return 0
}
