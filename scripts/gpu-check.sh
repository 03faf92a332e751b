#!/usr/bin/env bash
# One-shot GPU check for a lent GPU machine (see DEVELOPERS.md): one command, about 8 minutes,
# one JSON under $OUT.
#
#   1. the adapter the backend opens;
#   2. the golden-fixture logits (gems-models/tests/fixtures) on $BACKEND against flex: max error;
#   3. `gems bench train` for each preset (AdamW, GaLore, GEMS: step time, refresh cost,
#      throughput, state, peak memory, achieved vs measured matmul rate);
#   4. `gems bench decode`;
#   5. the default `gems train --backend $BACKEND`, with its test metrics.
#
# It runs a release binary built elsewhere and carried over (the GPU machine has no registry):
#   cargo build --release -p gems-cli --features vulkan && mkdir -p gpu-bin \
#     && cp target/release/gems gpu-bin/ && strip gpu-bin/gems     # <= 64 MiB
# and then, on the GPU machine, from the repository root (carry `gpu-bin`):
#   scripts/gpu-check.sh
#
# Every size is an environment variable, so the same script rehearses on Mesa's software
# Vulkan driver (lavapipe) with a `--features wgpu` build, e.g.
#   BACKEND=wgpu GEMS_BIN=/tmp/gems PRESETS="compact:1" METHODS=adamw,gems STEPS=2 WARMUP=1 \
#   BATCH=2 MATMUL=256 BENCH_ARGS="--prompt-tokens 8 --target-tokens 2" \
#   DECODE_ARGS="--preset compact --layers 1 --new-tokens 4 --repeats 1 --candidates 10 --beam-width 4 --batch-size 2" \
#   TRAIN_ARGS="--data SMALL_DIR --max-steps 1 --epochs 1 --validation-requests 4 --beam-width 4" \
#   CUBECL_AUTOTUNE_LEVEL=minimal PART_TIMEOUT=1200 OUT=/tmp/gpu-check scripts/gpu-check.sh
# (SMALL_DIR: `gems data convert synthetic --users 12 --categories 2 --items-per-category 10
# --out SMALL_DIR && gems data split SMALL_DIR`; lavapipe compiles every kernel slowly: on the
# shared two-core machine the rehearsal takes about 20 minutes, its compact bench part 5 to 10).
#
#   BACKEND      backend name for gems (vulkan; wgpu, cuda as compiled in)
#   GEMS_BIN     the gems binary (gpu-bin/gems)
#   OUT          folder of the result, gpu-check.json (./gpu-check-out)
#   PRESETS      presets of `gems bench train`, each optionally `:LAYERS`
#                ("compact t5-small t5-base qwen2.5-0.5b")
#   METHODS      methods of `gems bench train` (adamw,galore,gems)
#   STEPS WARMUP BATCH   timed steps, warm-up steps, batch size of `gems bench train` (3, 2, 8)
#   MATMUL       side of the square matmul measuring the device's f32 rate (4096)
#   BENCH_ARGS   extra arguments of `gems bench train` (e.g. "--prompt-tokens 8 --target-tokens 2")
#   DECODE_ARGS  arguments of `gems bench decode` ("--preset t5-small")
#   TRAIN_ARGS   extra arguments of `gems train` (none: the default run)
#   PART_TIMEOUT seconds allowed to each part (240)
set -uo pipefail

BACKEND=${BACKEND:-vulkan}
GEMS_BIN=${GEMS_BIN:-gpu-bin/gems}
OUT=${OUT:-./gpu-check-out}
PRESETS=${PRESETS:-"compact t5-small t5-base qwen2.5-0.5b"}
METHODS=${METHODS:-adamw,galore,gems}
STEPS=${STEPS:-3}
WARMUP=${WARMUP:-2}
BATCH=${BATCH:-8}
MATMUL=${MATMUL:-4096}
BENCH_ARGS=${BENCH_ARGS:-}
DECODE_ARGS=${DECODE_ARGS:-"--preset t5-small"}
TRAIN_ARGS=${TRAIN_ARGS:-}
PART_TIMEOUT=${PART_TIMEOUT:-240}
FIXTURES=gems-models/tests/fixtures

