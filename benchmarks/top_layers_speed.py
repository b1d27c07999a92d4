"""What training the top k layers from cached states costs, against plain encoding, side by side on one machine.

Three rates on the same texts, in texts per second, all in one precision (bfloat16 under autocast, or float32): the
model encoding them as in use (``encode``, all L layers, no gradients); the one-off pass that caches their states at
the input of layer L − k; and training from those states (the top k layers, Pooling and the base's Dense layers,
forward and backward, one optimizer step per batch). The
ratio training / encoding is the speed-up over fine-tuning the whole encoder only in part: a full fine-tune step costs
about three encodes (forward and backward) of every text, a top-k step about 3k / L of one.

    python benchmarks/top_layers_speed.py --model "$MINI" --k 2 --texts 512
    python benchmarks/top_layers_speed.py --model ~/.cache/ragcun/embeddinggemma-300m --k 2 --texts 128 \\
        --precision auto --batch-size 16
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer

from ragcun.encoding.layer_states import cache_layer_states
from ragcun.encoding.precision import PRECISION_CHOICES, encoding_precision, resolve_precision
from ragcun.model import load_base
from ragcun.top_layers import CachedLayerStates


def passages(path: Path, count: int) -> list[str]:
    """The first ``count`` positives (``positive`` or ``pos``) of a JSONL training file: documents, the long side."""
    texts = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            texts.append(row["positive"] if "positive" in row else row["pos"])
            if len(texts) == count:
                break
    return texts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--k", type=int, default=2)
    parser.add_argument("--texts", type=int, default=256)
    parser.add_argument("--data", type=Path, default=Path("../shared/data/train-extra/squad_dev.jsonl"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-seq-length", type=int, default=256)
    parser.add_argument("--precision", default="float32", choices=PRECISION_CHOICES)
    args = parser.parse_args()
    precision = resolve_precision(args.precision, "cpu")
    base = load_base(args.model)
    base.max_seq_length = args.max_seq_length
    prompt = "document" if "document" in base.prompts else None
    texts = passages(args.data, args.texts)

    with encoding_precision(base, precision):
        start = time.perf_counter()
        full = base.encode(texts, prompt_name=prompt, batch_size=args.batch_size, convert_to_tensor=True)
        encode_rate = len(texts) / (time.perf_counter() - start)

    with tempfile.TemporaryDirectory() as cache:
        start = time.perf_counter()
        key_file = cache_layer_states(base, args.model, texts, prompt, args.k, Path(cache), precision,
                                      batch_size=args.batch_size)
        cache_rate = len(texts) / (time.perf_counter() - start)
        cached = CachedLayerStates(args.model, args.k, [str(key_file)], encoder=base[0].model)
        model = SentenceTransformer(modules=[cached, *list(base)[1:]], prompts=dict(base.prompts), device="cpu")
        with encoding_precision(model, precision):  # step 0: the cached top encodes as the full model does
            step_0 = model.encode(texts, prompt_name=prompt, batch_size=args.batch_size, convert_to_tensor=True)
        step_0_cosine = float(torch.nn.functional.cosine_similarity(step_0.float(), full.float()).min())
        model.train()
        optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
        prompt_text = base.prompts.get(prompt or "", None)
        start = time.perf_counter()
        for first in range(0, len(texts), args.batch_size):
            features = model.preprocess(texts[first:first + args.batch_size], prompt=prompt_text)
            # in the encoding's precision, as a recipe's `bf16: true` trains (autocast; the weights stay float32)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bfloat16"):
                loss = model(features)["sentence_embedding"].float().pow(2).sum()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        train_rate = len(texts) / (time.perf_counter() - start)
    depth = base[0].model.config.num_hidden_layers
    print(f"model {args.model}  k={args.k} of {depth} layers  {len(texts)} passages  batch {args.batch_size}  "
          f"max_seq_length {args.max_seq_length}  precision {precision} (encoding, caching and training alike)")
    print(f"encode (all layers, no gradients)      {encode_rate:8.1f} texts/s")
    print(f"cache the states (once per text)       {cache_rate:8.1f} texts/s")
    print(f"train the top {args.k} (forward + backward)  {train_rate:8.1f} texts/s   "
          f"= {train_rate / encode_rate:.2f} x encoding")
    print(f"step 0: the cached top's embeddings against the full model's, lowest cosine {step_0_cosine:.6f}")


if __name__ == "__main__":
    main()
