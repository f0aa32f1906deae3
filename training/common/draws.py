"""The random draws of one training sample (noise, timestep, condition dropout), a pure function of the run's
seed and the sample's position in the global stream.

So a resumed run draws what the uninterrupted run drew, and N processes draw, sample for sample, what one
process with the same global batch draws: nothing depends on how many processes there are or on RNG state
carried between steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

# The official script's condition dropout: quality only 1 %, text only 5 %, both 1 %.
DROP_QUALITY, DROP_TEXT, DROP_BOTH = 0.01, 0.05, 0.01


@dataclass(frozen=True)
class Draws:
    noise: torch.Tensor  # [B, C, H, W]
    timesteps: torch.Tensor  # [B] integer indices into the model's sigmas
    drop_quality: torch.Tensor  # [B] bool
    drop_text: torch.Tensor  # [B] bool


def _generator(seed: int, position: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 0x9E3779B1 + position * 0x85EBCA77) % (2**63))


def sample_draws(
    seed: int,
    positions: list[int],
    latent_shape: tuple[int, ...],
    num_timesteps: int,
    drop_quality: float = DROP_QUALITY,
    drop_text: float = DROP_TEXT,
    drop_both: float = DROP_BOTH,
) -> Draws:
    """Draws for the samples at these global stream positions; latent_shape is one sample's [C, H, W]."""
    noise, steps, dq, dt = [], [], [], []
    for pos in positions:
        g = _generator(seed, pos)
        u = float(torch.rand((), generator=g))
        steps.append(int(torch.randint(0, num_timesteps, (), generator=g)))
        noise.append(torch.randn(latent_shape, generator=g))
        q = u < drop_quality
        t = drop_quality <= u < drop_quality + drop_text
        both = drop_quality + drop_text <= u < drop_quality + drop_text + drop_both
        dq.append(q or both)
        dt.append(t or both)
    return Draws(torch.stack(noise), torch.tensor(steps), torch.tensor(dq), torch.tensor(dt))
