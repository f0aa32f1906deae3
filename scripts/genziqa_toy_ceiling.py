"""How much of the toy labels the toy UNet's cross-attention inputs carry: a ceiling for toy GenzIQA.

GenzIQA reads an image's quality from the attn2 layers' query-key logits, log-sum-exp pooled over the
positions. At the authors' lambda (0.14) and the toy's logit sizes that pooling is close to a mean, so the
attention term is close to a linear read-out of the position-mean of each attn2 layer's input (the to_q
input, after the block's norm). This script fits such read-outs with ridge regression on the training
patches and reports held-out SRCC/PLCC (scripts/genziqa_toy_eval.py's labels and correlations):

- `mean`: the position-mean of every attn2 input (what GenzIQA's attention term can reach, roughly);
- `mean+std`: also the position-std (what a pooling closer to max could add);
- `pixels`: seven hand-made pixel statistics (gradient and Laplacian energy, saturated-pixel fraction,
  8-px blockiness), a reference for how learnable the labels are from the image itself.

The ridge strength is chosen on the last fifth of the training set, then refit on all of it; the held-out
set is used only for the reported numbers. The UNet runs once per image under the caption "a photo" at
timestep --timestep (default 3, about sigma 0.04) with one seeded noise, as the scorer does.

    python scripts/genziqa_toy_ceiling.py --train out/toy/genziqa/train --test out/toy/genziqa/test
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import torch

# The repository root, for training and toy when this runs as a script (scripts/ itself is on the path then).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from genziqa_toy_eval import correlations, load_set, report  # noqa: E402
from workflow_fixtures import TOY_BASE  # noqa: E402

ALPHAS = (0.1, 1.0, 10.0, 100.0, 1000.0)


def attn2_inputs(base, images: torch.Tensor, timestep: int, batch: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """Position-mean and position-std of every attn2 layer's query input, each [N, layers * width]."""
    from training.common.core import guidance

    gz_host, selection = guidance("genziqa.host"), guidance("genziqa.layer_selection")
    model = base.patcher.model
    unet = model.diffusion_model
    modules = dict(unet.named_modules())
    layers = [modules[p] for _, p in sorted(selection.attn2_module_paths(unet).items())]
    seen: dict[int, torch.Tensor] = {}
    hooks = [
        m.to_q.register_forward_hook(lambda _m, args, _out, i=i: seen.__setitem__(i, args[0].detach()))
        for i, m in enumerate(layers)
    ]
    cond = base.clip.encode_from_tokens(base.clip.tokenize("a photo"))
    means, stds = [], []
    try:
        with torch.no_grad():
            x0 = model.process_latent_in(gz_host.vae_encode(base.vae, images).float())
            noise = torch.randn(tuple(x0.shape[1:]), generator=torch.Generator().manual_seed(0))
            sigma = model.model_sampling.sigmas[timestep]
            for i in range(0, len(x0), batch):
                xb = x0[i : i + batch]
                model.apply_model(xb + sigma * noise, sigma.expand(len(xb)), c_crossattn=cond.expand(len(xb), -1, -1))
                means.append(torch.cat([seen[k].mean(1) for k in range(len(layers))], 1))
                stds.append(torch.cat([seen[k].std(1) for k in range(len(layers))], 1))
    finally:
        for h in hooks:
            h.remove()
    return torch.cat(means).double().numpy(), torch.cat(stds).double().numpy()


def pixel_stats(images: torch.Tensor) -> np.ndarray:
    """[N, 7] hand-made statistics of [N, H, W, 3] images in [0, 1]."""
    rgb = images.double().numpy()
    g = rgb.mean(-1)
    lap = np.abs(4 * g[:, 1:-1, 1:-1] - g[:, :-2, 1:-1] - g[:, 2:, 1:-1] - g[:, 1:-1, :-2] - g[:, 1:-1, 2:])
    dx = np.abs(np.diff(g, axis=2))
    saturated = ((rgb.min(-1) > 0.98) | (rgb.max(-1) < 0.02)).mean((1, 2))
    eps = 1e-6
    return np.stack(
        [
            lap.mean((1, 2)),
            np.percentile(lap.reshape(len(g), -1), 99, axis=1),
            dx.mean((1, 2)),
            g.std((1, 2)),
            saturated,
            dx[:, :, 7::8].mean((1, 2)) / (dx.mean((1, 2)) + eps),  # JPEG's 8-px block edges
            lap.mean((1, 2)) / (dx.mean((1, 2)) + eps),
        ],
        1,
    )


def ridge(alpha: float) -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """fit(X, y) on standardised columns, then predict X_new."""

    def fit_predict(x: np.ndarray, y: np.ndarray, x_new: np.ndarray) -> np.ndarray:
        mu, sd = x.mean(0), x.std(0) + 1e-9
        z, z_new = (x - mu) / sd, (x_new - mu) / sd
        w = np.linalg.solve(z.T @ z + alpha * np.eye(z.shape[1]), z.T @ (y - y.mean()))
        return z_new @ w + y.mean()

    return fit_predict


def held_out_fit(x: np.ndarray, y: np.ndarray, x_test: np.ndarray, y_test: np.ndarray) -> dict[str, float]:
    """Ridge with alpha chosen on the last fifth of the training rows (SRCC), refit on all, scored on the test."""
    from scipy import stats

    cut = int(len(y) * 0.8)
    alpha = max(ALPHAS, key=lambda a: stats.spearmanr(ridge(a)(x[:cut], y[:cut], x[cut:]), y[cut:])[0])
    return {**correlations(ridge(alpha)(x, y, x_test), y_test), "alpha": alpha, "features": int(x.shape[1])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=Path, required=True, help="image folder; its labels are <folder>.labels.csv")
    ap.add_argument("--test", type=Path, required=True)
    ap.add_argument("--base", type=Path, default=TOY_BASE)
    ap.add_argument("--timestep", type=int, default=3)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    from training.common import host

    host.import_host()
    base = host.load_base(a.base, plugins=["toy"])
    sets = [load_set(d, d.parent / f"{d.name}.labels.csv") for d in (a.train, a.test)]
    (train_images, y), (test_images, y_test) = sets
    (m, s), (m_test, s_test) = (attn2_inputs(base, im, a.timestep) for im in (train_images, test_images))
    out = {
        "timestep": a.timestep,
        "mean": held_out_fit(m, y, m_test, y_test),
        "mean+std": held_out_fit(np.hstack([m, s]), y, np.hstack([m_test, s_test]), y_test),
        "pixels": held_out_fit(pixel_stats(train_images), y, pixel_stats(test_images), y_test),
    }
    report(out, a.json)


if __name__ == "__main__":
    main()
