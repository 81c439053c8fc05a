"""`vqtok lm train|eval|sample` and `compress --coder lm` through the CLI: the workflow end to
end on real shards, and bad input as one line and exit 2."""

from __future__ import annotations

import json

import pytest
from helpers.lm import TINY_LM, photos, random_export, tiny_tokenizer
from typer.testing import CliRunner

from vqtok.cli.app import app
from vqtok.pipelines import EncodeConfig, encode_shards, export_tokens, make_shards

runner = CliRunner()


def _json(output: str) -> dict:
    return json.loads(output[output.index("{") : output.rindex("}") + 1])


@pytest.fixture(scope="module")
def tokens(tmp_path_factory):
    """Test photos at 32x32 -> shards -> codes (4x4 each) -> an export; and the tokenizer."""
    root = tmp_path_factory.mktemp("lm-cli")
    tiny_tokenizer(root / "tokenizer")
    photos(root / "photos", 32)
    make_shards(root / "photos", root / "shards", "image", maxcount=4)
    encode_shards(root / "tokenizer", str(root / "shards"), root / "codes",
                  EncodeConfig(workers=0, progress=False))
    export_tokens(str(root / "codes"), root / "tokens" / "all", bos=True, eos=True)
    return root


def test_train_eval_sample_and_compress_end_to_end(tokens, tmp_path):
    run = tmp_path / "run"
    options = [arg for key, value in TINY_LM.items()
               for arg in ("--set", f"model_options.{key}={value}")]
    result = runner.invoke(app, ["lm", "train", str(tokens / "tokens" / "all"), "--out", str(run),
                                 "--layout", "4x4", "--steps", "4", "--batch-size", "2",
                                 "--no-progress", "--set", "val_every=2", *options,
                                 "--val", str(tokens / "tokens" / "all")])
    assert result.exit_code == 0, result.output
    summary = _json(result.stdout)
    assert summary["steps"] == 4 and (run / "final" / "config.json").is_file()
    assert (run / "metrics.jsonl").is_file() and (run / "checkpoints").is_dir()

    result = runner.invoke(app, ["lm", "eval", str(run / "final"), str(tokens / "tokens" / "all"),
                                 "--tokenizer", str(tokens / "tokenizer"), "--json"])
    assert result.exit_code == 0, result.output
    report = _json(result.stdout)
    assert report["samples"] >= 1 and report["static_bits_per_token"] > 0
    assert {"lm_bits_per_sample", "adaptive_bits_per_token"} <= set(report)

    result = runner.invoke(app, ["lm", "sample", str(run / "final"), "--tokenizer",
                                 str(tokens / "tokenizer"), "--num", "2", "--out",
                                 str(tmp_path / "samples"), "--size", "32x40", "--top-k", "8"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "samples").glob("*.png")) == ["0000.png",
                                                                             "0001.png"]

    photo = sorted((tokens / "photos").glob("*.png"))[0]
    vqt, restored = tmp_path / "a.vqt", tmp_path / "a.png"
    result = runner.invoke(app, ["compress", str(tokens / "tokenizer"), str(photo), str(vqt),
                                 "--coder", "lm", "--lm", str(run / "final")])
    assert result.exit_code == 0, result.output
    assert _json(result.stdout)["codes"] == 16
    result = runner.invoke(app, ["decompress", str(vqt), str(restored), "--checkpoint",
                                 str(tokens / "tokenizer"), "--lm", str(run / "final")])
    assert result.exit_code == 0, result.output
    assert restored.stat().st_size > 0


@pytest.mark.parametrize("args,message", [
    (["lm", "train", "{tmp}/nothing", "--out", "{tmp}/run"], "cannot read the training tokens"),
    (["lm", "train", "{tmp}/tok", "--out", "{tmp}/run", "--layout", "4x"], "--layout"),
    (["lm", "train", "{tmp}/tok", "--out", "{tmp}/run", "--model", "lm-huge"], "unknown LM"),
    (["lm", "eval", "{tmp}", "{tmp}/tok"], "cannot load the LM"),
    (["lm", "sample", "{tmp}", "--tokenizer", "{tmp}", "--out", "{tmp}/s"], "cannot load"),
    (["lm", "sample", "{tmp}", "--tokenizer", "{tmp}", "--out", "{tmp}/s", "--size", "3"],
     "--size"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, args, message):
    random_export(tmp_path / "tok", count=2)
    result = runner.invoke(app, [a.replace("{tmp}", str(tmp_path)) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_compress_with_the_lm_coder_but_no_lm_is_exit_2(tokens, tmp_path):
    photo = sorted((tokens / "photos").glob("*.png"))[0]
    result = runner.invoke(app, ["compress", str(tokens / "tokenizer"), str(photo),
                                 str(tmp_path / "a.vqt"), "--coder", "lm"])
    assert result.exit_code == 2 and "needs --lm" in result.output
