"""Token exports, tokenizers and LMs small enough for second-long LM tests."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

import vqtok
import vqtok.lm
from helpers.training import TINY_IMAGE_MODEL, thumbnails
from vqtok.lm import TokenLM

TINY_LM = {"d_model": 32, "num_heads": 2, "num_layers": 2}


def write_export(prefix: Path, samples: Sequence[Sequence[int]], *, codebook_size: int = 16,
                 num_levels: int = 1, model_id: str = "tokenizer0", bos: bool = True,
                 eos: bool = True, keys: Sequence[str] | None = None,
                 modality: str = "image") -> Path:
    """Write ``prefix.bin/.idx/.json`` as ``export-tokens`` would, from code tokens."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    tokens, offsets = [], [0]
    for sample in samples:
        tokens += [codebook_size] * bos + [int(t) for t in sample] + [codebook_size + bos] * eos
        offsets.append(len(tokens))
    np.asarray(tokens, dtype="uint16").tofile(f"{prefix}.bin")
    np.asarray(offsets, dtype="<i8").tofile(f"{prefix}.idx")
    manifest = {
        "model_id": model_id, "modality": modality, "codebook_size": codebook_size,
        "num_levels": num_levels, "vocab_size": codebook_size + bos + eos,
        "bos_id": codebook_size if bos else None, "eos_id": codebook_size + bos if eos else None,
        "order": "interleaved", "flattening": "raster", "dtype": "uint16",
        "num_samples": len(samples), "num_tokens": len(tokens), "skipped": 0,
        "keys": list(keys) if keys is not None else [f"s{i:03d}" for i in range(len(samples))],
    }
    Path(f"{prefix}.json").write_text(json.dumps(manifest))
    return prefix


def random_export(prefix: Path, count: int = 8, length: int = 12, seed: int = 0,
                  **options) -> Path:
    """An export of ``count`` random samples of ``length`` code tokens."""
    rng = np.random.default_rng(seed)
    size = options.get("codebook_size", 16)
    return write_export(prefix, [rng.integers(0, size, length) for _ in range(count)], **options)


def tiny_tokenizer(folder: Path) -> vqtok.VQTokenizer:
    """An untrained 64-code image-vq-f8 saved at ``folder`` (a 32x32 image gives 4x4 codes)."""
    torch.manual_seed(0)
    model = vqtok.create_model("image-vq-f8", **TINY_IMAGE_MODEL)
    vqtok.save(model, folder)
    return vqtok.load(folder)


def tiny_lm(tokenizer: vqtok.VQTokenizer, **overrides) -> TokenLM:
    """An untrained lm-tiny over the tokenizer's codes of 32x32 images."""
    torch.manual_seed(0)
    options = {**TINY_LM, "codebook_size": tokenizer.codebook_size, "layout": (4, 4),
               "tokenizer_id": tokenizer.model_id, "modality": "image", **overrides}
    return vqtok.lm.create_lm("lm-tiny", **options).eval()


def photos(folder: Path, size: int = 32) -> list[Path]:
    """The test photos as size x size PNGs."""
    return thumbnails(folder, size)
