"""Does the toy reference embedding tell blur from noise from JPEG, not only "how bad"? Measured on pictures
no model trained on.

Pictures of the toy photos (toy.patches.make_patch) at two seeds no training used: 106 to fit, 107 to test.
Kept: the clean ones and those with exactly one degradation at level >= MIN_LEVEL, labelled clean, blur,
noise or JPEG. Each is embedded as Reference Quality Transfer embeds a reference (the node's own function,
guidance.reference_embedding.embed_reference, with the toy spec weights/toy/toy_quality_embedding_spec.json
on the toy quality net). A linear discriminant (scikit-learn) fitted on the first set classifies the second;
the same classifier on the single toy_quality score shows what a "how bad" number alone can tell.

    python scripts/toy_separability.py --out docs/images/toy_reference_separability.png

Prints the held-out accuracies (and --json writes them); the figure shows the test pictures in the
discriminant's first two axes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CLASSES = ("clean", "blur", "noise", "jpeg")
MIN_LEVEL = 0.3
FIT_SEED, TEST_SEED = 106, 107


def labelled_pictures(seed: int, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(host IMAGEs [N, 64, 64, 3] in [0, 1], class index per picture) of the kept pictures of one seed."""
    from toy.patches import make_patch
    from toy.sources import SOURCES, load_rgb

    photos = [load_rgb(s) for s in SOURCES]
    images, labels = [], []
    for i in range(count):
        _, pic, d = make_patch(photos, seed, i)
        levels = np.array([d.blur, d.noise, d.jpeg])
        if not levels.any():
            label = 0
        elif (levels > 0).sum() == 1 and levels.max() >= MIN_LEVEL:
            label = 1 + int(levels.argmax())
        else:
            continue
        images.append(pic.astype(np.float32) / 255.0)
        labels.append(label)
    return np.stack(images), np.array(labels)


def embed(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(reference embeddings [N, 192], toy_quality scores [N]) through the pack's own functions."""
    import torch

    from toy.quality_iqa import SPEC_FILE, load_iqa_model
    from training.common.core import guidance

    model = load_iqa_model(guidance("iqa_models"), guidance("metric_specs"))
    from adapter.embedding_spec import spec_from_dict  # the same module guidance uses (training.common.core)

    spec = spec_from_dict(json.loads(SPEC_FILE.read_text()), SPEC_FILE.name)
    x = torch.from_numpy(images)
    emb = guidance("reference_embedding").embed_reference(model, x, spec).numpy()
    return emb, model.score(x, channels_last=True).numpy()


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1500, help="pictures drawn per seed (about a third are kept)")
    ap.add_argument("--out", type=Path, default=Path("out/toy/separability.png"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    from sklearn.discriminant_analysis import LinearDiscriminantAnalysis

    (fit_x, fit_y), (test_x, test_y) = labelled_pictures(FIT_SEED, args.count), labelled_pictures(TEST_SEED, args.count)
    fit_e, fit_q = embed(fit_x)
    test_e, test_q = embed(test_x)
    lda = LinearDiscriminantAnalysis().fit(fit_e, fit_y)
    by_score = LinearDiscriminantAnalysis().fit(fit_q[:, None], fit_y)
    pred = lda.predict(test_e)
    result = {
        "fit_pictures": int(len(fit_y)),
        "test_pictures": int(len(test_y)),
        "accuracy_embedding": float((pred == test_y).mean()),
        "accuracy_score_only": float((by_score.predict(test_q[:, None]) == test_y).mean()),
        "per_class_embedding": {c: float((pred[test_y == k] == k).mean()) for k, c in enumerate(CLASSES)},
        "test_counts": {c: int((test_y == k).sum()) for k, c in enumerate(CLASSES)},
    }
    print(json.dumps(result, indent=1))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = lda.transform(test_e)
    fig, ax = plt.subplots(figsize=(5.4, 4.4))
    for k, c in enumerate(CLASSES):
        ax.scatter(z[test_y == k, 0], z[test_y == k, 1], s=9, alpha=0.7, label=f"{c} ({(test_y == k).sum()})")
    ax.set_xlabel("discriminant axis 1")
    ax.set_ylabel("discriminant axis 2")
    ax.set_title(
        f"Toy reference embedding, held-out pictures (seed {TEST_SEED})\n"
        f"type told apart: {result['accuracy_embedding']:.0%} (toy_quality score alone: "
        f"{result['accuracy_score_only']:.0%})",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
