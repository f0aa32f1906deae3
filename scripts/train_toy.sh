#!/usr/bin/env bash
# Retrain the toy world from scratch on this machine (CPU only, no downloads): degraded whole-photo pictures
# from the installed wheels, the toy's own quality net (its IQA metric, toy_quality) and its scores of the
# pictures, the toy base model (ToyUNet + ToyCLIP word table), the toy IQA-Adapter on toy_quality, the toy
# reference adapter (on the quality net's embedding), the toy GenzIQA file, the fp16 exports in weights/toy, the measured sweep and the model card. Every stage is
# deterministic from the seeds below (up to the CPU's float rounding) and resumable: rerun the script after
# a stop and it continues (pictures are rebuilt only when incomplete, a finished quality net is kept, each
# training resumes from its state).
#
#   scripts/train_toy.sh                       # everything, the shipped files' settings
#   TOY_BASE_STEPS=1500 scripts/train_toy.sh   # a shorter base run
#
# Environment: TOY_OUT (out/toy), TOY_PATCHES (8000), TOY_PATCH_SEED (0), TOY_NET_STEPS (3000),
# TOY_BASE_STEPS (4000), TOY_REFINER_STEPS (750), TOY_BASE_SEED (0), TOY_ADAPTER_STEPS (5000),
# TOY_ADAPTER_REFINER_STEPS (1500), TOY_ADAPTER_SEED (0), TOY_REFERENCE_STEPS (1500),
# TOY_ADAPTER_LR (1e-3), TOY_GENZIQA_BUDGETS ("4000 8000": step counts exported and compared on validation),
# TOY_PROCESSES (adapter processes under accelerate launch, 2), TOY_THREADS (1 torch thread per adapter
# process), TOY_BASE_THREADS (2 torch threads for the base),
# TOY_WEIGHTS (weights/toy), TOY_SEEDS (8: seeds of the measured sweep).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-$root/.venv/bin/python}"
out="${TOY_OUT:-out/toy}"
count="${TOY_PATCHES:-8000}"
patch_seed="${TOY_PATCH_SEED:-0}"
base_steps="${TOY_BASE_STEPS:-4000}"
refiner_steps="${TOY_REFINER_STEPS:-750}"
net_steps="${TOY_NET_STEPS:-3000}"
genziqa_budgets="${TOY_GENZIQA_BUDGETS:-4000 8000}"
base_seed="${TOY_BASE_SEED:-0}"
adapter_steps="${TOY_ADAPTER_STEPS:-5000}"
adapter_refiner_steps="${TOY_ADAPTER_REFINER_STEPS:-1500}"
adapter_seed="${TOY_ADAPTER_SEED:-0}"
reference_steps="${TOY_REFERENCE_STEPS:-1500}"
adapter_lr="${TOY_ADAPTER_LR:-1e-3}"
procs="${TOY_PROCESSES:-2}"
threads="${TOY_THREADS:-1}"
base_threads="${TOY_BASE_THREADS:-2}"
weights="${TOY_WEIGHTS:-weights/toy}"
seeds="${TOY_SEEDS:-8}"
export OMP_NUM_THREADS="$threads" MKL_NUM_THREADS="$threads" HF_HUB_OFFLINE=1
t_all=$SECONDS
mkdir -p "$out"
# Each stage's time, printed and kept in $out/times.txt (resumed runs add lines; the model card sums them).
stage() { echo "train_toy: $1 took $((SECONDS - t)) s" | tee -a "$out/times.txt"; t=$SECONDS; }
t=$SECONDS

# 1. Pictures: out/toy/patches/NNNNNN.png + .txt, manifest out/toy/patches.csv (degradation of each picture).
if [[ -f "$out/patches.csv" && "$(($(wc -l < "$out/patches.csv") - 1))" == "$count" ]]; then
  echo "train_toy: pictures: $count already in $out/patches"
else
  "$py" -m toy.patches --out "$out/patches" --count "$count" --seed "$patch_seed"
fi
stage pictures

# 2. The toy's quality net on pictures of its own (seeds 100 and 101), then its toy_quality scores of the
#    adapter's pictures: scores.parquet + its norm table, as `python -m training score` writes pyiqa's.
if [[ ! -f "$weights/toy_quality_net.safetensors" ]]; then
  "$py" -m toy.quality_net train --work "$out/quality_net" --out "$weights/toy_quality_net.safetensors" \
    --steps "$net_steps"
