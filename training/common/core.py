"""The pack's core modules (adapter/, guidance/) for the training tools, which run outside the host.

guidance/ imports adapter/ relatively (`from ..adapter.errors import ...`), as the host imports the pack as one
package. Run from the pack's folder (`python -m training`), adapter/ and guidance/ are top-level and that
relative import has no parent. So the pack folder is registered here as a package of its own, CORE, with no
code of its own (the pack's __init__.py, which imports the nodes and so the host, is never run), and
`CORE.adapter` is the top-level `adapter` itself: one set of classes (IQAAdapterError, NormTable) whether
reached as `adapter.x` or through guidance.
"""

from __future__ import annotations

import importlib
import sys
import types
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]  # the pack's folder (training/common/core.py)
CORE = "iqa_adapter_core"


def _install() -> None:
    if CORE in sys.modules:
        return
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import adapter  # noqa: F401 - imports every adapter module (adapter/__init__.py)

    pkg = types.ModuleType(CORE, "The IQA-Adapter pack's folder as a package, without its node-loading __init__.")
    pkg.__path__ = [str(ROOT)]
    pkg.__package__ = CORE
    sys.modules[CORE] = pkg
    for name, mod in list(sys.modules.items()):
        if name == "adapter" or name.startswith("adapter."):
            sys.modules[f"{CORE}.{name}"] = mod
    pkg.adapter = sys.modules["adapter"]  # type: ignore[attr-defined]


def guidance(module: str) -> ModuleType:
    """guidance.<module> (e.g. 'iqa_models', 'metric_specs', 'weights'), importable outside the host."""
    _install()
    return importlib.import_module(f"{CORE}.guidance.{module}")
