"""Best of N on the toy world, seen: the "Best 2 of 8 at p99" example through the real host's queue on the
toy (workflow_fixtures.toy_prompt), with every candidate saved too, drawn as one row of eight with each
image's PIQE (the example's IQA Score on the toy; lower is better) and the two that IQA Best of N kept
marked.

    python scripts/toy_best_of_n.py --out out/toy/best_of_n       # best_of_n.png (docs/nodes.md shows it)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import toy_sweep  # noqa: E402
import workflow_fixtures  # noqa: E402
import workflow_titles  # noqa: E402
import workflow_to_api  # noqa: E402
from run_workflow import parse_score_text  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = "sdxl_best_of_n"


def best_of_n_prompt(object_info: dict) -> dict:
    """The example on the toy, with the decoded candidates saved as well (node 'all')."""
    ui = json.loads(workflow_titles.example_path(EXAMPLE).read_text())
    p = workflow_fixtures.toy_prompt(workflow_to_api.convert(ui, object_info), workflow_fixtures.ToyOptions())
    decode = next(i for i, n in p.items() if n["class_type"] == "VAEDecode")
    p["all"] = {"class_type": "SaveImage", "inputs": {"images": [decode, 0], "filename_prefix": "toy_candidates"}}
    return p


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=REPO / "out" / "toy" / "best_of_n")
    args = ap.parse_args(argv)
    with toy_sweep.toy_server(args.out) as server:
        prompt = best_of_n_prompt(server.object_info())
        entry = server.run(prompt, timeout=600)
        candidates = server.output_images(entry)["all"]
        best = next(i for i, n in prompt.items() if n["class_type"] == "IQABestOfN")
        score = next(i for i, n in prompt.items() if n["class_type"] == "IQAScore")
        summary = entry["outputs"][best]["text"][0].splitlines()  # rank, index, score, percentile per kept image
        kept = [int(line.split("\t")[1]) for line in summary[2:] if line[:1].isdigit()]
        _, rows = parse_score_text("\n".join(entry["outputs"][score]["text"]))
        shown = []
        for i, src in enumerate(candidates):
            shown.append(args.out / f"candidate{i}.png")
            shown[-1].write_bytes(Path(src).read_bytes())
    labels = [f"#{i}: PIQE {rows[i][0]:.1f}" + ("\nkept" if i in kept else "") for i in range(len(shown))]
    toy_sweep.grid(shown, labels, args.out / "best_of_n.png")
    print(f"kept {kept}; {args.out / 'best_of_n.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