fi
"$py" -m toy.quality_net score --net "$weights/toy_quality_net.safetensors" --data "$out/patches" \
  --out "$out/scores.parquet"
stage "quality net and scoring"

# 3. Base model, in two runs (each resumes from its state.pt): a) from scratch without the refiner's
#    cross-attention, b) that block added (a no-op at first) and the pixel refiner trained alone, the UNet and
#    word table frozen, so the fine scale gets a layer the adapter patches without changing what the base
#    draws (docs/training.md, "The second toy world"). Its EMA weights exported in fp16.
OMP_NUM_THREADS="$base_threads" MKL_NUM_THREADS="$base_threads" "$py" -m toy.train_base --data "$out/patches" \
  --out "$out/base" --steps "$base_steps" --seed "$base_seed" --threads "$base_threads" --refine-attention 0
"$py" -m toy.export_base --state "$out/base/state.pt" --out "$out/base_stage1.safetensors"
OMP_NUM_THREADS="$base_threads" MKL_NUM_THREADS="$base_threads" "$py" -m toy.train_base --data "$out/patches" \
  --out "$out/base_refiner" --init "$out/base_stage1.safetensors" --refine-attention 32 --train refiner \
  --steps "$((base_steps + refiner_steps))" --lr 5e-4 --ema 0.995 --seed "$base_seed" --threads "$base_threads"
"$py" -m toy.export_base --state "$out/base_refiner/state.pt" --out "$weights/toy_base.safetensors"
"$py" -m toy.recognize --ckpt "$weights/toy_base.safetensors" --seeds "$seeds" --out "$out/recognize" \
  --json "$out/recognize.json"
stage "base training"

# 4. The adapter: the paper's recipe through the generic trainer, on $procs processes (DDP over gloo;
#    accelerate's CPU processes: torchrun's launcher (--multi_gpu), kept on the CPU; batch 32 per process).
#    With the flag (the official script's default): the dropped vector, all zeros, then differs from every
#    target, so the node's default uncond is truly unconditioned (docs/training.md, "The flag").
#    As the shipped file was made: a) on the first base (four attn2 sites), then b) continued on the final
#    base, its fifth site (the refiner's) starting as a new adapter's layers do (--init-adapter).
launch=("$py" -m accelerate.commands.launch --num_processes "$procs" --num_machines 1 --dynamo_backend no --mixed_precision no)
[[ "$procs" -gt 1 ]] && launch+=(--multi_gpu)
ACCELERATE_USE_CPU=true PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "${launch[@]}" -m training train \
  --plugin toy --base "$out/base_stage1.safetensors" --data "$out/patches" --scores "$out/scores.parquet" --metrics toy_quality \
  --use-flag --resolution 64 --batch-size 32 --lr "$adapter_lr" --steps "$adapter_steps" --seed "$adapter_seed" \
  --out "$out/adapter" --resume latest --checkpoint-every 250 --log-every 25
"$py" -m training export --checkpoint "$out/adapter" --out "$out/adapter_stage1.safetensors" --dtype fp16
ACCELERATE_USE_CPU=true PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "${launch[@]}" -m training train \
  --plugin toy --base "$weights/toy_base.safetensors" --data "$out/patches" --scores "$out/scores.parquet" --metrics toy_quality \
  --use-flag --resolution 64 --batch-size 32 --lr "$adapter_lr" --steps "$adapter_refiner_steps" --seed "$adapter_seed" \
  --out "$out/adapter_refiner" --resume latest --checkpoint-every 250 --log-every 25 \
  --init-adapter "$out/adapter_stage1.safetensors"
"$py" -m training export --checkpoint "$out/adapter_refiner" --out "$weights/toy_adapter_quality.safetensors" --dtype fp16
stage "adapter training"

# 4b. The reference adapter (Reference Quality Transfer): every picture's embedding by the toy's spec (the
#     quality net's last stage, mean and std), computed once, then the same recipe with each picture as its
#     own reference, on the final base, from scratch.
PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "$py" -m training embed --plugin toy --device cpu \
  --spec "$weights/toy_quality_embedding_spec.json" --resolution 64 --data "$out/patches" --out "$out/embeddings.parquet"
