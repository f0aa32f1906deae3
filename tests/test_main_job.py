"""The README's main job, end to end: the real host's HTTP server and prompt queue, in a subprocess."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_main_job_runs_the_sweep_through_the_prompt_queue(tmp_path):
    out = tmp_path / "demo"
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "run_workflow.py"), "--out", str(out), "--timeout", "300"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    images = sorted(out.glob("iqa_sweep_*.png"))
    assert len(images) == 5
    rows = [line for line in (out / "scores.md").read_text().splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split("|")[2].strip() for r in rows] == ["1", "25", "50", "75", "99"]
    assert str(out) in proc.stdout
