#!/usr/bin/env bash
# The EmbeddingGemma head variants of docs/results.md, one after another, then their evaluation and the frontier.
# Every run is recipes/embeddinggemma-head-mixed.yaml plus the overrides below. The first run encodes the recipe's
# training and held-out texts once (hours with EmbeddingGemma on 2 CPU cores, in resumable shards); the others read
# that cache and train in minutes. The evaluation encodes SciFact, DL19 and STS-B once through the frozen base's memo
# (hours again: SciFact's abstracts alone are over an hour), shared by every system; the memo is saved as it grows,
# so a stopped evaluation resumes.
# PRECISION (default auto: bfloat16 where the CPU computes it natively, float32 elsewhere) is the precision the
# frozen base encodes in, for training and evaluation alike; bfloat16 was 2.6x faster on a CPU with AVX512-BF16
# (docs/results/runs/embeddinggemma-head-mixed/bf16-speed.txt).
#   [PRECISION=auto|float32|bfloat16] [ONLY="name ..."] [HELDOUT_ONLY=1] bash recipes/embeddinggemma-head-variants.sh [RUNS_DIR] [REPORTS_DIR]
set -euo pipefail
RUNS=${1:-output/embeddinggemma-head-mixed}
REPORTS=${2:-$RUNS/reports}
PY=${PYTHON:-python}
PRECISION=${PRECISION:-auto}
BASE=${EMBEDDINGGEMMA:-$HOME/.cache/ragcun/embeddinggemma-300m}   # ../shared/tools/get-embeddinggemma.sh puts it here
RECIPE=recipes/embeddinggemma-head-mixed.yaml
DATA=../shared/data
mkdir -p "$RUNS"

# sigreg-random is the recipe as committed (the MiniLM recommendation); mnrl, sigreg and deep-sigreg-anchor are the
# MiniLM page's contrasts; the *-by-role runs test queries and documents against N(0, I) apart (EmbeddingGemma's
# two roles, under their two prompts, are clouds with different means); isotropic is full whitening followed by a
# trained choice of 512 whitened directions (N(0, I) on the training texts by construction; MNRL alone), of 384, 256,
# 192 and 128, and of 256 with the anchor to the base's ranking.
declare -A VARIANTS=(
  [sigreg-random]=""
  [mnrl]="--lambda_isotropy 0"
  [sigreg]="--num_principal 64"
  [deep-sigreg-anchor]="--num_principal 64 --lambda_anchor 1.0 --head_layers 2"
  [sigreg-random-by-role]="--isotropy_by_role true"
  [sigreg-by-role]="--num_principal 64 --isotropy_by_role true"
  [isotropic]="--isotropic_head true --lambda_isotropy 0 --learning_rate 2e-3"
  [isotropic-256d]="--isotropic_head true --lambda_isotropy 0 --learning_rate 2e-3 --output_dim 256"
  [isotropic-128d]="--isotropic_head true --lambda_isotropy 0 --learning_rate 2e-3 --output_dim 128"
  [isotropic-192d]="--isotropic_head true --lambda_isotropy 0 --learning_rate 2e-3 --output_dim 192"
  [isotropic-384d]="--isotropic_head true --lambda_isotropy 0 --learning_rate 2e-3 --output_dim 384"
  [isotropic-256d-anchor]="--isotropic_head true --lambda_isotropy 0 --learning_rate 2e-3 --output_dim 256 --lambda_anchor 1.0"
)
ORDER=(sigreg-random mnrl sigreg deep-sigreg-anchor sigreg-random-by-role sigreg-by-role isotropic isotropic-384d
       isotropic-256d isotropic-192d isotropic-128d isotropic-256d-anchor)
# ONLY="name ..." trains (and measures) just those variants; HELDOUT_ONLY=1 stops after the held-out figures (the
# union's, then each role's), before any test set is encoded.
if [ -n "${ONLY:-}" ]; then read -r -a ORDER <<< "$ONLY"; fi

for name in "${ORDER[@]}"; do
  if [ -f "$RUNS/$name/final/modules.json" ]; then echo "$name: trained"; continue; fi
  # shellcheck disable=SC2086
  $PY train.py --config "$RECIPE" --base_model "$BASE" --encode_precision "$PRECISION" ${VARIANTS[$name]} \
      --output_dir "$RUNS/$name" \
      > "$RUNS/$name.log" 2>&1
  echo "$name: trained"
done

# The post-hoc alternative: the base's embeddings whitened with tempered eigenvalues, on the heads' 512 axes.
$PY benchmarks/head_frontier.py whiten --recipe "$RECIPE" --base "$BASE" --encode-precision "$PRECISION" --out "$RUNS/whitening" --output-dim 512
# ... and full whitening on the top 256 and 128 axes: the free counterparts of the narrower isotropic heads (their
# step 0).
for width in 256 128; do
  $PY benchmarks/head_frontier.py whiten --recipe "$RECIPE" --base "$BASE" --encode-precision "$PRECISION" \
      --out "$RUNS/whitening" --output-dim "$width" --gammas 1
done

