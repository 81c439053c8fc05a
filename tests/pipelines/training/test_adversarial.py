"""Adversarial training: loss values on known logits, the adaptive weight, LeCam, the balancer,
tiny `vqtok train` runs with a discriminator, and exact resume with it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch
from helpers.training import DATA, thumbnail_shards, thumbnails, tiny_config
from safetensors.torch import load_file
from typer.testing import CliRunner

from vqtok.cli.app import app
from vqtok.models.discriminators import DiscriminatorSet, PatchGAN
from vqtok.pipelines import make_shards
from vqtok.pipelines.errors import PipelineError, UsageError
from vqtok.pipelines.training import TrainingInterrupted, train
from vqtok.pipelines.training.adversarial import (
    Adversary,
    LossBalancer,
    adaptive_weight,
    discriminator_loss,
    feature_matching,
    generator_loss,
    lecam_penalty,
)

REAL = [torch.tensor([2.0, 0.5, -1.0, 0.0]).view(4, 1)]
FAKE = [torch.tensor([-2.0, 0.5, 1.0, -0.5]).view(4, 1)]


def test_hinge_losses_on_known_logits():
    # relu(1 - real) = [0, .5, 2, 1] -> mean .875; relu(1 + fake) = [0, 1.5, 2, .5] -> 1.0
    assert discriminator_loss(REAL, FAKE, "hinge").item() == pytest.approx(0.5 * (0.875 + 1.0))
    assert generator_loss(FAKE, "hinge").item() == pytest.approx(0.25)  # -mean(fake)


def test_least_squares_losses_on_known_logits():
    # (1 - real)^2 = [1, .25, 4, 1] -> 1.5625; fake^2 = [4, .25, 1, .25] -> 1.375
    assert discriminator_loss(REAL, FAKE, "lsgan").item() == pytest.approx(0.5 * (1.5625 + 1.375))
    # (1 - fake)^2 = [9, .25, 0, 2.25] -> 2.875
    assert generator_loss(FAKE, "lsgan").item() == pytest.approx(2.875)


def test_losses_average_over_critics():
    second_real, second_fake = [torch.full((2, 1, 3), 3.0)], [torch.full((2, 1, 3), -3.0)]
    both = discriminator_loss(REAL + second_real, FAKE + second_fake, "hinge")
    one = discriminator_loss(REAL, FAKE, "hinge")
    assert both.item() == pytest.approx((one.item() + 0.0) / 2)  # the second critic is right
    assert generator_loss(FAKE + second_fake, "hinge").item() == pytest.approx((0.25 + 3.0) / 2)


def test_feature_matching_is_mean_l1_over_layers_and_critics():
    real = [[torch.zeros(2, 3), torch.ones(2, 1)], [torch.full((1, 4), 2.0)]]
    fake = [[torch.ones(2, 3), torch.ones(2, 1)], [torch.full((1, 4), -1.0)]]
    assert feature_matching(real, fake).item() == pytest.approx((1.0 + 0.0 + 3.0) / 3)


def test_lecam_penalty_on_known_logits_and_averages():
    ema_real, ema_fake = torch.tensor([0.5]), torch.tensor([-0.5])
    # relu(real - ema_fake)^2 = relu([2.5, 1, -.5, .5])^2 = [6.25, 1, 0, .25] -> 1.875
    # relu(ema_real - fake)^2 = relu([2.5, 0, -.5, 1])^2 = [6.25, 0, 0, 1] -> 1.8125
    assert lecam_penalty(REAL, FAKE, ema_real, ema_fake).item() == pytest.approx(1.875 + 1.8125)


def test_adaptive_weight_is_the_gradient_norm_ratio_at_the_last_layer():
    torch.manual_seed(0)
    z, x = torch.randn(5, 3), torch.randn(5, 4)
    weight = torch.randn(4, 3, requires_grad=True)  # the "decoder": x_hat = z @ W^T
    v = torch.randn(4)  # the "critic": D(x_hat) = x_hat @ v
    x_hat = z @ weight.T
    rec = (x_hat - x).square().mean()
    adv = -(x_hat @ v).mean()
    # By hand: d rec / dW = 2 / 20 * (x_hat - x)^T z; d adv / dW = -1 / 5 * v z.sum(0)^T.
    rec_grad = 2.0 / 20.0 * (x_hat - x).detach().T @ z
    adv_grad = -torch.outer(v, z.sum(0)) / 5.0
    expected = rec_grad.norm() / (adv_grad.norm() + 1e-4)
    got = adaptive_weight(rec, adv, weight)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert not got.requires_grad
    assert adaptive_weight(rec, adv, weight, max_weight=1e-3).item() == pytest.approx(1e-3)


def test_adversary_updates_lecam_averages_and_critic_gets_gradients():
    torch.manual_seed(0)
    critic = DiscriminatorSet([PatchGAN(2, 3, width=4, layers=2)])
    adversary = Adversary(critic, lecam_weight=1.0, lecam_decay=0.9)
    x, x_hat = torch.randn(2, 3, 24, 24), torch.randn(2, 3, 24, 24)
    loss, stats = adversary.discriminator_loss(critic, x, x_hat, _no_autocast)
    logits, _ = critic(torch.cat([x, x_hat]))
    assert adversary.ema_real.item() == pytest.approx(0.1 * logits[0][:2].mean().item(), rel=1e-5)
    assert adversary.ema_fake.item() == pytest.approx(0.1 * logits[0][2:].mean().item(), rel=1e-5)
    penalty = lecam_penalty([logits[0][:2]], [logits[0][2:]], adversary.ema_real,
                            adversary.ema_fake)
    hinge = discriminator_loss([logits[0][:2]], [logits[0][2:]])
    assert loss.item() == pytest.approx((hinge + penalty).item(), rel=1e-5)
    assert stats["lecam"] == pytest.approx(penalty.item(), rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in critic.parameters())


def _no_autocast():
    return torch.autocast("cpu", enabled=False)


def test_generator_terms_leave_the_critic_without_gradients():
    torch.manual_seed(0)
    critic = DiscriminatorSet([PatchGAN(2, 3, width=4, layers=2)])
    adversary = Adversary(critic, weight=0.5, adaptive=False, feature_matching_weight=2.0)
    x = torch.randn(2, 3, 24, 24)
    x_hat = torch.randn(2, 3, 24, 24, requires_grad=True)
    terms, _ = adversary.generator_terms(x, x_hat, None, None, _no_autocast)
    fake_logits, fake_features = critic(x_hat)
    _, real_features = critic(x)
    assert terms["adversarial"].item() == pytest.approx(0.5 * generator_loss(fake_logits).item())
    assert terms["feature_matching"].item() == pytest.approx(
        2.0 * feature_matching(real_features, fake_features).item())
    for p in critic.parameters():
        p.grad = None
    sum(terms.values()).backward()
    assert x_hat.grad is not None and x_hat.grad.abs().sum() > 0
    assert all(p.grad is None and p.requires_grad for p in critic.parameters())


def test_balancer_gives_each_term_its_weight_share_of_the_gradient():
    torch.manual_seed(0)
    output = torch.randn(3, 2, 5, requires_grad=True)
    u, v = torch.randn(3, 2, 5), torch.randn(3, 2, 5)
    encoder = torch.randn(4, requires_grad=True)
    terms = {"l1": 1000.0 * (output * u).sum(), "adversarial": (output * v).sum(),
             "commitment": encoder.square().sum()}
    balancer = LossBalancer({"l1": 1.0, "adversarial": 3.0}, decay=0.9)
    logged = balancer.backward(output, terms)

    def unit(g):  # divided by its mean per-sample norm
        return g / g.flatten(1).norm(dim=1).mean()

    # First step: each moving average is the current norm (bias-corrected).
    torch.testing.assert_close(output.grad, 0.25 * unit(1000.0 * u) + 0.75 * unit(v))
    torch.testing.assert_close(encoder.grad, 2 * encoder.detach())  # left alone
    assert logged["norm_l1"] == pytest.approx(1000.0 * u.flatten(1).norm(dim=1).mean().item(),
                                              rel=1e-5)
    # Second step with the l1 term 10x larger: the average moves (0.9 * a + b) / 1.9.
    output.grad = None
    terms = {"l1": 10000.0 * (output * u).sum(), "adversarial": (output * v).sum()}
    balancer.backward(output, terms)
    n_u, n_v = u.flatten(1).norm(dim=1).mean(), v.flatten(1).norm(dim=1).mean()
    average_u = (0.9 * 1000.0 * n_u + 10000.0 * n_u) / 1.9
    torch.testing.assert_close(output.grad, 0.25 * 10000.0 * u / average_u + 0.75 * v / n_v)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    return thumbnail_shards(tmp_path_factory.mktemp("adv-images"))


def _metrics(out):
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "train"]


ADVERSARIAL = dict(adversarial="patchgan", adversarial_start=2, lecam_weight=0.1,
                   feature_matching_weight=0.5, discriminator_options={"patchgan": {"width": 8}})


def test_image_run_trains_the_critic_after_its_start(shards, tmp_path):
    out = tmp_path / "run"
    summary = train(tiny_config(shards, out, steps=5, val_every=100, **ADVERSARIAL),
                    progress=False)
    assert summary.steps == 5
    log = _metrics(out)
    assert all("adversarial" not in r and "disc_loss" not in r for r in log[:2])
    for record in log[2:]:
        for key in ("adversarial", "feature_matching", "adaptive_weight", "disc_loss",
                    "disc_real", "disc_fake", "lecam", "disc_grad_norm"):
            assert key in record, key
        parts = sum(record[k] for k in ("l2", "commitment", "adversarial", "feature_matching"))
        assert record["loss"] == pytest.approx(parts, rel=1e-5)
    # The critic learns to tell them apart: real scores rise above fake ones.
    assert log[-1]["disc_real"] > log[-1]["disc_fake"]
    checkpoint = out / "checkpoints" / "step-00000005"
    critic = load_file(checkpoint / "discriminator.safetensors")
    assert "ema_real" in critic and critic["ema_real"].abs().sum() > 0
    assert (checkpoint / "discriminator_optimizer.safetensors").is_file()


@pytest.fixture(scope="module")
def audio_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("adv-audio")
    make_shards(DATA / "audio", root / "shards", "audio", maxcount=3)
    return root / "shards"


AUDIO = dict(model="audio-vq-16k", crop=[3200], adversarial="msstft+mpd", adaptive_weight=False,
             model_options={"widths": [4, 4, 8, 8, 8], "blocks_per_stage": 1,
                            "quantizer_options": {"codebook_size": 32}},
             balancer=True, feature_matching_weight=2.0, adversarial_loss="lsgan",
             discriminator_options={"msstft": {"width": 4}, "mpd": {"widths": [4, 8]}})


def test_audio_run_with_stft_and_period_critics_and_the_balancer(audio_shards, tmp_path):
    config = tiny_config(audio_shards, tmp_path / "run", steps=3, val_every=100,
                         adversarial_start=1, **AUDIO)
    summary = train(config, progress=False)
    assert summary.steps == 3
    log = _metrics(tmp_path / "run")
    assert "norm_stft" in log[0] and "norm_adversarial" not in log[0]
    for key in ("norm_l2", "norm_stft", "norm_mel", "norm_adversarial",
                "norm_feature_matching", "disc_loss"):
        assert log[-1][key] > 0, key
    checkpoint = tmp_path / "run" / "checkpoints" / "step-00000003"
    assert load_file(checkpoint / "balancer.safetensors")["norms"][:, 1].max() > 0


def test_video_run_with_a_3d_critic(tmp_path):
    make_shards(DATA / "video", tmp_path / "shards", "video", maxcount=1)
    options = {"widths": [4, 8, 8, 8], "quantizer_options": {"codebook_size": 32}}
    config = tiny_config(tmp_path / "shards", tmp_path / "run", model="video-vq-t4s8",
                         model_options=options, crop=[5, 32, 32], steps=2, val_every=100,
                         adversarial="patchgan", adversarial_start=0,
                         discriminator_options={"patchgan": {"width": 4}})
    train(config, progress=False)
    critic = load_file(tmp_path / "run" / "checkpoints" / "step-00000002" /
                       "discriminator.safetensors")
    assert any(t.dim() == 5 for t in critic.values())  # 3D convs
    assert "disc_loss" in _metrics(tmp_path / "run")[0]


def _interrupt_at(step):
    def callback(current, values):
        if current == step:
            os.kill(os.getpid(), signal.SIGINT)
    return callback


@pytest.mark.parametrize("modality", ["image", "audio"])
def test_resumed_run_ends_with_the_same_generator_and_critic(shards, audio_shards, tmp_path,
                                                              modality):
    # Audio: the STFT and period critics, least squares, the balancer (its averages resume).
    data, more = ((shards, dict(crop=[24, 24], **ADVERSARIAL)) if modality == "image"
                  else (audio_shards, dict(adversarial_start=2, **AUDIO)))
    settings = dict(steps=7, deterministic=True, val_every=100, checkpoint_every=100, **more)
    reference = train(tiny_config(data, tmp_path / "a", **settings), progress=False)
    config = tiny_config(data, tmp_path / "b", **settings)
    with pytest.raises(TrainingInterrupted, match="step 4"):
        train(config, progress=False, callbacks=[_interrupt_at(4)])
    resumed = train(config, resume=True, progress=False)
    assert resumed.steps == reference.steps == 7
    step = "checkpoints/step-00000007"
    names = ["final/model.safetensors", f"{step}/model.safetensors",
             f"{step}/discriminator.safetensors", f"{step}/discriminator_optimizer.safetensors",
             f"{step}/optimizer.safetensors"]
    if modality == "audio":
        names.append(f"{step}/balancer.safetensors")
    for name in names:
        a, b = load_file(tmp_path / "a" / name), load_file(tmp_path / "b" / name)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert _metrics(tmp_path / "a")[-1] == {**_metrics(tmp_path / "b")[-1],
                                            "time": _metrics(tmp_path / "a")[-1]["time"]}


def test_resume_refuses_a_checkpoint_without_the_critic(shards, tmp_path):
    config = tiny_config(shards, tmp_path / "run", steps=2, val_every=100, checkpoint_every=2)
    train(config, progress=False)
    more = tiny_config(shards, tmp_path / "run", steps=4, val_every=100, **ADVERSARIAL)
    with pytest.raises(PipelineError, match="no discriminator state"):
        train(more, resume=True, progress=False)


@pytest.mark.parametrize(("changes", "message"), [
    ({"adversarial": "patchgan+vgg"}, "adversarial must be"),
    ({"adversarial": "patchgan", "balancer": True}, "adaptive_weight = false"),
    ({"lecam_weight": 0.1}, "adversarial is off"),
    ({"adversarial": "patchgan", "adversarial_loss": "wgan"}, "adversarial_loss"),
    ({"adversarial": "patchgan", "discriminator_options": {"mpd": {}}}, "discriminator_options"),
    ({"perceptual_weight": 0.1}, "cannot be downloaded"),
])
def test_bad_adversarial_settings_are_refused(shards, tmp_path, changes, message):
    with pytest.raises(UsageError, match=message):
        tiny_config(shards, tmp_path / "run", **changes)


def test_a_critic_that_does_not_fit_the_model_or_crop_is_refused(shards, tmp_path):
    with pytest.raises(UsageError, match="does not fit"):
        train(tiny_config(shards, tmp_path / "a", adversarial="mpd"), progress=False)
    with pytest.raises(UsageError, match="too small"):
        train(tiny_config(shards, tmp_path / "b", adversarial="patchgan", crop=[16, 16]),
              progress=False)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # nothing written
    # The folder is not left locked: a corrected start goes through.
    train(tiny_config(shards, tmp_path / "b", steps=1, val_every=100), progress=False)


def test_cli_exits_2_on_a_critic_for_another_modality(shards, tmp_path):
    config = tiny_config(shards, tmp_path / "run").save(tmp_path / "c.toml")
    result = CliRunner().invoke(app, ["train", str(config), "--set", "adversarial=msstft",
                                      "--no-progress"])
    assert result.exit_code == 2, result.output
    assert "does not fit" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


@pytest.mark.slow  # ~40 s on 2 cores: three Python processes start and import torch
def test_torchrun_with_a_critic_matches_one_process_with_doubled_batch(tmp_path):
    for copy in range(2):
        for path in thumbnails(tmp_path / "photos")[:2]:
            (tmp_path / "src").mkdir(exist_ok=True)
            shutil.copy(path, tmp_path / "src" / f"copy{copy}-{path.name}")
    make_shards(tmp_path / "src", tmp_path / "shards", "image", maxcount=2)
    options = {"widths": [8, 8, 8, 8],
               "quantizer_options": {"codebook_size": 64, "kmeans_init": False}}
    # The adaptive weight is off: under DDP each rank takes it from its own gradients, so
    # it would differ from the one-process run's by design.
    common = dict(model_options=options, shuffle_buffer=1, steps=4, warmup_steps=1,
                  val_every=100, checkpoint_every=100, lr=3e-3, adversarial="patchgan",
                  adversarial_start=1, adaptive_weight=False, lecam_weight=0.1,
                  feature_matching_weight=0.5, discriminator_options={"patchgan": {"width": 8}})
    single = tiny_config(tmp_path / "shards", tmp_path / "single", batch_size=4, **common)
    ddp = tiny_config(tmp_path / "shards", tmp_path / "ddp", batch_size=2, **common)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for args in ([sys.executable, "-m", "vqtok.cli.main", "train",
                  str(single.save(tmp_path / "single.toml")), "--no-progress"],
                 [sys.executable, "-m", "torch.distributed.run", "--standalone",
                  "--nproc_per_node=2", "-m", "vqtok.cli.main", "train",
                  str(ddp.save(tmp_path / "ddp.toml")), "--no-progress"]):
        result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
    hashes = json.loads((tmp_path / "ddp" / "summary.json").read_text())["replica_hashes"]
    assert len(hashes) == 2 and hashes[0] == hashes[1] and "-" in hashes[0]
    single_log, ddp_log = _metrics(tmp_path / "single"), _metrics(tmp_path / "ddp")
    for a, b in zip(single_log, ddp_log, strict=True):
        for key in ("loss", "disc_loss", "lecam"):
            if key in a:
                assert b[key] == pytest.approx(a[key], rel=1e-4), (a["step"], key)
    assert "disc_loss" in ddp_log[-1]
