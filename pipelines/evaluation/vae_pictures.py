"""PNG pictures of continuous-latent image models: what each model's paper shows of it.

- ``reconstructions.png``: inputs above their reconstructions (sharp for the autoencoder).
- ``samples.png``: the means of p(x|z) for z ~ p(z) (poor for the autoencoder, whose
  latents were never asked to follow a prior), as in Kingma & Welling 2014 (VAE).
- ``traversals.png`` (VAE, beta-VAE): one row per latent unit, that unit swept over
  [-3, 3] from the posterior mean of one input while the others stay fixed, as in
  Higgins et al. 2017 (beta-VAE).
- ``classes.png`` (CVAE): one row of samples per class (Sohn et al. 2015).
- ``layers.png`` (ladder VAE): row l samples layers l..L, the layers below at their mean
  (Sønderby et al. 2016).

Flat and conv models alike; samples have the inputs' size.
"""

from __future__ import annotations

from pathlib import Path

import torch
from PIL import Image
from torch import Tensor
from torchvision.utils import make_grid

from vqtok.models.cvae import ConditionalVAE
from vqtok.models.ladder import LadderVAE
from vqtok.models.vae import LatentModel
from vqtok.pipelines.errors import UsageError
from vqtok.pipelines.training.pictures import save_reconstruction_picture

PER_ROW = 8
TRAVERSED_UNITS = 8


def save_grid(path: Path, images: Tensor, per_row: int) -> Path:
    """images: (N, C, H, W) float in [-1, 1] -> a PNG grid at ``path``."""
    grid = make_grid(
        images.detach().float().cpu(), nrow=per_row, padding=2, normalize=True, value_range=(-1, 1)
    )
    Image.fromarray((grid.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy()).save(path)
    return path


@torch.no_grad()
def save_vae_pictures(model: LatentModel, x: Tensor, out: str | Path) -> list[Path]:
    """Write the pictures above for the image model ``model`` given inputs x: (B, C, H, W),
    samples of size (H, W) (CVAE: conditions are the classes 0..num_classes-1). Returns the
    paths written."""
    if model.config.modality != "image":
        raise UsageError("pictures are drawn for image models only")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.eval()
    size = tuple(x.shape[2:])
    if isinstance(model, ConditionalVAE):
        return [_class_grid(model, out / "classes.png", size)]
    paths = [
        save_reconstruction_picture(
            out / "reconstructions.png", x[:PER_ROW], model(x[:PER_ROW])[0], "image"
        )
    ]
    if isinstance(model, LadderVAE):
        rows = [
            model.sample(PER_ROW, stochastic_from=layer, size=size)
            for layer in range(1, model.layers + 1)
        ]
        return [*paths, save_grid(out / "layers.png", torch.cat(rows), PER_ROW)]
    paths.append(save_grid(out / "samples.png", model.sample(2 * PER_ROW, size=size), PER_ROW))
    if model.config.network != "conv" and model.config.family != "ae":
        paths.append(_traversals(model, x[:1], out / "traversals.png"))
    return paths


def _traversals(model, x: Tensor, path: Path) -> Path:
    z = model.encode(x)[0]
    units = min(TRAVERSED_UNITS, z.shape[0])
    values = torch.linspace(-3.0, 3.0, PER_ROW)
    codes = z.repeat(units * PER_ROW, 1)
    for unit in range(units):
        codes[unit * PER_ROW : (unit + 1) * PER_ROW, unit] = values
    return save_grid(path, model.decode(codes), PER_ROW)


def _class_grid(model: ConditionalVAE, path: Path, size: tuple[int, ...]) -> Path:
    device = next(model.parameters()).device
    labels = torch.arange(model.config.num_classes, device=device).repeat_interleave(PER_ROW)
    return save_grid(path, model.sample(labels.shape[0], labels, size), PER_ROW)
