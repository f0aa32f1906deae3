"""scripts/flag_fold.py: a use_flag adapter rewritten without the flag gives the same tokens for every target,
and its zeros uncond is the original's "average quality" (z = 0, flag on), the one thing the experiment
changes (docs/training.md, "The flag")."""

from __future__ import annotations

import flag_fold
import pytest
import torch
from helpers import pack, tiny


@pytest.fixture
def files(tmp_path):
    src = tiny.write_adapter(
        tmp_path / "flag.safetensors", "sd15", {"metrics": ["topiq_nr", "laion_aes"], "use_flag": True}
    )
    dst = tmp_path / "folded.safetensors"
    assert flag_fold.main([str(src), str(dst)]) == 0
    return src, dst


def _tokens(path, z: torch.Tensor, flag: float | None) -> torch.Tensor:
    adapter = pack.adapter.model.IQAAdapter.load(path)
    x = z if flag is None else torch.cat([z, torch.full((z.shape[0], 1), flag)], 1)
    return adapter.tokens(x)


def test_every_target_gives_the_same_tokens(files):
    src, dst = files
    z = torch.randn(6, 2) * 2
    assert pack.adapter.model.IQAAdapter.load(dst).metadata.use_flag is False
    # float32 sums in another order (bias + w_flag once, at folding): a few ulps of tokens of size ~1.
    torch.testing.assert_close(_tokens(dst, z, None), _tokens(src, z, 1.0), rtol=1e-5, atol=1e-5)


def test_the_folded_zeros_are_the_original_average_quality_not_its_uncond(files):
    src, dst = files
    zeros = torch.zeros(1, 2)
    folded_uncond = _tokens(dst, zeros, None)
    torch.testing.assert_close(folded_uncond, _tokens(src, zeros, 1.0), rtol=1e-5, atol=1e-5)
    assert (folded_uncond - _tokens(src, zeros, 0.0)).abs().max() > 1e-2  # the flag's column is not zero


def test_an_adapter_without_the_flag_is_refused(tmp_path):
    src = tiny.write_adapter(tmp_path / "plain.safetensors", "sd15", {"metrics": ["topiq_nr"], "use_flag": False})
    with pytest.raises(ValueError, match="without use_flag"):
        flag_fold.main([str(src), str(tmp_path / "out.safetensors")])
