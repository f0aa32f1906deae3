#!/usr/bin/env bash
# Retrain the toy world from scratch on this machine (CPU only, no downloads): degraded photo patches from
# the installed wheels, then the toy base model (ToyUNet + ToyCLIP word table), then its fp16 export to
# weights/toy/toy_base.safetensors. Every stage is deterministic from the seeds below and resumable: rerun
# the script after a stop and it continues (patches are rebuilt only when incomplete, training resumes from
# its state file).
#
#   scripts/train_toy.sh                       # everything, defaults below
#   TOY_BASE_STEPS=2000 scripts/train_toy.sh   # a shorter base run
#
# Environment: TOY_OUT (out/toy), TOY_PATCHES (20000), TOY_PATCH_SEED (0), TOY_BASE_STEPS (20000),
# TOY_BASE_SEED (0), TOY_THREADS (1: torch threads of the training process), TOY_WEIGHTS (weights/toy),
# TOY_ADAPTER_STEPS (20000), TOY_ADAPTER_SEED (0).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-$root/.venv/bin/python}"
out="${TOY_OUT:-out/toy}"
count="${TOY_PATCHES:-20000}"
patch_seed="${TOY_PATCH_SEED:-0}"
base_steps="${TOY_BASE_STEPS:-20000}"
base_seed="${TOY_BASE_SEED:-0}"
adapter_steps="${TOY_ADAPTER_STEPS:-20000}"
adapter_seed="${TOY_ADAPTER_SEED:-0}"
threads="${TOY_THREADS:-1}"
weights="${TOY_WEIGHTS:-weights/toy}"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" HF_HUB_OFFLINE=1
t_all=$SECONDS

# 1. Patches: out/toy/patches/NNNNNN.png + .txt, manifest out/toy/patches.csv (degradation of each patch).
t=$SECONDS
if [[ -f "$out/patches.csv" && "$(($(wc -l < "$out/patches.csv") - 1))" == "$count" ]]; then
  echo "train_toy: patches: $count already in $out/patches"
else
  "$py" -m toy.patches --out "$out/patches" --count "$count" --seed "$patch_seed"
fi
echo "train_toy: patches took $((SECONDS - t)) s"

# 2. Base model from scratch (resumes from $out/base/state.pt; loss log $out/base/loss.csv).
t=$SECONDS
"$py" -m toy.train_base --data "$out/patches" --out "$out/base" --steps "$base_steps" --seed "$base_seed" \
  --threads "$threads"
echo "train_toy: base training took $((SECONDS - t)) s"

# 3. Export the EMA weights in fp16: the file the hidden loader node (toy/nodes) reads.
"$py" -m toy.export_base --state "$out/base/state.pt" --out "$weights/toy_base.safetensors" \
  --card "$weights/MODEL_CARD.md" --finished
echo "train_toy: base stages took $((SECONDS - t_all)) s in all"

# 4. Score the patches with PIQE (pyiqa, no weight file) at their native 64 px: scores.parquet + its norm table.
t=$SECONDS
"$py" -m training score --data "$out/patches" --metrics piqe --size 0 --out "$out/scores.parquet"
echo "train_toy: scoring took $((SECONDS - t)) s"

# 5. The IQA-Adapter on the toy base, the paper's recipe through the generic trainer; resumes when rerun.
t=$SECONDS
"$py" -m training train --base "$weights/toy_base.safetensors" --data "$out/patches" --scores "$out/scores.parquet" \
  --metrics piqe --resolution 64 --batch-size 32 --steps "$adapter_steps" --seed "$adapter_seed" \
  --out "$out/adapter" --resume latest --checkpoint-every 500 --log-every 50
echo "train_toy: adapter training took $((SECONDS - t)) s"

# 6. Export it in fp16 with its norm table: the file the toy demo and the proof test load.
"$py" -m training export --checkpoint "$out/adapter" --out "$weights/toy_adapter_piqe.safetensors" --dtype fp16
echo "train_toy: all stages took $((SECONDS - t_all)) s"
