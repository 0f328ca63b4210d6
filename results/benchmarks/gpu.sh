#!/usr/bin/env bash
# GPU figures (issues 19 and 29) in one call of a lent GPU machine, run from the repository root:
#     bash results/benchmarks/gpu.sh OUT_DIR [SECONDS] [PARTS]
# PARTS: a comma-separated list of runs, invariance, profile, notebooks, bench, or all (default).
# The machine's own python3 (jax with CUDA, flax, optax, orbax, torch) runs the repository as it
# is; tomli-w, the one dependency missing there, is installed from wheels carried in .whl/ if
# present. In order, each with its own time limit, stopping before SECONDS (default 540) are spent:
#   runs:       environment and a 2,000-step smoke run (stops the script if it fails); the faithful
#               sumsq command end to end (issue 29: <= 30 s); the faithful stepfit with 10,000 seeds
#               per group (20,000 models, up to 1,000,001 steps; <= 60 s); the neighbour tests.
#   invariance: whether a model's bits depend on its neighbours on this GPU, and what each cure
#               costs: the neighbour tests and a 1,000-model stepfit / 100-model sumsq rate under
#               (a) XLA's defaults, (b) float32 matmuls at full precision (no TF32), (c) XLA's
#               deterministic ops, (d) every sum of a model's step in a fixed order
#               (cpu-2core-session13/fixed_sums.py).
#   profile:    where a stepfit step's time goes: the kernels XLA emits for one chunk (an HLO dump,
#               counted), and the rate with and without CUDA graphs (command buffers).
#   notebooks:  both notebooks executed headless (quick mode), the device they name printed.
#   bench:      python -m jaxfit.bench at 10 / 100 / 1,000 / 10,000 models, PyTorch on this GPU.
# DRY=1 shrinks every run to seconds so the script can be checked end to end on a CPU.
# Everything lands in OUT_DIR: log.txt, bench.json, throughput.png, runs.tgz (the run folders
# without checkpoints and without the 20,000-model history/params).
set -u
out=$(realpath -m "${1:-runs/gpu}")
deadline=$(( $(date +%s) + ${2:-540} ))
parts=${3:-all}
here=$(cd "$(dirname "$0")" && pwd)
runs=/tmp/gpu_runs/$(date +%s)  # a fresh folder per call: a warm machine may hold an earlier call's
mkdir -p "$out" "$runs"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
if ls .whl/*.whl >/dev/null 2>&1; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
if [[ ${DRY:-0} == 1 ]]; then  # a CPU check of the script: every command, tiny sizes
    seeds=3 steps=(--set train.steps=3000) sumsq_size=(--set train.epochs=2 --set sweep.n_seeds=2) scale=10 bench_models=10 quick=(--quick)
else
    seeds=10000 steps=() sumsq_size=() scale=1000 bench_models=10,100,1000,10000 quick=()
fi
log() { echo "[$(date +%T)] $*" | tee -a "$out/log.txt"; }
left() { echo $(( deadline - $(date +%s) )); }
want() { [[ $parts == all || ,$parts, == *,$1,* ]]; }
timed() {  # timed NAME LIMIT CMD...: run CMD with a limit, log its wall time and exit code
    local name=$1 limit=$2; shift 2
    (( limit > $(left) )) && limit=$(left)
    if (( limit < 10 )); then log "$name: skipped, no time left"; return 1; fi
    log "$name: start (limit ${limit}s): $*"
    local t0=$(date +%s.%N)
    timeout --signal=INT --kill-after=20 "$limit" "$@" >>"$out/log.txt" 2>&1
    local rc=$?
    log "$name: exit $rc, wall $(python3 -c "print(round($(date +%s.%N) - $t0, 1))") s"
    return $rc
}
summary() {  # the run info of each run folder given
    for run in "$@"; do python3 - "$run" <<'EOF' 2>&1 | tee -a "$out/log.txt"
import json, sys
try:
    r = json.load(open(sys.argv[1] + "/summary.json"))["run"]
    print(sys.argv[1], {k: r.get(k) for k in ("device", "n_models", "steps_run", "compile_s", "run_s", "model_steps_per_s")})
except Exception as error:
    print(sys.argv[1], "no summary:", error)
EOF
    done
}
rate() {  # rate NAME WORKLOAD MODELS STEPS [PREFIX...]: one jaxfit.bench measurement, its JSON line logged
    local name=$1 spec="{\"implementation\":\"jaxfit\",\"workload\":\"$2\",\"n_models\":$3,\"steps\":$4}"; shift 4
    timed "rate $name $spec" 90 "$@" -m jaxfit.bench --one "$spec"
}
neighbours() {  # neighbours NAME [PREFIX...]: the neighbour tests (they run on the device jax sees)
    local name=$1; shift
    timed "neighbour tests $name" 120 "$@" -m pytest -q -x -p no:cacheprovider tests/test_train.py -k neighbours
}

log "device: $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | head -1)"
python3 -c "import jax, flax, optax, orbax.checkpoint, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__)" 2>&1 | tee -a "$out/log.txt"
git log -1 --format='commit %H %s' 2>/dev/null | tee -a "$out/log.txt"

if want runs; then
    timed smoke 120 python3 -m jaxfit.run --config stepfit --set train.steps=2000 --set sweep.n_seeds=2 --out $runs/smoke --quiet \
        || { log "smoke run failed: stopping"; exit 1; }
    timed sumsq_faithful 120 python3 -m jaxfit.run --config sumsq "${sumsq_size[@]}" --out $runs/sumsq_faithful
    timed stepfit_10000_seeds 150 python3 -m jaxfit.run --config stepfit --set sweep.n_seeds=$seeds "${steps[@]}" --out $runs/stepfit_10000_seeds
    neighbours default python3
    summary $runs/*/
    tar czf "$out/runs.tgz" -C "$runs" --exclude=checkpoints --exclude='stepfit_10000_seeds/history.npz' \
        --exclude='stepfit_10000_seeds/params.npz' . 2>>"$out/log.txt"
