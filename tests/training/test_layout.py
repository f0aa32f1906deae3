"""The layout of training/ (docs/training.md, "Layout"): two trainers on one shared part, imports one way.

The import graph is read from the source (every import, at module level or inside a function, since a lazy
import closes a cycle as surely at run time): it has no cycle, common/ imports no trainer, neither trainer
imports the other, and nothing under training/ imports the toy world. The toy plugs its checkpoint format in
(toy/__init__.py registers it with training/common/base_formats.py); a fresh interpreter shows that
`--base` reads a toy file only once the plug-in is named.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import conftest
import pytest

REPO = conftest.REPO
TRAINING = REPO / "training"
TOY_BASE = REPO / "weights" / "toy" / "toy_base.safetensors"


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(TRAINING.rglob("*.py"))}


def _imported(path: Path) -> set[str]:
    """Every module name an import statement in the file names (absolute; relative ones resolved), with
    `from pkg import name` counted as pkg.name when that is a module; plus import_module("...") literals."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) in (
            "import_module",
            "__import__",
        ):
            names.update(a.value for a in node.args[:1] if isinstance(a, ast.Constant) and isinstance(a.value, str))
    return names


def _graph() -> dict[str, set[str]]:
    """module -> the training modules it imports, and the packages above it (whose __init__ runs first)."""
    graph = {}
    for name, path in MODULES.items():
        deps = {d for d in _imported(path) if d in MODULES}
        parts = name.split(".")
        deps |= {".".join(parts[:i]) for i in range(1, len(parts))}
        graph[name] = deps - {name}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import cycle as a list of modules, or [] (depth-first search, white/grey/black)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                return stack[stack.index(dep) :] + [dep]
            if dep not in state and (found := visit(dep)):
                return found
        stack.pop()
        state[node] = 2
        return []

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return []


def test_the_layout_has_two_trainers_and_a_shared_part():
    packages = {n for n, p in MODULES.items() if p.name == "__init__.py"}
    assert packages == {"training", "training.common", "training.iqa_adapter", "training.genziqa"}
    assert (TRAINING / "__init__.py").read_text().strip() and (TRAINING / "__main__.py").is_file()


def test_the_import_graph_has_no_cycle():
    graph = _graph()
    assert graph["training.iqa_adapter.loop"], "the graph reader found no import: it is broken"
    cycle = _cycle(graph)
    assert not cycle, f"import cycle: {' -> '.join(cycle)}"
    # The reader finds a cycle where there is one (the one this layout removed: train -> loop -> train).
    assert _cycle({"train": {"loop"}, "loop": {"export", "train"}, "export": set()})


def test_imports_go_one_way_trainer_to_common():
    for name, deps in _graph().items():
        if name.startswith("training.common"):
            assert not {
                d for d in deps if d.startswith(("training.iqa_adapter", "training.genziqa", "training.cli"))
            }, f"{name} (shared) imports a trainer: {sorted(deps)}"
        for trainer, other in (("iqa_adapter", "genziqa"), ("genziqa", "iqa_adapter")):
            if name.startswith(f"training.{trainer}"):
                assert not {d for d in deps if d.startswith(f"training.{other}")}, f"{name} imports the {other} trainer"


def test_nothing_under_training_imports_the_toy():
    for name, path in MODULES.items():
        toy = sorted(d for d in _imported(path) if d == "toy" or d.startswith("toy."))
        assert not toy, f"{name} imports {toy}: the toy registers itself instead (training/common/base_formats.py)"


def test_every_module_imports_first_without_the_toy():
    """Each module imported first, with no training module loaded yet (a module-level cycle fails whichever
    module comes first), in a fresh interpreter that never imports the toy."""
    names = sorted(n for n in MODULES if n != "training.__main__")  # __main__ runs the command line
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    for m in [m for m in sys.modules if m == 'training' or m.startswith('training.')]:\n"
        "        del sys.modules[m]\n"
        "    importlib.import_module(name)\n"
        "assert not [m for m in sys.modules if m == 'toy' or m.startswith('toy.')], 'the toy was imported'\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-3000:]


def test_a_registered_format_is_found_first(monkeypatch, tmp_path):
    from training.common import base_formats

    monkeypatch.setattr(base_formats, "_FORMATS", {})
    sentinel = ("patcher", "clip", "vae")
    base_formats.register_checkpoint_format("fake", lambda p: p.suffix == ".fake", lambda p: sentinel)
    assert base_formats.registered_formats() == ("fake",)
    assert base_formats.find_format(tmp_path / "a.fake").load(tmp_path / "a.fake") is sentinel
    assert base_formats.find_format(tmp_path / "a.safetensors") is None
    with pytest.raises(ValueError, match="two callables"):
        base_formats.register_checkpoint_format("bad", None, None)


def test_an_unknown_plugin_is_a_training_error(tmp_path):
    from training.common import host
    from training.common.errors import TrainingError

    (tmp_path / "base.safetensors").write_bytes(b"\0" * 16)
    with pytest.raises(TrainingError, match="--plugin no_such_plugin_module: cannot import it"):
        host.load_base(tmp_path / "base.safetensors", plugins=["no_such_plugin_module"])


@pytest.mark.skipif(not TOY_BASE.is_file(), reason="weights/toy/toy_base.safetensors is not there")
def test_a_toy_base_loads_through_the_plugin_only():
    """In a fresh interpreter (here the toy is already imported, and so registered, by the test host's toy
    nodes): without --plugin the host's loader refuses the file and the error names --plugin toy; with it,
    the toy's own loader reads it."""
    code = (
        "import sys\n"
        "from training.common import host\n"
        "from training.common.errors import TrainingError\n"
        "host.import_host()\n"
        "try:\n"
        f"    host.load_base({str(TOY_BASE)!r})\n"
        "except TrainingError as exc:\n"
        "    assert '--plugin toy' in str(exc), exc\n"
        "else:\n"
        "    raise AssertionError('a toy file loaded without its plug-in')\n"
        "assert 'toy' not in sys.modules\n"
        f"base = host.load_base({str(TOY_BASE)!r}, plugins=['toy'])\n"
        "print(type(base.patcher.model.model_config).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "ToyModelConfig"