# Held-out isotropy is measured on 4,096 texts: the recipe's 2,069 held-out texts (1,954 once those that are also
# training texts are left out), topped up with rows of the same mix the recipe never drew (encoded once, cached).
HELDOUT=4096
# Every system's held-out isotropy and Gaussian figures (is_isotropic, is_gaussian), from the training distribution
# alone: no test set is read.
$PY benchmarks/head_frontier.py frontier --recipe "$RECIPE" --base "$BASE" --encode-precision "$PRECISION" \
    --heldout-texts "$HELDOUT" --out "$RUNS/heldout" --system "embeddinggemma-base=$BASE" \
    $(for name in "${ORDER[@]}"; do echo --system "$name=$RUNS/$name/final"; done) \
    --system "gamma-1-512d=$RUNS/whitening/gamma-1-512d" --system "gamma-1-256d=$RUNS/whitening/gamma-1-256d" \
    > "$RUNS/heldout.log" 2>&1
# The held-out queries and documents apart: each role's isotropy, and the gap between their means.
$PY benchmarks/head_frontier.py roles --recipe "$RECIPE" --base "$BASE" --encode-precision "$PRECISION" \
    --heldout-texts "$HELDOUT" --out "$RUNS/roles" \
    $(for name in "${ORDER[@]}"; do echo --system "$name=$RUNS/$name/final"; done) \
    --system "gamma-0-512d=$RUNS/whitening/gamma-0-512d" --system "gamma-1-512d=$RUNS/whitening/gamma-1-512d" \
    --system "gamma-1-256d=$RUNS/whitening/gamma-1-256d" > "$RUNS/roles.log" 2>&1
if [ "${HELDOUT_ONLY:-0}" = 1 ]; then exit 0; fi

MODELS=()
SYSTEMS=()
for whitened in gamma-0-512d gamma-0.25-512d gamma-0.5-512d gamma-1-512d gamma-1-256d gamma-1-128d; do
  MODELS+=(--model "$RUNS/whitening/$whitened" --name "$whitened")
  SYSTEMS+=(--system "$whitened=$RUNS/whitening/$whitened")
done
for name in "${ORDER[@]}"; do
  MODELS+=(--model "$RUNS/$name/final" --name "$name")
  SYSTEMS+=(--system "$name=$RUNS/$name/final")
done
mkdir -p "$REPORTS"
# SciFact (with STS-B) first, then DL19: each corpus is encoded by the base once, for every system; the frontier is
# drawn after each, from the reports there are so far.
REPORTED=()
for data in scifact trec-dl19-passage; do
  $PY evaluate.py "${MODELS[@]}" --baseline "$BASE" --name embeddinggemma-base --frozen-base "$BASE" \
      --data "$DATA/$data" --max-seq-length 256 --precision "$PRECISION" --output-dir "$REPORTS/$data" > "$REPORTS-$data.log" 2>&1
  $PY benchmarks/paired_ndcg.py --data "$DATA/$data" --max-seq-length 256 --precision "$PRECISION" --system "embeddinggemma-base=$BASE" \
      "${SYSTEMS[@]}" > "$REPORTS/paired-$data.txt"
  if [ "$data" = scifact ]; then
    $PY evaluate.py "${MODELS[@]}" --baseline "$BASE" --name embeddinggemma-base --frozen-base "$BASE" \
        --sts "$DATA/stsbenchmark" --max-seq-length 256 --precision "$PRECISION" --output-dir "$REPORTS/sts" > "$REPORTS-sts.log" 2>&1
  fi
  REPORTED+=("$REPORTS/$data")
  $PY benchmarks/head_frontier.py frontier --recipe "$RECIPE" --base "$BASE" --encode-precision "$PRECISION" \
      --heldout-texts "$HELDOUT" "${SYSTEMS[@]}" \
      --reports "${REPORTED[@]}" --out "$REPORTS/frontier" > "$REPORTS/frontier.log" 2>&1
done

# The isotropic heads against the isotropic systems a user gets for free (full whitening on the same number of top
# axes), paired.
for data in scifact trec-dl19-passage; do
  $PY benchmarks/paired_ndcg.py --data "$DATA/$data" --max-seq-length 256 --precision "$PRECISION" \
      --system "gamma-1-512d=$RUNS/whitening/gamma-1-512d" --system "isotropic=$RUNS/isotropic/final" \
      > "$REPORTS/paired-isotropic-vs-gamma-1-$data.txt"
  for width in 256 128; do
    $PY benchmarks/paired_ndcg.py --data "$DATA/$data" --max-seq-length 256 --precision "$PRECISION" \
        --system "gamma-1-${width}d=$RUNS/whitening/gamma-1-${width}d" \
        --system "isotropic-${width}d=$RUNS/isotropic-${width}d/final" \
        > "$REPORTS/paired-isotropic-${width}d-vs-gamma-1-${width}d-$data.txt"
  done
  # ... and the anchor to the base's ranking, on and off, on the 256-d isotropic head.
  $PY benchmarks/paired_ndcg.py --data "$DATA/$data" --max-seq-length 256 --precision "$PRECISION" \
      --system "isotropic-256d=$RUNS/isotropic-256d/final" --system "isotropic-256d-anchor=$RUNS/isotropic-256d-anchor/final" \
      > "$REPORTS/paired-isotropic-256d-anchor-vs-isotropic-256d-$data.txt"
done