if [[ ! -x $GEMS_BIN ]]; then
    echo "gpu-check: no gems binary at $GEMS_BIN (set GEMS_BIN)" >&2
    exit 2
fi
command -v python3 >/dev/null || { echo "gpu-check: python3 is needed to read and write JSON" >&2; exit 2; }
export XDG_RUNTIME_DIR=${XDG_RUNTIME_DIR:-$(mktemp -d)}
# A GPU machine without a Vulkan loader: unpack the carried one (see the device notes).
if ! ldconfig -p | grep -q libvulkan && compgen -G ".gl/*.deb" >/dev/null; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [[ -z ${VK_DRIVER_FILES:-} && -f $nvidia_icd ]]; then
    export VK_DRIVER_FILES=$nvidia_icd
fi

mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
PARTS=()
started=$(date +%s)

# part NAME COMMAND...: runs COMMAND with a time limit, its standard output to NAME.out and
# standard error to NAME.err, and records the exit status and seconds in NAME.meta.
part() {
    local name=$1
    shift
    local begin=$(date +%s.%N)
    echo "== $name: $*" >&2
    timeout "$PART_TIMEOUT" "$@" >"$WORK/$name.out" 2>"$WORK/$name.err"
    local status=$?
    local seconds=$(python3 -c "print(round($(date +%s.%N) - $begin, 1))")
    echo "$status $seconds" >"$WORK/$name.meta"
    echo "   exit $status after ${seconds}s" >&2
    PARTS+=("$name")
}

if command -v nvidia-smi >/dev/null; then
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >"$WORK/nvidia-smi.txt" 2>&1
fi

# 2. Golden logits: the fixture's first row (no padding) on both backends.
for fixture in t5-v1_0 qwen2-tied; do
    args=$(python3 - "$FIXTURES/$fixture/reference.json" <<'EOF'
import json, sys
reference = json.load(open(sys.argv[1]))
ids = reference["input_ids"][0]
line = "--input-ids " + ",".join(map(str, ids))
if "t5" in sys.argv[1]:
    labels = reference["labels"][0]
    line += " --decoder-input-ids 0,%d,%d" % (labels[0], labels[1])
print(line)
EOF
)
    for backend in "$BACKEND" flex; do
        # shellcheck disable=SC2086
        part "logits-$fixture-$backend" "$GEMS_BIN" model logits --model-dir "$FIXTURES/$fixture" $args --backend "$backend"
    done
done

# 3. Training steps per preset.
for entry in $PRESETS; do
    preset=${entry%%:*}
    layers=()
    [[ $entry == *:* ]] && layers=(--layers "${entry#*:}")
    # shellcheck disable=SC2086
    part "bench-train-$preset" "$GEMS_BIN" bench train --preset "$preset" "${layers[@]}" \
        --backend "$BACKEND" --methods "$METHODS" --steps "$STEPS" --warmup "$WARMUP" \
        --batch-size "$BATCH" --matmul-size "$MATMUL" $BENCH_ARGS --json
done

# 4. Decoding.
# shellcheck disable=SC2086
part bench-decode "$GEMS_BIN" bench decode $DECODE_ARGS --backend "$BACKEND" --json

# 5. The default training run, evaluated on the test split.
# shellcheck disable=SC2086
part train "$GEMS_BIN" train --backend "$BACKEND" --out "$WORK/run" $TRAIN_ARGS

python3 - "$WORK" "$OUT/gpu-check.json" "$BACKEND" "$started" "${PARTS[@]}" <<'EOF'
import json, os, sys, time

work, target, backend, started, parts = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5:]

def read(name, suffix):
    path = os.path.join(work, name + suffix)
    return open(path, errors="replace").read() if os.path.exists(path) else ""

def parsed(text):
    try:
        return json.loads(text)
    except ValueError:
        return None

