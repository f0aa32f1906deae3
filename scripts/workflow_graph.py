"""A small builder for UI-format (LiteGraph, editor version 0.4) workflows, driven by the host's node
definitions, so that widget order, slot lists and output lists are what the 2024 ComfyUI editor makes.

    g = Graph(object_info)
    ckpt = g.add("CheckpointLoaderSimple", (40, 100), ckpt_name="sd_xl_base_1.0.safetensors")
    sampler = g.add("KSampler", (600, 100), model=ckpt.out("MODEL"), seed=42, ...)
    workflow = g.to_json()

Widgets not given take the node's default; connection inputs are given as node.out(name or index).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Sequence, Union

from workflow_to_api import EDITOR_ONLY_VALUES, editor_inputs, is_combo, is_widget_input, widget_default, widget_slots

TITLE_H, SLOT_H, WIDGET_H, MULTILINE_H = 30, 20, 24, 110

# The editor's own node colours (LGraphCanvas.node_colors): (title colour, body colour).
PALETTE = {
    "red": ("#322", "#533"),
    "green": ("#232", "#353"),
    "blue": ("#223", "#335"),
    "purple": ("#323", "#535"),
    "cyan": ("#233", "#355"),
    "yellow": ("#432", "#653"),
    "brown": ("#332922", "#593930"),
}


@dataclass(frozen=True)
class Out:
    node: "Node"
    slot: int

    @property
    def type(self) -> str:
        return self.node.output_types[self.slot]


@dataclass
class Node:
    graph: "Graph"
    id: int
    type: str
    pos: tuple[float, float]
    title: Optional[str]
    values: dict[str, Any]
    size: Optional[tuple[float, float]] = None
    color: Optional[str] = None
    output_links: dict[int, list[int]] = field(default_factory=dict)

    @property
    def definition(self) -> Mapping[str, Any]:
        return self.graph.info[self.type]

    @property
    def output_types(self) -> list[str]:
        return ["COMBO" if isinstance(t, list) else t for t in self.definition.get("output", [])]

    @property
    def output_names(self) -> list[str]:
        names = self.definition.get("output_name") or self.definition.get("output", [])
        return [n if isinstance(n, str) else "COMBO" for n in names]

    def out(self, which: Union[int, str] = 0) -> Out:
        if isinstance(which, str):
            for i, (name, typ) in enumerate(zip(self.output_names, self.output_types)):
                if which in (name, typ):
                    return Out(self, i)
            raise KeyError(f"{self.type} has no output '{which}' (it has {self.output_names})")
        return Out(self, which)


class Graph:
    def __init__(self, object_info: Mapping[str, Mapping[str, Any]]):
        self.info = object_info
        self.nodes: list[Node] = []
        self.links: list[list] = []
        self.groups: list[dict] = []
        self.notes: list[dict] = []

    def add(
        self,
        node_type: str,
        pos: Sequence[float],
        title: Optional[str] = None,
        size: Optional[Sequence[float]] = None,
        color: Optional[str] = None,
        **values: Any,
    ) -> Node:
        if node_type not in self.info:
            raise KeyError(f"the host has no node '{node_type}'")
        known = editor_inputs(self.info[node_type])
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise KeyError(f"{node_type} has no inputs {unknown} (it has {list(known)})")
        node = Node(
            self,
            len(self.nodes) + len(self.notes) + 1,
            node_type,
            (float(pos[0]), float(pos[1])),
            title,
            dict(values),
            tuple(size) if size else None,
            color,
        )
        self.nodes.append(node)
        return node

    def note(self, pos: Sequence[float], text: str, size: Sequence[float] = (360, 160), title: str = "Note") -> None:
        """A Note node (editor-only, never sent to the server)."""
        self.notes.append(
            {
                "id": len(self.nodes) + len(self.notes) + 1,
                "pos": [float(pos[0]), float(pos[1])],
                "size": [float(size[0]), float(size[1])],
                "text": text,
                "title": title,
            }
        )

    def group(self, title: str, bounding: Sequence[float], color: str = "#3f789e") -> None:
        self.groups.append({"title": title, "bounding": [float(b) for b in bounding], "color": color, "font_size": 24})

    # -- serialization ---------------------------------------------------------------------------------
    def _node_json(self, node: Node, link_ids: dict[tuple[int, str], int]) -> dict:
        definition = node.definition
        inputs_def = editor_inputs(definition)
        widgets, slots = [], []
        for name, role in widget_slots(definition):
            if name is None:
                widgets.append(EDITOR_ONLY_VALUES[role])
                continue
            value = node.values.get(name, widget_default(inputs_def[name]))
            if isinstance(value, Out):
                value = widget_default(inputs_def[name])  # a widget fed by a link: the editor keeps a value anyway
            widgets.append(value)
        for name, spec in inputs_def.items():
            kind = spec[0]
            value = node.values.get(name)
            is_widget = is_widget_input(spec)
            if is_widget and not isinstance(value, Out):
                continue
            slot = {"name": name, "type": "COMBO" if is_combo(spec) else kind, "link": link_ids.get((node.id, name))}
            if is_widget:
                slot["widget"] = {"name": name}
            slots.append(slot)
        outputs = []
        for i, (name, typ) in enumerate(zip(node.output_names, node.output_types)):
            outputs.append({"name": name, "type": typ, "links": node.output_links.get(i) or None, "slot_index": i})
        data = {
            "id": node.id,
            "type": node.type,
            "pos": list(node.pos),
            "size": list(node.size or self.auto_size(node)),
            "flags": {},
            "order": 0,
            "mode": 0,
        }
        if slots:
            data["inputs"] = slots
        if outputs:
            data["outputs"] = outputs
        if node.title:
            data["title"] = node.title
        if node.color:
            data["color"], data["bgcolor"] = PALETTE[node.color]
        data["properties"] = {"Node name for S&R": node.type}
        if widgets:
            data["widgets_values"] = widgets
        return data

    def auto_size(self, node: Node) -> tuple[float, float]:
        """What the editor's computeSize gives, roughly: it only ever grows a node to fit, never shrinks it."""
        definition = node.definition
        inputs_def = editor_inputs(definition)
        n_widgets = len(widget_slots(definition))
        multiline = any(_multiline(spec) for spec in inputs_def.values())
        n_slots = sum(
            1
            for name, spec in inputs_def.items()
            if not is_widget_input(spec) or isinstance(node.values.get(name), Out)
        )
        rows = max(n_slots, len(node.output_types))
        height = TITLE_H // 2 + rows * SLOT_H + n_widgets * WIDGET_H + (MULTILINE_H if multiline else 0) + 8
        width = 400 if multiline else 315
        if definition.get("output_node") and not definition.get("output"):
            height = max(height, 270)  # image previews
        return float(width), float(height)

    def to_json(self, extra: Optional[dict] = None) -> dict:
        link_ids: dict[tuple[int, str], int] = {}
        self.links = []
        for node in self.nodes:
            node.output_links = {}
        for node in self.nodes:
            for name, value in node.values.items():
                if isinstance(value, Out):
                    link_id = len(self.links) + 1
                    self.links.append(
                        [link_id, value.node.id, value.slot, node.id, self._slot_index(node, name), value.type]
                    )
                    link_ids[(node.id, name)] = link_id
                    value.node.output_links.setdefault(value.slot, []).append(link_id)
        order = self._execution_order()
        nodes = []
        for node in self.nodes:
            data = self._node_json(node, link_ids)
            data["order"] = order[node.id]
            nodes.append(data)
        for i, note in enumerate(self.notes):
            nodes.append(
                {
                    "id": note["id"],
                    "type": "Note",
                    "pos": note["pos"],
                    "size": note["size"],
                    "flags": {},
                    "order": len(self.nodes) + i,
                    "mode": 0,
                    "title": note["title"],
                    "properties": {"text": ""},
                    "widgets_values": [note["text"]],
                    "color": PALETTE["yellow"][0],
                    "bgcolor": PALETTE["yellow"][1],
                }
            )
        nodes.sort(key=lambda n: n["id"])
        return {
            "last_node_id": max((n["id"] for n in nodes), default=0),
            "last_link_id": len(self.links),
            "nodes": nodes,
            "links": self.links,
            "groups": self.groups,
            "config": {},
            "extra": {"ds": {"scale": 0.75, "offset": [40, 40]}, **(extra or {})},
            "version": 0.4,
        }

    def _slot_index(self, node: Node, name: str) -> int:
        """Index of an input in the node's slot list (connection inputs, plus widgets turned into inputs)."""
        i = 0
        for input_name, spec in editor_inputs(node.definition).items():
            if is_widget_input(spec) and not isinstance(node.values.get(input_name), Out):
                continue
            if input_name == name:
                return i
            i += 1
        raise KeyError(name)

    def _execution_order(self) -> dict[int, int]:
        deps = {n.id: {v.node.id for v in n.values.values() if isinstance(v, Out)} for n in self.nodes}
        order, done = {}, set()
        while len(done) < len(deps):
            ready = sorted(i for i, d in deps.items() if i not in done and d <= done)
            if not ready:
                raise ValueError("the graph has a cycle")
            for i in ready:
                order[i] = len(order)
                done.add(i)
        return order


def _multiline(spec: Any) -> bool:
    return (
        isinstance(spec, (list, tuple))
        and len(spec) > 1
        and isinstance(spec[1], dict)
        and bool(spec[1].get("multiline"))
    )
