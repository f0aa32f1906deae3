// IQA-Adapter: input tooltips and node help in ComfyUI's classic (2024, LiteGraph) editor.
//
// Newer ComfyUI frontends show an input's `tooltip`, a node's DESCRIPTION and the help page
// web/docs/<NodeId>.md on their own; this extension then does nothing. The classic editor shows none of
// them, so for this pack's nodes it adds:
//   - a tooltip after a short hover: a widget or input slot shows the input's tooltip, an output slot the
//     output's tooltip (where the host sends them), the node's title its DESCRIPTION;
//   - "IQA-Adapter help" in the node's context menu: the help page (docs/<NodeId>.md next to this file),
//     or the DESCRIPTION when the page cannot be read.
import { app } from "../../scripts/app.js";

const PACK_CATEGORY = "IQA-Adapter";
const HOVER_MS = 400;
const HELP_URL = (nodeId) => new URL(`./docs/${encodeURIComponent(nodeId)}.md`, import.meta.url);

const isPackNode = (nodeData) => {
	const category = String(nodeData?.category ?? "");
	return category === PACK_CATEGORY || category.startsWith(PACK_CATEGORY + "/");
};
// The Vue frontend (ComfyUI_frontend, 2024-08 on) sets this global and has an extension manager.
const modernFrontend = () => typeof window.__COMFYUI_FRONTEND_VERSION__ !== "undefined" || !!app.extensionManager;
const defs = new Map(); // node type -> nodeData (/object_info entry)

function inputTooltip(nodeData, name) {
	for (const group of ["required", "optional"]) {
		const spec = nodeData?.input?.[group]?.[name];
		if (Array.isArray(spec) && spec[1] && typeof spec[1].tooltip === "string") return spec[1].tooltip;
	}
	return "";
}

function outputTooltip(nodeData, slot) {
	const tips = nodeData?.output_tooltips;
	return Array.isArray(tips) && typeof tips[slot] === "string" ? tips[slot] : "";
}

// What the pointer is over, in graph coordinates: {node, kind: "title"|"widget"|"input"|"output", name, text}.
export function hoverTarget(canvas, x, y) {
	const node = canvas.graph?.getNodeOnPos(x, y, canvas.visible_nodes);
	const nodeData = node && defs.get(node.type);
	if (!nodeData || node.flags?.collapsed) return null;
	const localY = y - node.pos[1];
	if (localY < 0) {
		return { node, kind: "title", name: node.type, text: nodeData.description || "" };
	}
	const slot = node.getSlotInPosition?.(x, y);
	if (slot?.input) {
		const name = slot.input.widget?.name ?? slot.input.name;
		return { node, kind: "input", name, text: inputTooltip(nodeData, name) };
	}
	if (slot?.output) {
		return { node, kind: "output", name: slot.output.name, text: outputTooltip(nodeData, slot.slot) };
	}
	for (const w of node.widgets ?? []) {
		if (w.last_y === undefined || String(w.type).startsWith("converted")) continue;
		const h = w.computeSize ? w.computeSize(node.size[0])[1] : LiteGraph.NODE_WIDGET_HEIGHT;
		if (localY >= w.last_y && localY < w.last_y + h) {
			return { node, kind: "widget", name: w.name, text: inputTooltip(nodeData, w.name) };
		}
	}
	return null;
}

