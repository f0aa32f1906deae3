"""Derive the API-format prompt (what POST /prompt takes) from a UI-format workflow (what the editor saves).

The UI format stores widget values by position (`widgets_values`), in the order in which the 2024 ComfyUI
editor creates widgets from a node's definition; links are [id, from_node, from_slot, to_node, to_slot,
type]. So the conversion needs each node's definition: the host's /object_info, fetched over HTTP or built
from node classes in-process with object_info_from_classes(). Both give the same data.

The widget order reproduces the editor's rules (scripts/app.js registerNodeDef, scripts/widgets.js):
required inputs then optional ones; a list type is a combo, and so is "COMBO" with an "options" list (how
upstream ComfyUI's V3 nodes, such as LatentBatchSeedBehavior in 0.3.64, describe one); INT, FLOAT, STRING
and BOOLEAN are widgets;
an INT named seed/noise_seed (or with control_after_generate) is followed by an editor-only
"control_after_generate" value; a combo with control_after_generate by two (control and filter list);
an IMAGE input flagged image_upload gets an "upload" button widget at the end of the required inputs.

Usage:
    python scripts/workflow_to_api.py "example_workflows/Quality sweep p1 to p99 (SDXL).json" --server http://127.0.0.1:8188
    python scripts/workflow_to_api.py WORKFLOW.json --object-info object_info.json -o prompt.json
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
SEED_NAMES = ("seed", "noise_seed")
# Editor-only nodes: never sent to the server. Reroute passes its input through.
FRONTEND_ONLY = ("Note", "Reroute", "PrimitiveNode")
MUTED, BYPASSED = 2, 4
# What the editor saves for each editor-only widget role of widget_slots (the server never sees them).
EDITOR_ONLY_VALUES = {"control": "fixed", "filter": "", "upload": "image"}

ObjectInfo = Mapping[str, Mapping[str, Any]]


class WorkflowError(ValueError):
    """A UI workflow that cannot be converted: names the node, its type and what does not fit."""


def _options(spec: Any) -> dict:
    return spec[1] if isinstance(spec, (list, tuple)) and len(spec) > 1 and isinstance(spec[1], dict) else {}


def is_combo(spec: Any) -> bool:
    """A dropdown: the V1 form (a list of choices) or the V3 form ("COMBO", {"options": [...]})."""
    kind = spec[0] if isinstance(spec, (list, tuple)) and spec else spec
    return isinstance(kind, list) or kind == "COMBO"


def combo_options(spec: Any) -> list:
    """A combo's choices in either form."""
    return list(spec[0]) if isinstance(spec[0], list) else list(_options(spec).get("options") or [])


def editor_inputs(node_def: Mapping[str, Any]) -> dict[str, Any]:
    """A node's inputs as the editor sees them: required (plus the upload button), then new optional keys."""
    inputs = node_def.get("input", {})
    merged = dict(inputs.get("required", {}) or {})
    if _options(merged.get("image")).get("image_upload") is True:
        merged["upload"] = ["IMAGEUPLOAD"]  # what the editor's Comfy.UploadImage extension adds
    for name, spec in (inputs.get("optional", {}) or {}).items():
        merged.setdefault(name, spec)
    return merged


def widget_slots(node_def: Mapping[str, Any]) -> list[tuple[Optional[str], str]]:
    """The widgets the editor makes for a node, in widgets_values order, as (input name, role). Role
    'value' is a real input; 'control' (control_after_generate), 'filter' (a combo's filter list) and
    'upload' (the upload button) are editor-only values the server never sees (name None)."""
    slots: list[tuple[Optional[str], str]] = []
    for name, spec in editor_inputs(node_def).items():
        kind, opts = spec[0], _options(spec)
        if is_combo(spec):
            slots.append((name, "value"))
            if opts.get("control_after_generate"):
                slots += [(None, "control"), (None, "filter")]
        elif kind in WIDGET_TYPES:
            slots.append((name, "value"))
            if kind == "INT" and (name in SEED_NAMES or opts.get("control_after_generate")):
                slots.append((None, "control"))
        elif kind == "IMAGEUPLOAD":
            slots.append((None, "upload"))
    return slots


