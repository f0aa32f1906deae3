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
# TOY_BASE_SEED (0), TOY_THREADS (1: torch threads of the training process), TOY_WEIGHTS (weights/toy).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-$root/.venv/bin/python}"
out="${TOY_OUT:-out/toy}"
count="${TOY_PATCHES:-20000}"
patch_seed="${TOY_PATCH_SEED:-0}"
base_steps="${TOY_BASE_STEPS:-20000}"
base_seed="${TOY_BASE_SEED:-0}"
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

# ---------------------------------------------------------------------------------------------------------
# Adapter stages (the training package: python -m training score / train / export) go below this line:
# score $out/patches, train an IQA-Adapter on $weights/toy_base.safetensors, export it into $weights/.
# ---------------------------------------------------------------------------------------------------------