function escapeHtml(text) {
	return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function inline(text) {
	return escapeHtml(text)
		.replace(/`([^`]+)`/g, "<code>$1</code>")
		.replace(/\*\*([^*]+)\*\*/g, "<b>$1</b>");
}

// The small Markdown subset the generated help pages use: headings, paragraphs, tables, `code`, **bold**.
export function renderHelp(markdown) {
	const out = [];
	let table = null;
	const cells = (line) => line.trim().replace(/^\||\|$/g, "").split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
	const flush = () => {
		if (!table) return;
		const [head, ...rows] = table;
		out.push("<table><thead><tr>" + head.map((c) => `<th>${inline(c)}</th>`).join("") + "</tr></thead><tbody>" +
			rows.map((r) => "<tr>" + r.map((c) => `<td>${inline(c)}</td>`).join("") + "</tr>").join("") + "</tbody></table>");
		table = null;
	};
	for (const line of markdown.split("\n")) {
		if (line.trim().startsWith("|")) {
			if (/^\s*\|[\s|:-]+\|\s*$/.test(line)) continue; // the header separator
			(table ??= []).push(cells(line));
			continue;
		}
		flush();
		const heading = line.match(/^(#{1,6})\s+(.*)$/);
		if (heading) out.push(`<h${heading[1].length}>${inline(heading[2])}</h${heading[1].length}>`);
		else if (line.trim()) out.push(`<p>${inline(line)}</p>`);
	}
	flush();
	return out.join("\n");
}

export async function showHelp(nodeType) {
	const nodeData = defs.get(nodeType);
	let body;
	try {
		const res = await fetch(HELP_URL(nodeType));
		if (!res.ok) throw new Error(`HTTP ${res.status}`);
		body = renderHelp(await res.text());
	} catch (error) {
		body = `<h1>${escapeHtml(nodeData?.display_name || nodeType)}</h1><p>${escapeHtml(nodeData?.description || "")}</p>`;
	}
	app.ui.dialog.show(`<div class="iqa-adapter-help" data-node-type="${escapeHtml(nodeType)}">${body}</div>`);
}

function installStyle() {
	const style = document.createElement("style");
	style.textContent = `
.iqa-adapter-tooltip { position: fixed; z-index: 10000; max-width: 360px; padding: 6px 9px; border-radius: 5px;
  background: #111d; color: #eee; border: 1px solid #555; font: 13px/1.35 sans-serif; pointer-events: none;
  white-space: pre-wrap; display: none; }
.iqa-adapter-help { max-width: 760px; max-height: 70vh; overflow: auto; text-align: left; font: 13px/1.4 sans-serif;
  color: var(--fg-color, #ddd); }
.iqa-adapter-help h1 { font-size: 18px; margin: 0 0 8px; }
.iqa-adapter-help p { color: inherit; margin: 6px 0; }
.iqa-adapter-help table { border-collapse: collapse; margin: 6px 0; }
.iqa-adapter-help th, .iqa-adapter-help td { border: 1px solid #555; padding: 3px 6px; vertical-align: top; }
.iqa-adapter-help code { background: #0004; padding: 0 3px; border-radius: 3px; }`;
	document.head.append(style);
}

let tooltip = null; // {schedule(target, clientX, clientY), hide()} once installed

function installTooltips(canvasEl) {
	const tip = document.createElement("div");
	tip.className = "iqa-adapter-tooltip";
	tip.setAttribute("role", "tooltip");
	document.body.append(tip);
	let timer = null;
	let shown = null; // key of the target the tooltip shows or is about to show
	const hide = () => {
		clearTimeout(timer);
		timer = null;
		shown = null;
		tip.style.display = "none";
	};
	const schedule = (target, clientX, clientY) => {
		const key = target && target.text ? `${target.node.id}:${target.kind}:${target.name}` : null;
		if (key !== null && key === shown) return;
		hide();
		if (key === null) return;
		shown = key;
		timer = setTimeout(() => {
			tip.textContent = target.text;
			tip.dataset.nodeType = target.node.type;
			tip.dataset.kind = target.kind;
			tip.dataset.name = target.name;
			tip.style.left = `${clientX + 12}px`;
			tip.style.top = `${clientY + 16}px`;
			tip.style.display = "block";
		}, HOVER_MS);
	};
	canvasEl.addEventListener("pointermove", (e) => {
		const canvas = app.canvas;
		if (!canvas || e.buttons) return hide();
		const rect = canvasEl.getBoundingClientRect();
		const [x, y] = canvas.ds.convertCanvasToOffset([e.clientX - rect.left, e.clientY - rect.top]);
		schedule(hoverTarget(canvas, x, y), e.clientX, e.clientY);
	});
	for (const type of ["pointerdown", "pointerleave", "wheel"]) canvasEl.addEventListener(type, hide);
	tooltip = { schedule, hide };
}

// Widgets drawn as HTML elements over the canvas (multiline text) get the pointer themselves.
function watchDomWidgets(node) {
	const nodeData = defs.get(node.comfyClass);
	for (const w of node.widgets ?? []) {
		const el = w.element ?? w.inputEl;
		if (!el || el.dataset.iqaTooltip) continue;
		el.dataset.iqaTooltip = "1";
		el.addEventListener("pointerenter", (e) => tooltip?.schedule(
			{ node, kind: "widget", name: w.name, text: inputTooltip(nodeData, w.name) }, e.clientX, e.clientY));
		for (const type of ["pointerleave", "pointerdown", "input"]) el.addEventListener(type, () => tooltip?.hide());
	}
}

app.registerExtension({
	name: "IQAAdapter.TooltipsAndHelp",
	async setup() {
		if (modernFrontend()) return;
		installStyle();
		installTooltips(app.canvasEl);
	},
	nodeCreated(node) {
		// node.type is set only after the constructor (which calls this); comfyClass is on the prototype
		if (!modernFrontend() && defs.has(node.comfyClass)) watchDomWidgets(node);
	},
	async beforeRegisterNodeDef(nodeType, nodeData) {
		if (modernFrontend() || !isPackNode(nodeData)) return;
		defs.set(nodeData.name, nodeData);
		const previous = nodeType.prototype.getExtraMenuOptions;
		nodeType.prototype.getExtraMenuOptions = function (canvas, options) {
			const extra = previous?.apply(this, arguments);
			options.push({ content: "IQA-Adapter help", callback: () => showHelp(this.type) });
			return extra;
		};
	},
});