fi

if want invariance; then
    fixed=(python3 "$here/cpu-2core-session13/fixed_sums.py" pairwise)
    for variant in default highest deterministic fixed_sums; do
        case $variant in
            default) prefix=(python3) ;;
            highest) prefix=(env JAX_DEFAULT_MATMUL_PRECISION=highest python3) ;;
            deterministic) prefix=(env "XLA_FLAGS=${XLA_FLAGS:-} --xla_gpu_deterministic_ops=true" python3) ;;
            fixed_sums) prefix=("${fixed[@]}") ;;
        esac
        [[ $variant == default ]] || neighbours "$variant" "${prefix[@]}"
        rate "$variant" stepfit_narrow $scale 5000 "${prefix[@]}"
        rate "$variant" sumsq 100 900 "${prefix[@]}"
    done
fi

if want profile; then
    dump=/tmp/gpu_dump
    rm -rf $dump
    timed hlo_dump 120 env JAXFIT_COMPILE_CACHE=off "XLA_FLAGS=${XLA_FLAGS:-} --xla_dump_to=$dump --xla_dump_hlo_as_text" python3 -m jaxfit.run --config stepfit \
        --set sweep.n_seeds=$scale --set train.steps=20000 --out $runs/profile --quiet
    python3 - "$dump" <<'EOF' 2>&1 | tee -a "$out/log.txt"
import pathlib, re, sys
files = sorted(pathlib.Path(sys.argv[1]).glob("*jit_chunk.*after_optimizations.txt"))
if not files:
    sys.exit("no optimised chunk HLO dumped")
for path in files:  # each group's chunk (narrow, wide): what one step launches
    text = path.read_text()
    print(path.name, "lines", text.count("\n"))
    for kind in ("fusion(", "custom-call(", "while(", "conditional(", "sort(", "scatter(", "gather(", "copy("):
        print(f"  {kind[:-1]:12s} {text.count(' ' + kind)}")
    print("  fusion kinds", {k: len(re.findall(f"kind=k{k}", text)) for k in ("Loop", "Input", "Output", "Custom")})
EOF
    rate "command_buffers_default" stepfit_narrow $scale 20000 python3
    rate "command_buffers_off" stepfit_narrow $scale 20000 env "XLA_FLAGS=${XLA_FLAGS:-} --xla_gpu_enable_command_buffer=" python3
fi

if want notebooks; then
    timed notebooks 300 python3 - <<'EOF'
import os, tempfile, nbformat
from nbclient import NotebookClient
os.environ["JAXFIT_NOTEBOOK_QUICK"] = "1"
for name in ("sumsq", "stepfit"):
    notebook = nbformat.read(f"notebooks/{name}.ipynb", as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3", resources={"metadata": {"path": tempfile.mkdtemp()}}).execute()
    text = [o.get("text", "") for c in notebook.cells if c.cell_type == "code" for o in c.outputs]
    print(name, "ran;", "".join(line for t in text for line in t.splitlines(True) if "devices" in line).strip() or "no device line")
EOF
fi

budget=$(( $(left) - 45 ))
if want bench && (( budget > 30 )); then
    timed bench $(( budget + 40 )) python3 -m jaxfit.bench --models $bench_models --scaling $bench_models \
        --threads 8 --timeout 120 --budget "$budget" --out "$out" "${quick[@]}"
fi
log "done, $(left) s before the deadline"
