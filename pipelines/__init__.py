"""Shard pipelines: media folders -> WebDataset shards -> codes -> media or LM tokens.

    from vqtok.pipelines import make_shards, encode_shards, EncodeConfig, decode_shards, export_tokens
    make_shards("photos/", "shards/", "image", maxcount=1000)
    encode_shards("ckpt/f8", "shards/", "codes/", EncodeConfig(on_error="skip", resume=True))
    decode_shards("ckpt/f8", "codes/", "restored/")
    export_tokens("codes/", "tokens/train", bos=True, eos=True)
    windows = TokenDataset("tokens/train", seq_len=1024)
"""

# Names load on first use, so that a module that needs only torch (the kernel benchmark
# on a GPU machine without the media packages) imports without webdataset, PyAV or soundfile.
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "encode_shards_ray": "ray_engine",
    "RayConfig": "ray_engine",
    "RDConfig": "rd",
    "evaluate_rd": "rd",
    "fit_prior_shards": "prior",
    "CompressConfig": "compress",
    "decompress_file": "compress",
    "compress_file": "compress",
    "DecodeConfig": "decode",
    "DecodeSummary": "decode",
    "EncodeConfig": "encode",
    "EncodeSummary": "encode",
    "ErrorPolicy": "errors",
    "MakeShardsSummary": "shards",
    "MediaBatches": "dataset",
    "MediaConfig": "media",
    "PipelineError": "errors",
    "Placement": "sources",
    "Sample": "tario",
    "SampleError": "errors",
    "ShardWriter": "tario",
    "TokenDataset": "tokens",
    "TokenManifest": "tokens",
    "UsageError": "errors",
    "decode_shards": "decode",
    "encode_shards": "encode",
    "expand_shards": "sources",
    "export_tokens": "tokens",
    "flatten_codes": "tokens",
    "make_shards": "shards",
    "pack_codes": "codes",
    "read_samples": "tario",
    "unpack_codes": "codes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
