"""Run checkpoints, shared by both trainers: out/checkpoints/step-NNNNNN/ with accelerate's state (model,
optimizer, RNG), the trained module's flat weights and state.json (step and the run's settings).

Written atomically (a temporary folder, renamed when complete), after checking that every process holds the
same weights. `--resume latest` finds the newest with latest_checkpoint().
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Optional

from training.common.errors import TrainingError

STATE_FILE = "state.json"
WEIGHTS_FILE = "adapter.safetensors"  # the trained module's flat_state() (an IQA-Adapter's, or a GenzIQA LoRA's)


def latest_checkpoint(out: Path) -> Optional[Path]:
    found = sorted((out / "checkpoints").glob("step-*"))
    return found[-1] if found else None


def read_state(checkpoint: Path) -> dict[str, Any]:
    path = Path(checkpoint) / STATE_FILE
    if not path.is_file():
        raise TrainingError(
            f"{checkpoint} is not a training checkpoint (it has no {STATE_FILE}). Give a folder "
            "out/checkpoints/step-NNNNNN written by `python -m training train` or `genziqa-train`."
        )
    return json.loads(path.read_text())


def write_checkpoint(accelerator: Any, module: Any, out: Path, step: int, settings: dict, keep: int) -> Path:
    """Save atomically: into a temporary folder, renamed when complete, so a crash never leaves half a checkpoint."""
    from safetensors.torch import save_file

    checksums = rank_checksums(accelerator, accelerator.unwrap_model(module))
    if len(set(checksums)) != 1:
        raise TrainingError(
            f"At step {step} the processes hold different weights (checksums {checksums}): "
            "gradient synchronisation failed. Check the launch (accelerate launch, same arguments on every node)."
        )
    final = out / "checkpoints" / f"step-{step:06d}"
    tmp = out / "checkpoints" / f".tmp-step-{step:06d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    if accelerator.is_main_process:
        save_file(accelerator.unwrap_model(module).flat_state(), str(tmp / WEIGHTS_FILE))
        (tmp / STATE_FILE).write_text(json.dumps({"step": step, **settings, "rank_checksums": checksums}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted((out / "checkpoints").glob("step-*"))[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def rank_checksums(accelerator: Any, module: Any) -> list[int]:
    """A hash of the trained weights on every process (equal when DDP kept them in step)."""
    import hashlib

    import torch

    digest = hashlib.sha256()
    for name, tensor in sorted(module.flat_state().items()):
        digest.update(name.encode())
        digest.update(tensor.float().cpu().numpy().tobytes())
    mine = torch.tensor([int.from_bytes(digest.digest()[:7], "little")], dtype=torch.int64, device=accelerator.device)
    return [int(v) for v in accelerator.gather(mine).cpu()]
