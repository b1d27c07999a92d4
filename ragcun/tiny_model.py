"""A tiny EmbeddingGemma look-alike, built from a config with no download.

Tests and the offline quickstart need a base model with EmbeddingGemma's exact module stack
(bidirectional Gemma3 → mean Pooling → Dense 4h → Dense h → Normalize, with its query/document
prompts) but small enough to train in seconds on a CPU. Its word-level tokenizer is trained on the
texts it will see, so nothing is fetched from the Hub.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Pooling, Transformer
from torch import nn

EMBEDDINGGEMMA_PROMPTS = {"query": "task: search result | query: ", "document": "title: none | text: "}
SPECIAL_TOKENS = ["<pad>", "<eos>", "<bos>", "<unk>"]


def _train_tokenizer(texts: Iterable[str], vocab_size: int):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    # The prompts are part of every input, so their words belong in the vocabulary.
    tokenizer.train_from_iterator([*EMBEDDINGGEMMA_PROMPTS.values(), *texts], trainer=trainer)
    bos, eos = tokenizer.token_to_id("<bos>"), tokenizer.token_to_id("<eos>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<bos> $A <eos>", special_tokens=[("<bos>", bos), ("<eos>", eos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>", unk_token="<unk>"
    )


def build_tiny_gemma(
    output_dir: str | Path,
    texts: Iterable[str],
    *,
    hidden_size: int = 64,
    num_layers: int = 4,
    vocab_size: int = 2000,
    max_seq_length: int = 128,
    seed: int = 0,
) -> Path:
    """Write a randomly initialised EmbeddingGemma-shaped SentenceTransformer to ``output_dir``."""
    from transformers import Gemma3TextConfig, Gemma3TextModel

    output_dir = Path(output_dir)
    tokenizer = _train_tokenizer(texts, vocab_size)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=hidden_size // 2,
        max_position_embeddings=max(512, max_seq_length),
        sliding_window=64,
        layer_types=["sliding_attention" if (i + 1) % 2 else "full_attention" for i in range(num_layers)],
        use_bidirectional_attention=True,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    backbone_dir = output_dir / "_backbone"
    Gemma3TextModel(config).save_pretrained(backbone_dir)
    tokenizer.save_pretrained(backbone_dir)

    transformer = Transformer(str(backbone_dir), max_seq_length=max_seq_length)
    modules = [
        transformer,
        Pooling(hidden_size, pooling_mode="mean"),
        Dense(hidden_size, 4 * hidden_size, bias=False, activation_function=nn.Identity()),
        Dense(4 * hidden_size, hidden_size, bias=False, activation_function=nn.Identity()),
        Normalize(),
    ]
    model = SentenceTransformer(modules=modules, prompts=dict(EMBEDDINGGEMMA_PROMPTS), similarity_fn_name="cosine", device="cpu")
    model.save(str(output_dir))
    for leftover in sorted(backbone_dir.rglob("*"), reverse=True):
        leftover.unlink() if leftover.is_file() else leftover.rmdir()
    backbone_dir.rmdir()
    return output_dir