ACCELERATE_USE_CPU=true PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" "${launch[@]}" -m training train \
  --kind reference --embeddings "$out/embeddings.parquet" --plugin toy --base "$weights/toy_base.safetensors" \
  --data "$out/patches" --resolution 64 --batch-size 32 --lr "$adapter_lr" --steps "$reference_steps" \
  --seed "$adapter_seed" --out "$out/reference" --resume latest --checkpoint-every 250 --log-every 25
"$py" -m training export --checkpoint "$out/reference" --out "$weights/toy_adapter_reference.safetensors" --dtype fp16
stage "reference adapter training"

# 5. GenzIQA on the new base: labelled pictures (train seed 0; validation seed 1, which chooses the number of
#    steps; test seed 2, which no choice has seen), the authors' training with the toy's in-vocabulary
#    prompts, exported at each budget of $genziqa_budgets (one run, resumed), the budget with the best
#    validation SRCC shipped, and its test correlation written to out/toy/genziqa/test.json (the card quotes it).
#    Trained on the first base (the same UNet; the refiner's attention triples the cost of a step), measured
#    on the shipped one.
for split in "train 4000 0" "val 300 1" "test 300 2"; do
  set -- $split
  [[ -f "$out/genziqa/$1.labels.csv" ]] || "$py" -m toy.genziqa_data --out "$out/genziqa/$1" --count "$2" --seed "$3"
done
best="" best_srcc="-2"
for steps in $genziqa_budgets; do
  file="$out/genziqa/steps$steps.safetensors"
  [[ -f "$file" ]] || "$py" -m training genziqa-train --plugin toy --base "$out/base_stage1.safetensors" \
    --images "$out/genziqa/train" --labels "$out/genziqa/train.labels.csv" --out "$out/genziqa/run" \
    --steps "$steps" --batch-size 8 --resolution 64 --lr 3e-3 --max-timestep 20 --prompts "a photo" "of" \
    --resume latest --export "$file"
  "$py" scripts/genziqa_toy_eval.py --file "$file" --images "$out/genziqa/val" --labels "$out/genziqa/val.labels.csv" --no-niqe \
    --base "$weights/toy_base.safetensors" \
    --json "$out/genziqa/val$steps.json"
  srcc="$("$py" -c 'import json, sys; print(json.load(open(sys.argv[1]))["genziqa"]["srcc"])' "$out/genziqa/val$steps.json")"
  if "$py" -c 'import sys; sys.exit(not float(sys.argv[1]) > float(sys.argv[2]))' "$srcc" "$best_srcc"; then
    best="$file" best_srcc="$srcc"
  fi
done
echo "train_toy: GenzIQA: $(basename "$best") has the best validation SRCC ($best_srcc)"
cp "$best" "$weights/toy_genziqa.safetensors"
"$py" scripts/genziqa_toy_eval.py --file "$weights/toy_genziqa.safetensors" --images "$out/genziqa/test" \
  --labels "$out/genziqa/test.labels.csv" --json "$out/genziqa/test.json"
stage "GenzIQA"

# 6. Measure the sweep through the real host's prompt queue (two captions in the picture, every caption in the
#    report: the paper's relative gain over scale 0, content kept, subjects shown), then write the model card.
"$py" scripts/toy_sweep.py --seeds "$seeds" --captions all --report --out "$out/sweep"
mkdir -p docs/images  # the README's first picture and its plot
cp "$out/sweep/grid.png" docs/images/toy_sweep_grid.png
cp "$out/sweep/score_vs_target.png" docs/images/toy_score_vs_target.png
cp "$out/sweep/report.md" docs/toy_sweep_report.md
"$py" scripts/toy_reference.py --seeds "$seeds" --out "$out/reference_sheet"
cp "$out/reference_sheet/reference_sheet.png" docs/images/toy_reference_sheet.png
stage "sweep"
"$py" -m toy.card --work "$out" --weights "$weights" --out "$weights/MODEL_CARD.md"
echo "train_toy: all stages took $((SECONDS - t_all)) s"
