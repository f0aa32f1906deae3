import test_fidelity_diffusers as T
import pytest
def test_d(adapter_dir, monkeypatch):
    orig = T.rel_err
    seen = []
    monkeypatch.setattr(T, "rel_err", lambda a, b: (seen.append(orig(a, b)), seen[-1])[1])
    for layout in ("sd15", "sdxl"):
        p = T.Pair(layout, adapter_dir)
        for f in ("swapped layers", "middle block left out"):
            T.test_comparison_detects_a_wrong_layer_mapping(p, f)
            print(layout, f, "%.2e" % seen[-1])