def widget_names(node_def: Mapping[str, Any]) -> list[Optional[str]]:
    """widget_slots' input names; None marks the editor-only values."""
    return [name for name, _ in widget_slots(node_def)]


def is_widget_input(spec: Any) -> bool:
    """Whether the editor shows an input as a widget (rather than a connection slot) by default."""
    kind = spec[0]
    return is_combo(spec) or kind in WIDGET_TYPES or kind == "IMAGEUPLOAD"


def socket_inputs(node_def: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(name, type) of the inputs the editor shows as connection slots, in order."""
    out = []
    for name, spec in editor_inputs(node_def).items():
        if not is_widget_input(spec):
            out.append((name, spec[0]))
    return out


def widget_default(spec: Any) -> Any:
    """The value a fresh widget shows: the default, else a combo's first entry, else the type's zero."""
    kind, opts = spec[0], _options(spec)
    if "default" in opts:
        return opts["default"]
    if is_combo(spec):
        choices = combo_options(spec)
        return choices[0] if choices else ""
    return {"INT": opts.get("min", 0), "FLOAT": opts.get("min", 0.0), "STRING": "", "BOOLEAN": False}.get(kind)


def object_info_from_classes(mappings: Mapping[str, type], display_names: Optional[Mapping[str, str]] = None) -> dict:
    """/object_info's data built in-process from node classes (the fields the conversion reads)."""
    display_names = display_names or {}
    info = {}
    for name, cls in mappings.items():
        outputs = tuple(getattr(cls, "RETURN_TYPES", ()))
        info[name] = {
            "input": cls.INPUT_TYPES(),
            "output": list(outputs),
            "output_is_list": list(getattr(cls, "OUTPUT_IS_LIST", None) or [False] * len(outputs)),
            "output_name": list(getattr(cls, "RETURN_NAMES", None) or outputs),
            "output_tooltips": list(getattr(cls, "OUTPUT_TOOLTIPS", None) or []),
            "name": name,
            "display_name": display_names.get(name, name),
            "description": getattr(cls, "DESCRIPTION", ""),
            "category": getattr(cls, "CATEGORY", "sd"),
            "output_node": bool(getattr(cls, "OUTPUT_NODE", False)),
        }
    return info


def fetch_object_info(base_url: str, timeout: float = 30.0) -> dict:
    with urllib.request.urlopen(base_url.rstrip("/") + "/object_info", timeout=timeout) as r:
        return json.loads(r.read())


def _describe(node: Mapping[str, Any]) -> str:
    return f"node #{node.get('id')} ({node.get('type')}{', ' + repr(node['title']) if node.get('title') else ''})"


def node_widget_values(node: Mapping[str, Any], node_def: Mapping[str, Any]) -> dict[str, Any]:
    """Map a UI node's widgets_values onto input names; the count must be exactly what the editor makes."""
    names = widget_names(node_def)
    values = node.get("widgets_values", [])
    if isinstance(values, dict):  # some editors save widgets by name
        unknown = sorted(set(values) - {n for n in names if n})
        if unknown:
            raise WorkflowError(f"{_describe(node)}: widget values {unknown} are not inputs of {node['type']}.")
        return dict(values)
    if len(values) != len(names):
        shown = ", ".join(n or "(editor-only)" for n in names)
        raise WorkflowError(
            f"{_describe(node)} has {len(values)} widget values, but the editor makes {len(names)} "
            f"widgets for {node['type']}: {shown}. Re-save the workflow from the editor, or fix its widgets_values."
        )
    return {name: value for name, value in zip(names, values) if name is not None}


def convert(workflow: Mapping[str, Any], object_info: ObjectInfo, keep_titles: bool = True) -> dict:
    """API-format prompt of a UI workflow. Muted nodes are dropped; bypassed nodes pass their input of the
    same type through; Reroutes are followed; Notes are skipped."""
    if "nodes" not in workflow or "links" not in workflow:
        raise WorkflowError("Not a UI-format workflow (no 'nodes'/'links'); an API-format prompt needs no conversion.")
    nodes = {n["id"]: n for n in workflow["nodes"]}
    links = {link[0]: link for link in workflow["links"] if link}

    def source(link_id: Optional[int], want_type: str, seen: frozenset = frozenset()) -> Optional[list]:
        """[node id, slot] that feeds a link, through Reroutes and bypassed nodes; None if nothing does."""
        if link_id is None or link_id not in links:
            return None
        _, src_id, src_slot, _, _, _ = links[link_id][:6]
        src = nodes.get(src_id)
        if src is None or src_id in seen:
            raise WorkflowError(f"link {link_id} comes from a node that is missing or part of a loop (#{src_id}).")
        seen = seen | {src_id}
        if src["type"] == "Reroute":
            return source((src.get("inputs") or [{}])[0].get("link"), want_type, seen)
        if src["type"] == "PrimitiveNode":
            return None  # its value already sits in the target's widgets_values
        if src.get("mode") == MUTED:
            return None
        if src.get("mode") == BYPASSED:
            for inp in src.get("inputs", []) or []:
                if inp.get("type") == want_type and inp.get("link") is not None:
                    return source(inp["link"], want_type, seen)
            return None
        return [str(src_id), src_slot]

    prompt: dict[str, dict] = {}
    for node in sorted(workflow["nodes"], key=lambda n: n.get("order", 0)):
        kind = node["type"]
        if kind in FRONTEND_ONLY or node.get("mode") in (MUTED, BYPASSED):
            continue
        if kind not in object_info:
            raise WorkflowError(f"{_describe(node)}: the host has no node type '{kind}' (a missing custom node pack?).")
        node_def = object_info[kind]
        inputs: dict[str, Any] = node_widget_values(node, node_def)
        for slot in node.get("inputs", []) or []:
            src = source(slot.get("link"), slot.get("type", ""))
            if src is not None:
                inputs[slot["name"]] = src
        entry: dict[str, Any] = {"class_type": kind, "inputs": inputs}
        if keep_titles:
            entry["_meta"] = {"title": node.get("title") or node_def.get("display_name") or kind}
        prompt[str(node["id"])] = entry
    return prompt


def check_against_definitions(workflow: Mapping[str, Any], object_info: ObjectInfo) -> list[str]:
    """Problems the editor would show or hide silently: slots that name no input, slot types that differ,
    outputs that differ from the node's definition. Empty when the workflow matches the host."""
    problems = []
    for node in workflow["nodes"]:
        if node["type"] in FRONTEND_ONLY:
            continue
        node_def = object_info.get(node["type"])
        if node_def is None:
            problems.append(f"{_describe(node)}: unknown node type")
            continue
        all_inputs = editor_inputs(node_def)
        for slot in node.get("inputs", []) or []:
            name = slot.get("name")
            if name not in all_inputs:
                problems.append(f"{_describe(node)}: input slot '{name}' is not an input of {node['type']}")
                continue
            spec_type = all_inputs[name][0]
            want = "COMBO" if is_combo(all_inputs[name]) else spec_type
            if slot.get("type") != want:
                problems.append(f"{_describe(node)}: slot '{name}' has type {slot.get('type')}, the node says {want}")
        declared = [("COMBO" if isinstance(t, list) else t) for t in node_def.get("output", [])]
        got = [o.get("type") for o in node.get("outputs", []) or []]
        if got != declared[: len(got)] or len(got) != len(declared):
            problems.append(f"{_describe(node)}: outputs {got} differ from the node's {declared}")
    for link in workflow["links"]:
        link_id, src, src_slot, dst, dst_slot, ltype = link[:6]
        if src not in {n["id"] for n in workflow["nodes"]} or dst not in {n["id"] for n in workflow["nodes"]}:
            problems.append(f"link {link_id} joins missing nodes")
    return problems


def main(argv: Optional[Iterable[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflow", type=Path, help="UI-format workflow JSON")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--server", default="http://127.0.0.1:8188", help="a running ComfyUI to read /object_info from")
    src.add_argument("--object-info", type=Path, help="a saved /object_info JSON instead of a server")
    ap.add_argument("-o", "--output", type=Path, help="write the prompt here (default: stdout)")
    args = ap.parse_args(list(argv) if argv is not None else None)
    info = json.loads(args.object_info.read_text()) if args.object_info else fetch_object_info(args.server)
    try:
        prompt = convert(json.loads(args.workflow.read_text()), info)
    except WorkflowError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    text = json.dumps(prompt, indent=2) + "\n"
    if args.output:
        args.output.write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
