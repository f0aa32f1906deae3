"""toy.condition_check (whether a reference adapter has learned a degradation) measures what it says: each
condition reaches the denoiser, equal embeddings give equal estimates, and bad input is refused by name.
Its findings on the shipped files are in docs/training.md; here the embeddings are random, so the test
checks the instrument, not the adapter."""

from __future__ import annotations

import conftest  # noqa: F401  (starts the host; toy/ is imported from the repo root)
import numpy as np
import pytest
from workflow_fixtures import TOY_WEIGHTS

from toy.condition_check import check, pictures
from toy.errors import ToyError
from toy.patches import write_patches

BASE = TOY_WEIGHTS / "toy_base.safetensors"
ADAPTER = TOY_WEIGHTS / "toy_adapter_reference.safetensors"
SIGMAS = (0.5, 0.1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """300 toy pictures: enough for 4 with JPEG alone above 0.6 (5.6 % of the pictures) and 4 clean ones."""
    folder = tmp_path_factory.mktemp("condition") / "patches"
    write_patches(folder, count=300, seed=0)
    return folder


def _embeddings(data, seed: int, same: bool = False):
    import adapter as core  # top-level from the repo root, as toy.condition_check imports it

    width = core.IQAAdapter.load(ADAPTER).spec.input_dim
    rng = np.random.default_rng(seed)
    jpeg, clean = pictures(data, "jpeg", 4)
    vectors = rng.normal(size=(len(jpeg), width)).astype(np.float32)
    out = {r["id"]: v for r, v in zip(jpeg, vectors)}
    others = vectors if same else rng.normal(size=vectors.shape).astype(np.float32)
    out.update({r["id"]: v for r, v in zip(clean, others)})
    return out


def test_each_condition_reaches_the_denoiser(data):
    original, rows = check(BASE, ADAPTER, data, _embeddings(data, 0), "jpeg", n=4, sigmas=SIGMAS)
    assert original > 1.1, "JPEG pictures are blocky by this measure"
    for _, row in rows:
        assert row["own"] != row["none"] and row["own"] != row["clean"]


def test_equal_embeddings_give_equal_estimates(data):
    _, rows = check(BASE, ADAPTER, data, _embeddings(data, 1, same=True), "jpeg", n=4, sigmas=SIGMAS)
    for _, row in rows:
        assert row["own"] == row["clean"] != row["none"]


def test_bad_input_is_refused_by_name(data, tmp_path):
    embeddings = _embeddings(data, 0)
    with pytest.raises(ToyError, match="choose one of blur, noise, jpeg"):
        check(BASE, ADAPTER, data, embeddings, "fog", n=4)
    dropped = dict(embeddings)
    first = pictures(data, "jpeg", 4)[0][0]["id"]
    del dropped[first]
    with pytest.raises(ToyError, match=f"no embedding for pictures \\['{first}'\\].*training embed"):
        check(BASE, ADAPTER, data, dropped, "jpeg", n=4)
    with pytest.raises(ToyError, match="toy.patches"):
        pictures(tmp_path / "nowhere", "jpeg", 4)
