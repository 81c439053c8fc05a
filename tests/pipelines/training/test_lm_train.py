"""LM training on exported tokens: outputs, learning, exact resume after a kill, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers.lm import TINY_LM, random_export, write_export

import vqtok.lm
from vqtok.entropy.lm_coder import decode_lm, encode_lm
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.evaluation.lm_eval import LMEvalConfig, evaluate_lm
from vqtok.pipelines.jobs.tokens import TokenDataset
from vqtok.pipelines.training.lm_config import LMTrainConfig
from vqtok.pipelines.training.lm_data import Pieces
from vqtok.pipelines.training.lm_loop import train_lm

ROOT = Path(__file__).resolve().parents[3]


def open_tokens(prefix: str) -> TokenDataset:
    return TokenDataset(prefix, 1)


def config(tmp_path: Path, **changes) -> LMTrainConfig:
    settings = dict(train=str(tmp_path / "tok" / "train"), layout=[3, 4], out=str(tmp_path / "run"),
                    steps=12, batch_size=4, warmup_steps=2, log_every=1, checkpoint_every=4,
                    val_every=6, model_options=TINY_LM, device="cpu")
    settings.update(changes)
    return LMTrainConfig(**settings)


def test_a_run_writes_its_outputs_and_learns(tmp_path):
    random_export(tmp_path / "tok" / "train", count=2)  # two pieces: easy to memorize
    summary = train_lm(config(tmp_path, steps=60, lr=1e-2, val=str(tmp_path / "tok" / "train"),
                              val_every=60), open_tokens, progress=False)
    run = tmp_path / "run"
    for name in ("config.toml", "metrics.jsonl", "summary.json", "final", "best"):
        assert (run / name).exists(), name
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train = [line for line in lines if line["split"] == "train"]
    # The output bias starts at the 24 codes' frequencies (3.5 bits, below uniform 4 bits).
    assert train[0]["bits_per_token"] > 3.0 and train[-1]["bits_per_token"] < 1.0
    final = vqtok.lm.load_lm(run / "final")
    assert final.lm_id == summary.lm_id and final.config.layout == (3, 4)
    assert summary.validation["bits_per_token"] < 1.0
    report = evaluate_lm(run / "final", tmp_path / "tok" / "train")
    assert report.lm_bits_per_token < 1.0 < report.static_bits_per_token == 4.0


class Crash(Exception):
    """Stands for a process that dies between two checkpoints."""


def test_resume_after_a_crash_gives_the_same_weights(tmp_path):
    random_export(tmp_path / "tok" / "train", count=6)
    whole = train_lm(config(tmp_path, out=str(tmp_path / "whole")), open_tokens, progress=False)

    def crash(step, values):
        if step == 7:  # after the checkpoint of step 4, before that of step 8
            raise Crash

    with pytest.raises(Crash):
        train_lm(config(tmp_path), open_tokens, progress=False, callbacks=[crash])
    resumed = train_lm(config(tmp_path), open_tokens, resume=True, progress=False)
    assert resumed.steps == 12 and resumed.lm_id == whole.lm_id


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_weights(tmp_path):
    random_export(tmp_path / "tok" / "train", count=6)
    whole = train_lm(config(tmp_path, out=str(tmp_path / "whole")), open_tokens, progress=False)
    killed = config(tmp_path)
    script = textwrap.dedent(f"""
        import os, signal
        from vqtok.pipelines.jobs.tokens import TokenDataset
        from vqtok.pipelines.training.lm_config import LMTrainConfig
        from vqtok.pipelines.training.lm_loop import train_lm
        def die(step, values):
            if step == 7:  # after the checkpoint of step 4, before that of step 8
                os.kill(os.getpid(), signal.SIGKILL)
        config = LMTrainConfig.from_dict({killed.to_dict()!r})
        train_lm(config, lambda p: TokenDataset(p, 1), progress=False, callbacks=[die])
    """)
    # Same threads as this process: float sums in another order give other weights.
    threads = str(torch.get_num_threads())
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            env={**os.environ, "OMP_NUM_THREADS": threads}, timeout=120)
    assert result.returncode == -signal.SIGKILL, result.stderr.decode()[-2000:]
    checkpoints = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert checkpoints == ["step-00000004"]
    resumed = train_lm(killed, open_tokens, resume=True, progress=False)
    assert resumed.steps == 12
    assert resumed.lm_id == whole.lm_id  # config and every weight bit equal


def test_a_conditional_run_reads_labels_from_code_shards(tmp_path):
    from vqtok.pipelines.data.tario import ShardWriter

    keys = ["a", "b", "c", "d"]
    random_export(tmp_path / "tok" / "train", count=4, keys=keys)
    writer = ShardWriter(tmp_path / "codes" / "codes-000000.tar")
    for index, key in enumerate(keys):
        writer.write(key, {"cls": str(index % 3).encode()})
    writer.commit()
    summary = train_lm(config(tmp_path, labels=str(tmp_path / "codes"), steps=2),
                       open_tokens, progress=False)
    assert vqtok.lm.load_lm(summary.final_model).config.num_classes == 3
    prefix = tmp_path / "tok" / "train"
    with pytest.raises(UsageError, match="pass --labels"):
        evaluate_lm(summary.final_model, prefix)
    report = evaluate_lm(summary.final_model, prefix,
                         LMEvalConfig(labels=str(tmp_path / "codes"), limit=3))
    assert report.samples == 3 and report.code_tokens == 36


def test_whole_audio_files_of_any_length_train_evaluate_and_code(tmp_path):
    """Audio encoded whole gives samples of any length: the LM takes them as they are."""
    rng = np.random.default_rng(0)
    steps = [30, 7, 51]  # time steps per file, two levels each
    write_export(tmp_path / "tok" / "train", [rng.integers(0, 16, 2 * n) for n in steps],
                 num_levels=2, modality="audio")
    summary = train_lm(config(tmp_path, layout=[], steps=6, model_options={
        **TINY_LM, "max_len": 17}), open_tokens, progress=False)
    lm = vqtok.lm.load_lm(summary.final_model)
    assert lm.config.relative_time and lm.config.layout == (9,)  # 16 tokens touch 9 steps
    pieces = Pieces.build(open_tokens(str(tmp_path / "tok" / "train")), lm.config, None, "t")
    assert [p.numel() for p in pieces.codes] == [60, 14, 102]
    assert len(pieces.chunks(lm.config)) == 4 + 1 + 7  # every chunk of every file
    report = evaluate_lm(summary.final_model, tmp_path / "tok" / "train")
    assert report.samples == 3 and report.code_tokens == 176
    codes = torch.from_numpy(rng.integers(0, 16, (1, 2, 51)))
    assert (decode_lm(lm, encode_lm(lm, codes.numpy()), (1, 2, 51)) == codes.numpy()).all()
    write_export(tmp_path / "tok" / "odd", [rng.integers(0, 16, 9)], num_levels=2,
                 modality="audio")
    with pytest.raises(UsageError, match="whole number of time steps"):
        train_lm(config(tmp_path, train=str(tmp_path / "tok" / "odd"), layout=[],
                        out=str(tmp_path / "odd-run")), open_tokens, progress=False)


@pytest.mark.parametrize("changes,message", [
    ({"layout": [5, 5]}, "not a multiple of one piece"),
    ({"model": "lm-huge"}, "unknown LM"),
    ({"model_options": {"d_model": 30, "num_heads": 4}}, "multiple of num_heads"),
    ({"labels": "nowhere/"}, "nowhere"),
    ({"train": "missing/prefix"}, "cannot read the training tokens"),
])
def test_bad_input_is_a_usage_error_before_any_step(tmp_path, changes, message):
    random_export(tmp_path / "tok" / "train", count=2)
    with pytest.raises(UsageError, match=message):
        train_lm(config(tmp_path, **changes), open_tokens, progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_an_existing_run_needs_resume(tmp_path):
    write_export(tmp_path / "tok" / "train", [list(range(12))] * 2)
    train_lm(config(tmp_path, steps=4), open_tokens, progress=False)
    with pytest.raises(UsageError, match="--resume"):
        train_lm(config(tmp_path, steps=8), open_tokens, progress=False)


@pytest.mark.slow  # three Python processes start and import torch
def test_torchrun_matches_one_process_with_the_doubled_batch(tmp_path):
    """Rank r of W takes block r of each global batch, so 2 ranks x 2 sequences see what one
    process sees with 4; the ranks end bit-equal and the losses agree to float rounding."""
    random_export(tmp_path / "tok" / "train", count=8)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    losses = {}
    for name, batch, launcher in (
        ("single", 4, [sys.executable, "-m", "vqtok.cli.main"]),
        ("ddp", 2, [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    "--nproc_per_node=2", "-m", "vqtok.cli.main"]),
    ):
        path = config(tmp_path, out=str(tmp_path / name), batch_size=batch, steps=4,
                      val_every=100).save(tmp_path / f"{name}.toml")
        result = subprocess.run([*launcher, "lm", "train", "--config", str(path),
                                 "--no-progress"], cwd=ROOT, env=env, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        records = map(json.loads, (tmp_path / name / "metrics.jsonl").read_text().splitlines())
        losses[name] = [r["loss"] for r in records if r["split"] == "train"]
    hashes = json.loads((tmp_path / "ddp" / "summary.json").read_text())["replica_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1]
    assert losses["ddp"] == pytest.approx(losses["single"], rel=1e-4)