result = {"backend": backend, "parts": {}}
if read("nvidia-smi", ".txt"):
    result["nvidia_smi"] = read("nvidia-smi", ".txt").strip()
for name in parts:
    status, seconds = read(name, ".meta").split()
    entry = {"exit": int(status), "seconds": float(seconds)}
    output = parsed(read(name, ".out"))
    if output is None:
        entry["stdout_tail"] = read(name, ".out")[-2000:]
    else:
        entry["result"] = output
    if int(status) != 0:
        entry["stderr_tail"] = read(name, ".err")[-2000:]
    result["parts"][name] = entry

# Max error of every fixture's logits against flex.
errors = {}
for name, entry in result["parts"].items():
    if name.startswith("logits-") and name.endswith("-flex"):
        fixture = name[len("logits-"):-len("-flex")]
        other = result["parts"].get("logits-%s-%s" % (fixture, backend), {})
        a, b = entry.get("result"), other.get("result")
        if a and b and a["shape"] == b["shape"]:
            errors[fixture] = max(abs(x - y) for x, y in zip(a["logits"], b["logits"]))
        else:
            errors[fixture] = None
result["logits_max_error_vs_flex"] = errors
for entry in result["parts"].values():
    if entry.get("result") and "logits" in entry["result"]:
        entry["result"]["logits"] = "(%d values)" % len(entry["result"]["logits"])

machines = [e["result"]["machine"] for e in result["parts"].values()
            if isinstance(e.get("result"), dict) and "machine" in e["result"]]
result["machine"] = machines[0] if machines else None

run = os.path.join(work, "run")
for file, key in (("metrics.json", "train_metrics"), ("manifest.json", "train_manifest")):
    path = os.path.join(run, file)
    if os.path.exists(path):
        result[key] = json.load(open(path))
result["seconds"] = round(time.time() - started, 1)
json.dump(result, open(target, "w"), indent=1)

# The summary for people.
print("adapter:", (result["machine"] or {}).get("device"), "| backend", backend)
if "nvidia_smi" in result:
    print("nvidia-smi:", result["nvidia_smi"])
for fixture, error in errors.items():
    print("logits %-10s max |%s - flex| = %s" % (fixture, backend, error))
for name, entry in result["parts"].items():
    report = entry.get("result")
    if name.startswith("bench-train-") and isinstance(report, dict):
        print("\n%s: %s, %.1f M parameters, %d tokens/step, matmul %s GFLOP/s" % (
            name, report["model"], report["parameters"] / 1e6, report["tokens_per_step"],
            "%.0f" % report["matmul_gflops"] if report.get("matmul_gflops") else "n/a"))
        for m in report["methods"]:
            ratio = m.get("vs_adamw") or {}
            peak = m.get("peak_device_bytes")
            print("  %-8s step %8.1f ms  refresh %8s ms  amortised %7.2f ms  %8.0f tok/s  %7.1f GFLOP/s  state %8.1f MB  peak %8s MB  vs AdamW %s" % (
                m["method"], m["step_ms"],
                "%.1f" % m["refresh_step_ms"] if m.get("refresh_step_ms") is not None else "-",
                m.get("amortised_refresh_ms") or 0.0, m["tokens_per_s"], m["gflops"],
                m["optimizer_state_bytes"] / 1e6,
                "%.0f" % (peak / 1e6) if peak else "n/a",
                "%.2f" % ratio["effective_step"] if ratio else "-"))
    elif name == "bench-decode" and isinstance(report, dict):
        print("\nbench-decode: %s" % report["model"])
        for m in report["measures"]:
            print("  %-40s %9.1f ms  %8.2f requests/s" % (m["measure"], m["median_ms"], m["requests_per_s"]))
    if entry["exit"] != 0:
        print("\n%s FAILED (exit %d): %s" % (name, entry["exit"], entry.get("stderr_tail", "")[-400:]))
print("\ntrain:", "metrics" if "train_metrics" in result else "no metrics",
      "| seconds", (result.get("train_manifest") or {}).get("training_seconds"))
print("total %.0f s; written %s" % (result["seconds"], target))
EOF
