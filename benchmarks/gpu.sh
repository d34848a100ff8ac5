#!/usr/bin/env bash
# Train the clinical and remote-sensing recipes from the preprocessing cache on one GPU with
# bf16-mixed precision; report training samples/s and GPU utilisation (nvidia-smi samples).
#
#   bash benchmarks/gpu.sh [EPOCHS] [WORKERS]        # defaults: 5 epochs, 4 DataLoader workers
#
# Needs a CUDA GPU, nvidia-smi and the modfuse package with its extras. Everything is written
# under ${WORK:-/tmp/modfuse-gpu-bench} (caches, runs, logs), never into the repository.
# Recipes: recipes/quickstart.yaml (clinical: chest X-ray DICOM + 12-lead ECG + labs, 600
# synthetic patients, generated on first use; set N to enlarge it) and
# recipes/remote_sensing.yaml (per-pixel Sentinel-2 time series + elevation; set EOPATCH to
# the eopatch-slovenia folder). samples/s = training samples x epochs / fit wall time (it
# includes validation and the first-epoch start-up, so it is a lower bound on the training rate).
set -euo pipefail
EPOCHS=${1:-5}
WORKERS=${2:-4}
WORK=${WORK:-/tmp/modfuse-gpu-bench}
N=${N:-600}
EOPATCH=${EOPATCH:-../shared/data/eopatch-slovenia}
mkdir -p "$WORK"
command -v nvidia-smi >/dev/null || { echo "gpu.sh: nvidia-smi not found: this benchmark needs a CUDA GPU" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

run_one() {  # name recipe [overrides...]
  local name=$1 recipe=$2; shift 2
  local cache="$WORK/cache-$name" root="$WORK/run-$name"
  [ -d "$cache" ] || modfuse prepare-cache --config "$recipe" "$@" -o "$cache" --num_workers "$WORKERS"
  python - "$recipe" "$cache" "$root" "$EPOCHS" "$WORKERS" "$WORK/$name.yaml" <<'EOF'
import sys, yaml
recipe, cache, root, epochs, workers, out = sys.argv[1:]
r = yaml.safe_load(open(recipe))
batch = r["data"]["init_args"].get("batch_size", 32)
transform = r["data"]["init_args"].get("train_transform")
r["data"] = {"class_path": "modfuse.data.cache.CachedDataModule",
             "init_args": {"cache_dir": cache, "batch_size": batch, "num_workers": int(workers), "pin_memory": True}}
if transform:
    r["data"]["init_args"]["train_transform"] = transform
r.update(compare=[], test_after_fit=False)
r.pop("num_threads", None)
r["trainer"].update(max_epochs=int(epochs), default_root_dir=root, accelerator="gpu", devices=1,
                    precision="bf16-mixed", enable_progress_bar=False)
yaml.safe_dump(r, open(out, "w"))
EOF
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 500 > "$WORK/$name.util" &
  local smi=$!
  local start end
  start=$(date +%s.%N)
  modfuse fit --config "$WORK/$name.yaml" > "$WORK/$name.log" 2>&1
  end=$(date +%s.%N)
  kill "$smi"
  python - "$cache" "$start" "$end" "$EPOCHS" "$WORK/$name.util" "$name" <<'EOF'
import json, sys
cache, start, end, epochs, util, name = sys.argv[1:]
index = json.load(open(f"{cache}/index.json"))
n_train = len(index["splits"]["train"]) if index["splits"] else len(index["ids"])
seconds = float(end) - float(start)
values = [float(v) for v in open(util).read().split() if v.strip()]
mean = sum(values) / len(values) if values else float("nan")
print(f"{name}: {n_train * int(epochs) / seconds:.0f} training samples/s over {epochs} epochs "
      f"({seconds:.0f} s fit), GPU utilisation mean {mean:.0f}% max {max(values, default=float('nan')):.0f}% "
      f"({len(values)} samples)")
EOF
}

run_one clinical recipes/quickstart.yaml --data.init_args.n "$N"
run_one remote_sensing recipes/remote_sensing.yaml --data.init_args.root "$EOPATCH"
