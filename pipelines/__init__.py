"""Jobs over data: media folders -> WebDataset shards -> codes -> media, LM tokens or .vqt files.

    from vqtok.pipelines import (
        make_shards, encode_shards, EncodeConfig, decode_shards, export_tokens,
    )
    make_shards("photos/", "shards/", "image", maxcount=1000)
    options = EncodeConfig(errors=ErrorOptions(on_error="skip"), resume=True)
    encode_shards("ckpt/f8", "shards/", "codes/", options)
    decode_shards("ckpt/f8", "codes/", "restored/")
    export_tokens("codes/", "tokens/train", bos=True, eos=True)
    windows = TokenDataset("tokens/train", seq_len=1024)

The code lives in wings, one concern each; a wing imports only the wings below it:

    data         tar shards, shard specs, media decode/encode, array import, batches
    jobs         encode, decode, export-tokens, code samples, the Ray engine     -> data
    training     the training loop, its losses, checkpoints and logs            -> data
    compression  .vqt files and prior fitting                                   -> data, jobs
    evaluation   rate-distortion, codec baselines, quality metrics, VAE NLL     -> all above
    bench, demo  benchmarks and the demo                                        -> all above

Every wing may import the shared modules at this level (errors, progress, environment,
config). tests/architecture/test_package.py enforces the rule.
"""

# Names load on first use, so that a module that needs only torch (the kernel benchmark
# on a GPU machine without the media packages) imports without webdataset, PyAV or soundfile.
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "encode_shards_ray": "jobs.ray_engine",
    "RayConfig": "jobs.ray_engine",
    "RDConfig": "evaluation.rd",
    "evaluate_rd": "evaluation.rd",
    "fit_prior_shards": "compression.fit_prior",
    "FitPriorConfig": "compression.fit_prior",
    "JobConfig": "config",
    "MediaOptions": "config",
    "ErrorOptions": "config",
    "RuntimeOptions": "config",
    "CompressConfig": "compression.vqt",
    "decompress_file": "compression.vqt",
    "compress_file": "compression.vqt",
    "DecodeConfig": "jobs.decode",
    "DecodeSummary": "jobs.decode",
    "EncodeConfig": "jobs.encode",
    "EncodeSummary": "jobs.encode",
    "ErrorPolicy": "errors",
    "MakeShardsSummary": "data.shards",
    "MediaBatches": "data.batches",
    "MediaConfig": "data.media",
    "PipelineError": "errors",
    "Placement": "data.sources",
    "Sample": "data.tario",
    "SampleError": "errors",
    "ShardWriter": "data.tario",
    "TokenDataset": "jobs.tokens",
    "TokenManifest": "jobs.tokens",
    "UsageError": "errors",
    "decode_shards": "jobs.decode",
    "encode_shards": "jobs.encode",
    "expand_shards": "data.sources",
    "export_tokens": "jobs.tokens",
    "flatten_codes": "jobs.tokens",
    "make_shards": "data.shards",
    "pack_codes": "jobs.codes",
    "read_samples": "data.tario",
    "unpack_codes": "jobs.codes",
    "LMTrainConfig": "training.lm_config",
    "train_lm": "training.lm_loop",
    "LMEvalConfig": "evaluation.lm_eval",
    "evaluate_lm": "evaluation.lm_eval",
    "SampleConfig": "jobs.sample",
    "sample_media": "jobs.sample",
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
