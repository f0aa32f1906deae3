"""Write an IQA-Adapter file: flat IP-Adapter safetensors, metadata and normalisation table in the header.

The one writer behind `export` and `convert`. The file is checked by reading it back with the pack's own
loader before it replaces anything at the destination, so a file that Load IQA-Adapter would refuse is
never written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping, Optional

import torch

from adapter.errors import IQAAdapterError
from adapter.metadata import HEADER_KEY, TABLE_HEADER_KEY
from training.common.errors import TrainingError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def write_adapter_file(
    flat: Mapping[str, torch.Tensor],
    out: Path,
    metadata: Mapping[str, Any],
    table: Optional[Mapping[str, Any]],
    dtype: str = "fp16",
) -> Path:
    from safetensors.torch import save_file

    from adapter.model import IQAAdapter

    if dtype not in DTYPES:
        raise TrainingError(f"--dtype must be one of {', '.join(DTYPES)}, got {dtype!r}.")
    out = Path(out)
    if out.suffix != ".safetensors":
        raise TrainingError(f"--out {out}: IQA-Adapter files are written as .safetensors; name it NAME.safetensors.")
    header = {HEADER_KEY: json.dumps(dict(metadata))}
    if table is not None:
        header[TABLE_HEADER_KEY] = json.dumps(dict(table))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp.safetensors")
    save_file({k: v.detach().to(DTYPES[dtype]).contiguous() for k, v in flat.items()}, str(tmp), metadata=header)
    try:
        IQAAdapter.load(tmp)
    except IQAAdapterError as exc:
        tmp.unlink(missing_ok=True)
        raise TrainingError(f"The adapter written for {out.name} does not load in Load IQA-Adapter: {exc}") from None
    os.replace(tmp, out)
    return out
