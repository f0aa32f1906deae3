"""Render a UI-format workflow's layout to a picture: groups, nodes (title, slots, widget values) and links,
drawn like the ComfyUI editor draws them. Used for the .jpg thumbnail beside each example workflow until
browser screenshots replace them.

    python scripts/workflow_thumbnail.py example_workflows/sdxl_quality_sweep.json   # writes the .jpg beside it
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Mapping, Optional

from PIL import Image, ImageDraw, ImageFont

TITLE_H, SLOT_H, WIDGET_H = 30, 20, 24
BACKGROUND = (32, 32, 32)
NODE_BODY, NODE_TITLE = "#353535", "#222222"
TEXT, DIM_TEXT, WIDGET_BG = (221, 221, 221), (150, 150, 150), (34, 34, 34)
# The editor's default link colours per type.
LINK_COLOURS = {"MODEL": "#B39DDB", "CLIP": "#FFD500", "VAE": "#FF6E6E", "CONDITIONING": "#FFA931", "LATENT": "#FF9CF9",
                "IMAGE": "#64B5F6", "MASK": "#81C784", "IQA_ADAPTER": "#F48FB1", "IQA_MODEL": "#4DD0E1"}


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _rgb(colour: str) -> tuple[int, int, int]:
    h = colour.lstrip("#")
    if len(h) == 3:
        h = "".join(c * 2 for c in h)
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


def _short(value: Any, limit: int) -> str:
    text = " / ".join(str(value).splitlines()) if isinstance(value, str) else (f"{value:g}" if isinstance(value, float) else str(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _bezier(p0, p3, steps: int = 24) -> list[tuple[float, float]]:
    dist = max(40.0, abs(p3[0] - p0[0]) * 0.5)
    p1, p2 = (p0[0] + dist, p0[1]), (p3[0] - dist, p3[1])
    pts = []
    for i in range(steps + 1):
        t = i / steps
        a, b, c, d = (1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t * t, t ** 3
        pts.append((a * p0[0] + b * p1[0] + c * p2[0] + d * p3[0], a * p0[1] + b * p1[1] + c * p2[1] + d * p3[1]))
    return pts


def render(workflow: Mapping[str, Any], width: int = 1280, titles: Optional[Mapping[str, str]] = None) -> Image.Image:
    """The workflow's graph as an RGB image `width` pixels wide. titles: display names by node type."""
    titles = titles or {}
    nodes = workflow["nodes"]
    boxes = [(n["pos"][0], n["pos"][1] - TITLE_H, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1]) for n in nodes]
    boxes += [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2], g["bounding"][1] + g["bounding"][3])
              for g in workflow.get("groups", [])]
    x0, y0 = min(b[0] for b in boxes) - 30, min(b[1] for b in boxes) - 30
    x1, y1 = max(b[2] for b in boxes) + 30, max(b[3] for b in boxes) + 30
    scale = width / (x1 - x0)
    height = max(1, int((y1 - y0) * scale))
    ss = 2  # draw at twice the size, then downsample: smooth lines and text
    img = Image.new("RGB", (width * ss, height * ss), BACKGROUND)
    draw = ImageDraw.Draw(img, "RGBA")
    k = scale * ss

    def P(x: float, y: float) -> tuple[float, float]:
        return (x - x0) * k, (y - y0) * k

    title_font, text_font, group_font = _font(max(8, int(15 * k))), _font(max(7, int(12 * k))), _font(max(9, int(22 * k)))

    # grid
    step = 100
    for gx in range(int(x0 // step) * step, int(x1) + step, step):
        draw.line([P(gx, y0), P(gx, y1)], fill=(40, 40, 40), width=1)
    for gy in range(int(y0 // step) * step, int(y1) + step, step):
        draw.line([P(x0, gy), P(x1, gy)], fill=(40, 40, 40), width=1)

    for g in workflow.get("groups", []):
        gx, gy, gw, gh = g["bounding"]
        r, gg, b = _rgb(g.get("color", "#3f789e"))
        draw.rounded_rectangle([P(gx, gy), P(gx + gw, gy + gh)], radius=6 * k, fill=(r, gg, b, 60), outline=(r, gg, b, 160), width=max(1, int(k)))
        draw.text(P(gx + 10, gy + 6), g["title"], font=group_font, fill=(r, gg, b, 255))

    by_id = {n["id"]: n for n in nodes}

    def slot_y(node: Mapping[str, Any], index: int) -> float:
        return node["pos"][1] + (index + 0.7) * SLOT_H

    for link in workflow.get("links", []):
        _, src, src_slot, dst, dst_slot, ltype = link[:6]
        a, b = by_id[src], by_id[dst]
        p0 = P(a["pos"][0] + a["size"][0], slot_y(a, src_slot))
        p3 = P(b["pos"][0], slot_y(b, dst_slot))
        colour = _rgb(LINK_COLOURS.get(ltype, "#99aa99"))
        draw.line(_bezier(p0, p3), fill=colour + (230,), width=max(2, int(3 * k)), joint="curve")

    for node in nodes:
        x, y = node["pos"]
        w, h = node["size"]
        body, title_bg = node.get("bgcolor", NODE_BODY), node.get("color", NODE_TITLE)
        draw.rounded_rectangle([P(x, y - TITLE_H), P(x + w, y + h)], radius=8 * k, fill=_rgb(body) + (255,), outline=(0, 0, 0, 255), width=max(1, int(k)))
        draw.rounded_rectangle([P(x, y - TITLE_H), P(x + w, y)], radius=8 * k, fill=_rgb(title_bg) + (255,))
        draw.rectangle([P(x, y - 8), P(x + w, y)], fill=_rgb(title_bg) + (255,))
        title = node.get("title") or titles.get(node["type"], node["type"])
        draw.ellipse([P(x + 10, y - TITLE_H / 2 - 5), P(x + 20, y - TITLE_H / 2 + 5)], fill=(150, 150, 150, 255))
        draw.text(P(x + 28, y - TITLE_H + 7), title, font=title_font, fill=TEXT)
        inputs, outputs = node.get("inputs") or [], node.get("outputs") or []
        for i, slot in enumerate(inputs):
            cy = slot_y(node, i)
            colour = _rgb(LINK_COLOURS.get(slot.get("type"), "#99aa99"))
            draw.ellipse([P(x + 5, cy - 5), P(x + 15, cy + 5)], fill=colour + (255,) if slot.get("link") else (0, 0, 0, 0),
                         outline=colour + (255,), width=max(1, int(k)))
            draw.text(P(x + 20, cy - 7), slot["name"], font=text_font, fill=TEXT)
        for i, slot in enumerate(outputs):
            cy = slot_y(node, i)
            colour = _rgb(LINK_COLOURS.get(slot.get("type"), "#99aa99"))
            draw.ellipse([P(x + w - 15, cy - 5), P(x + w - 5, cy + 5)], fill=colour + (255,) if slot.get("links") else (0, 0, 0, 0),
                         outline=colour + (255,), width=max(1, int(k)))
            tw = draw.textlength(slot["name"], font=text_font) / k
            draw.text(P(x + w - 20 - tw, cy - 7), slot["name"], font=text_font, fill=TEXT)
        if node["type"] == "Note":
            draw.multiline_text(P(x + 10, y + 8), _wrap(node["widgets_values"][0], int(w / 7)), font=text_font, fill=TEXT, spacing=int(3 * k))
            continue
        wy = y + max(len(inputs), len(outputs)) * SLOT_H + 6
        shown = [s for s in (node.get("widgets_values") or [])]
        names = node.get("_widget_names") or [None] * len(shown)
        multiline = set(node.get("_multiline") or ())
        for name, value in zip(names, shown):
            if name is None:
                continue
            if wy + WIDGET_H > y + h:
                break
            if name in multiline:  # a text box, like the editor's textarea
                box_h = min(max(60, (y + h) - wy - WIDGET_H * (len([n for n in names if n]) - 1) - 6), 200)
                draw.rounded_rectangle([P(x + 10, wy + 2), P(x + w - 10, wy + box_h)], radius=4 * k, fill=WIDGET_BG + (255,),
                                       outline=(90, 90, 90, 255))
                draw.multiline_text(P(x + 16, wy + 6), _wrap(str(value), int((w - 30) / 6.5)), font=text_font, fill=TEXT,
                                    spacing=int(3 * k))
                wy += box_h + 4
                continue
            draw.rounded_rectangle([P(x + 12, wy + 2), P(x + w - 12, wy + WIDGET_H - 2)], radius=8 * k, fill=WIDGET_BG + (255,),
                                   outline=(90, 90, 90, 255))
            draw.text(P(x + 22, wy + 5), name, font=text_font, fill=DIM_TEXT)
            val = _short(value, max(6, int((w - 40) / 7) - len(name)))
            tw = draw.textlength(val, font=text_font) / k
            draw.text(P(x + w - 22 - tw, wy + 5), val, font=text_font, fill=TEXT)
            wy += WIDGET_H
    return img.resize((width, height), Image.LANCZOS)


def _wrap(text: str, chars: int) -> str:
    lines = []
    for para in text.splitlines():
        line = ""
        for word in para.split(" "):
            if len(line) + len(word) + 1 > chars and line:
                lines.append(line)
                line = word
            else:
                line = f"{line} {word}" if line else word
        lines.append(line)
    return "\n".join(lines)


def annotate_widget_names(workflow: dict, object_info: Mapping[str, Any]) -> dict:
    """A copy of the workflow whose nodes carry their widget names (for drawing only, never saved)."""
    from workflow_to_api import editor_inputs, widget_names

    copy = json.loads(json.dumps(workflow))
    for node in copy["nodes"]:
        if node["type"] in object_info:
            node["_widget_names"] = widget_names(object_info[node["type"]])
            node["_multiline"] = [n for n, spec in editor_inputs(object_info[node["type"]]).items()
                                  if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("multiline")]
    return copy


def write_thumbnail(workflow_path: Path, object_info: Optional[Mapping[str, Any]] = None, width: int = 1280) -> Path:
    workflow = json.loads(Path(workflow_path).read_text())
    titles = {}
    if object_info:
        workflow = annotate_widget_names(workflow, object_info)
        titles = {k: v.get("display_name", k) for k, v in object_info.items()}
    out = Path(workflow_path).with_suffix(".jpg")
    render(workflow, width, titles).save(out, quality=88, optimize=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workflows", nargs="+", type=Path)
    ap.add_argument("--object-info", type=Path, help="saved /object_info, for widget names and node titles")
    args = ap.parse_args()
    info = json.loads(args.object_info.read_text()) if args.object_info else None
    for path in args.workflows:
        print(write_thumbnail(path, info))


if __name__ == "__main__":
    main()
