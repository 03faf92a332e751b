#!/usr/bin/env bash
# Set-up time before the first optimizer step of `gems train`, two binaries side by side:
# the compact T5 and a t5-small-shaped model (from scratch, synthetic data), cold and with the
# knowledge-basis cache warm (the second binary only, when it has the cache).
#
#   scripts/setup_time.sh BEFORE_BINARY AFTER_BINARY
#
# For each run: the wall time of `gems train --stop-after 1` and the seconds from "preparing data
# and model" to "training" in its log (everything before the first step). A Qwen2.5 directory
# can be measured the same way by hand: `gems train --model qwen2 --model-dir DIR --stop-after 1`.
set -u
before=$1; after=$2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
python3 - "$work/t5-small.json" <<'PY'
import json, sys
json.dump({"architectures": ["T5ForConditionalGeneration"], "model_type": "t5", "d_model": 512,
           "d_ff": 2048, "d_kv": 64, "num_heads": 8, "num_layers": 6, "num_decoder_layers": 6,
           "vocab_size": 32128, "feed_forward_proj": "relu", "relative_attention_num_buckets": 32,
           "relative_attention_max_distance": 128, "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6,
           "initializer_factor": 1.0, "pad_token_id": 0, "eos_token_id": 1,
           "decoder_start_token_id": 0, "tie_word_embeddings": True}, open(sys.argv[1], "w"))
PY
export XDG_CACHE_HOME=$work/cache
run() { # label binary model
  local flags=() out=$work/run-$RANDOM
  [ "$3" = t5-small ] && flags=(--model-config "$work/t5-small.json")
  local start; start=$(date +%s.%N)
  RUST_LOG=info "$2" train "${flags[@]}" --out "$out" --stop-after 1 --batch-size 8 >"$out.out" 2>"$out.err"
  local rc=$? end; end=$(date +%s.%N)
  local setup; setup=$(sed 's/\x1b\[[0-9;]*m//g' "$out.err" | python3 -c '
import re, sys, datetime
seen = {}
for line in sys.stdin:
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z", line)
    for key in ("preparing data and model", "training"):
        if m and re.search(r"INFO " + key + r"\b", line) and key not in seen:
            seen[key] = datetime.datetime.fromisoformat(m.group(1))
print("%.1f" % (seen["training"] - seen["preparing data and model"]).total_seconds() if len(seen) == 2 else "?")')
  printf "%-12s %-9s rc=%s  wall %6.1f s  before the first step %6s s\n" "$1" "$3" "$rc" "$(echo "$end - $start" | bc)" "$setup"
}
for model in compact t5-small; do
  run before "$before" $model
  run after-cold "$after" $model
  run after-cached "$after" $model
done
