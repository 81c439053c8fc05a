"""Discriminators: output layout, features, locality, spectra, gradients, registry names."""

from __future__ import annotations

import pytest
import torch

from vqtok.models.discriminators import (
    PatchGAN,
    PeriodDiscriminator,
    STFTDiscriminator,
    build_discriminator,
)
from vqtok.registry import DISCRIMINATORS


def _check_output(logits, features, batch):
    assert logits and len(logits) == len(features)
    for score, layers in zip(logits, features, strict=True):
        assert score.shape[:2] == (batch, 1) and torch.isfinite(score).all()
        assert layers and all(f.shape[0] == batch and f.dim() == score.dim() for f in layers)


def _gradients_flow(critic, x):
    x = x.clone().requires_grad_(True)
    logits, features = critic(x)
    (sum(s.mean() for s in logits) + sum(f.mean() for fs in features for f in fs)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, param in critic.named_parameters():
        assert param.grad is not None and torch.isfinite(param.grad).all(), name
        assert param.grad.abs().sum() > 0, name


def test_registry_names_the_three_discriminators():
    assert {"patchgan", "msstft", "mpd"} <= set(DISCRIMINATORS.names())


def test_patchgan_2d_scores_patches_with_features_and_gradients():
    torch.manual_seed(0)
    critic = PatchGAN(dims=2, channels=3, width=8, layers=3)
    x = torch.randn(2, 3, 48, 48)
    logits, features = critic(x)
    _check_output(logits, features, 2)
    # 48 -> 24 -> 12 -> 6 by the strided convs, then two kernel-4 stride-1 convs: 5, 4.
    assert logits[0].shape == (2, 1, 4, 4)
    assert [f.shape[1] for f in features[0]] == [8, 16, 32, 64]
    _gradients_flow(critic, x)


def test_patchgan_logits_are_local():
    # A patch critic: a change in one corner leaves the scores of the far corner alone.
    torch.manual_seed(0)
    critic = PatchGAN(dims=2, channels=3, width=8, layers=3)
    x = torch.randn(1, 3, 96, 96)
    y = x.clone()
    y[..., :8, :8] += 1.0
    a, b = critic(x)[0][0], critic(y)[0][0]
    assert not torch.equal(a[..., 0, 0], b[..., 0, 0])
    assert torch.equal(a[..., -1, -1], b[..., -1, -1])


def test_patchgan_3d_scores_clips_across_time():
    torch.manual_seed(0)
    critic = PatchGAN(dims=3, channels=3, width=4, layers=2)
    x = torch.randn(2, 3, 5, 24, 24)
    logits, features = critic(x)
    _check_output(logits, features, 2)
    assert logits[0].shape[2] == 2  # 5 frames -> 3 -> 2: time is downsampled too
    # A change in the last frame moves the scores: the critic sees time.
    y = x.clone()
    y[:, :, -1] += 1.0
    assert not torch.equal(critic(y)[0][0], logits[0])
    _gradients_flow(critic, x)


def test_stft_discriminator_reads_the_complex_spectrum():
    torch.manual_seed(0)
    critic = STFTDiscriminator(channels=2, n_fft=64, width=4)
    x = torch.randn(3, 2, 400)
    spec = critic.spectrogram(x)
    expected = torch.stft(x.reshape(6, 400), 64, 16, window=torch.hann_window(64), center=True,
                          pad_mode="constant", return_complex=True)
    assert spec.shape == (3, 4, 33, expected.shape[-1])
    real_imag = torch.view_as_real(expected).reshape(3, 2, 33, -1, 2)
    # Channel layout: for audio channel c, 2c is the real part and 2c + 1 the imaginary one.
    for channel in range(2):
        torch.testing.assert_close(spec[:, 2 * channel], real_imag[:, channel, ..., 0])
        torch.testing.assert_close(spec[:, 2 * channel + 1], real_imag[:, channel, ..., 1])
    logits, features = critic(x)
    _check_output(logits, features, 3)
    _gradients_flow(critic, x)


def test_period_discriminator_folds_by_its_period():
    torch.manual_seed(0)
    critic = PeriodDiscriminator(channels=1, period=5, widths=(4, 8, 8))
    x = torch.randn(2, 1, 1003)  # not a multiple of 5: zero padded to 1005
    logits, features = critic(x)
    _check_output(logits, features, 2)
    assert logits[0].shape[-1] == 5 and features[0][0].shape[-1] == 5
    # Kernels (k, 1) never mix phases: a change at one phase leaves the other columns alone.
    y = x.clone()
    y[..., 2::5] += 1.0
    changed = (critic(y)[0][0] != logits[0]).flatten(0, 2).any(dim=0)
    assert changed.tolist() == [False, False, True, False, False]
    _gradients_flow(critic, x)


def test_msstft_plus_mpd_is_one_set_of_eight_critics():
    torch.manual_seed(0)
    critic = build_discriminator("msstft+mpd", 1, 1, {"msstft": {"width": 4},
                                                      "mpd": {"widths": [4, 8]}})
    assert critic.heads() == 3 + 5
    x = torch.randn(2, 1, 3200)
    logits, features = critic(x)
    assert len(logits) == 8
    _check_output(logits, features, 2)
    _gradients_flow(critic, x)


@pytest.mark.parametrize(("spec", "dims", "error"), [
    ("patchgan", 1, ValueError), ("msstft", 2, ValueError), ("mpd", 3, ValueError),
    ("nope", 2, KeyError),
])
def test_a_discriminator_that_does_not_fit_is_refused(spec, dims, error):
    with pytest.raises(error):
        build_discriminator(spec, dims, 1)


def test_bf16_autocast_forward_runs():
    critic = build_discriminator("msstft+mpd", 1, 1, {"msstft": {"width": 4},
                                                      "mpd": {"widths": [4, 8]}})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = critic(torch.randn(1, 1, 2000))
    assert all(torch.isfinite(s.float()).all() for s in logits)
