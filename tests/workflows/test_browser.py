"""The example workflows in the host's own web editor, in a real headless browser.

Most users never touch the API: they drop a workflow file on the ComfyUI editor, look at the nodes, change a
widget and press Queue Prompt (Run). This module does exactly that, in Debian's Chromium driven by Playwright,
with the editor that the host serves on its HTTP port: the fork's 2024 app, or with IQA_HOST=upstream
(scripts/test_upstream.sh) upstream's Vue frontend; one driver, tests/browser_editor.py, knows both:

1. one host server for the module (tests/server_host.py): this pack, the test-only fixture pack, tiny random
   adapters, and empty files under the model names the examples ask for, so that every file widget shows a
   name the host lists;
2. every file in example_workflows/ (named by its title, scripts/workflow_titles.py) is dropped on the canvas (the app's drop handler -> loadGraphData): no
   "missing node types" dialog or loading error, every node and link arrives, every widget holds its saved
   value and every file widget a listed name, every pack node shows the widgets and input slots the
   node reference (docs/nodes.md) documents, and the editor's own conversion is the API twin in scripts/prompts/; the graph
   is screenshotted to out/screenshots/<slug>.png (with IQA_WRITE_THUMBNAILS=1 also example_workflows/<title>.jpg);
3. the same graph with its model loaders swapped for the tiny stand-ins (scripts/workflow_fixtures.py's
   substitution, written back as a UI graph) is dropped and queued with the Queue Prompt button; the run is
   followed through the page's websocket events and queue size until it ends, without errors, with every
   output node's images in the page (screenshot out/screenshots/<name>_run.png);
4. for every kind of pack node, hovering its title, a widget and an input slot shows the DESCRIPTION and the
   inputs' tooltips, and the node help opens with the pack's page: the context menu's dialog in the 2024
   editor (web/iqa_adapter_help.js, web/docs/<NodeId>.md), the help panel in the Vue frontend
   (web/docs/<NodeId>/en.md), where nothing may be clipped;
5. (Vue frontend) the template browser lists the examples under the pack's name (locales/en/main.json), by
   their human titles, each card with its thumbnail loaded.

Without Chromium or Playwright the browser tests skip with the reason (scripts/install_browser.sh installs
both; scripts/test.sh runs it when CI=true or IQA_BROWSER_TESTS=1). The thumbnail check at the end needs no
browser: the README's pictures must be this suite's screenshots of the current workflow files.
"""

from __future__ import annotations

import json
import os
import re
import time

import browser_editor as be
import conftest
import pytest
import server_host
import workflow_build  # noqa: E402
import workflow_docs  # noqa: E402
import workflow_host  # noqa: E402
import workflow_titles  # noqa: E402
import workflow_to_api as w2a  # noqa: E402
from PIL import Image

pytestmark = [pytest.mark.server, pytest.mark.browser]

NAMES = server_host.example_names()
REASON = be.browser_unavailable()
needs_browser = pytest.mark.skipif(REASON is not None, reason=f"browser tests skipped: {REASON}")
WRITE_THUMBNAILS = os.environ.get("IQA_WRITE_THUMBNAILS") == "1"
PACK_KINDS = sorted(conftest.pack.NODE_CLASS_MAPPINGS)
DOCUMENTED = workflow_docs.parse_reference(workflow_docs.NODE_DOC.read_text())
OUTPUT_KINDS = ("SaveImage", "PreviewImage")
# Files the examples name, created empty in the host's folders (the editor lists them; nothing reads them).
PLACEHOLDERS = workflow_build.MODEL_FILES  # empty files under every model name the examples use
IGNORED_CONSOLE = ("favicon.ico",)  # the host ships no icon
# What the Vue frontend asks of a fresh workspace's empty user folder (a user's stylesheet, saved workflows and
# subgraphs, saved templates): 404 until the user saves one, on any install; nothing to do with the pack.
FRESH_USER_FOLDER = (
    "/api/userdata/user.css",
    "/user.css",
    "/api/userdata?dir=workflows",
    "/api/userdata?dir=subgraphs",
    "/api/userdata/comfy.templates.json",
)
# A newer frontend than the backend pins (COMFYUI_FRONT_END_ROOT) asks for files the backend's templates
# package does not have yet: allowed only then (docs/host-compatibility.md lists them).
NEWER_FRONTEND = ("/templates/index_logo.json", "/api/jobs?")
NEWER_FRONTEND_CONSOLE = ("JobsApiError",)  # its queue panel asks GET /api/jobs, new in later backends
# Defects of the February 2026 host itself (IQA_HOST=fork2026), seen with no pack involved
# (docs/host-compatibility.md): GET /api/jobs answers 500 while a prompt runs (its jobs code unpacks 5 fields
# of a 6-field queue item); custom nodes' example_workflows/ files are not served (its custom-node manager is
# given no module list), so a template's thumbnail and JSON are 404; and its Content-Security-Policy
# (--disable-api-nodes) blocks the frontend's own look-up of its core templates' model files on huggingface.co.
FORK2026_DEFECTS = ("/api/jobs?status=in_progress", "/api/workflow_templates/")
FORK2026_CONSOLE = ("JobsApiError", "https://huggingface.co/Comfy-Org/", "Failed to fetch: 404")
ON_FORK2026 = server_host.host().kind == "fork2026"


def _comparable(prompt: dict, info: dict) -> dict:
    """A prompt without what the host ignores: the _meta titles that the API twins carry (the 2024 editor
    sends none) and editor-only widget values (the 2024 editor sends LoadImage's upload button as an input)."""
    out = {}
    for node_id, node in prompt.items():
        real = {n for g in ("required", "optional") for n in (info[node["class_type"]]["input"].get(g) or {})}
        out[node_id] = {
            "class_type": node["class_type"],
            "inputs": {k: v for k, v in node["inputs"].items() if k in real},
        }
    return out


def _words(text: str) -> str:
    return " ".join(str(text).split())


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with server_host.running_host(tmp_path_factory.mktemp("browser")) as h:
        models = h.workspace / "models"
        for folder, files in PLACEHOLDERS.items():
            (models / folder).mkdir(parents=True, exist_ok=True)
            for f in files:
                (models / folder / f).touch()
        Image.new("RGB", (64, 64), (120, 140, 160)).save(h.workspace / "input" / "example.png")
        yield h


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = be.launch(p)
        yield b
        b.close()


@pytest.fixture(scope="module")
def editor(browser, host):
    ed = be.Editor(browser, host.base).open()
    yield ed
    ed.close()


@pytest.fixture(autouse=True)
def _page_stays_clean(request):
    """No JavaScript error, console error or failed request in the page during any browser test."""
    if "editor" not in request.fixturenames:
        yield
        return
    ed = request.getfixturevalue("editor")
    ed.page_errors.clear(), ed.console_errors.clear(), ed.failed_requests.clear()
    yield
    allowed = FRESH_USER_FOLDER + (NEWER_FRONTEND if os.environ.get("COMFYUI_FRONT_END_ROOT") else ())
    allowed += FORK2026_DEFECTS if ON_FORK2026 else ()
    fresh = [f"{ed.base_url}{u}" for u in allowed] if ed.modern else []
    failed = [r for r in ed.failed_requests if not any(r.split(" ", 1)[1].startswith(u) for u in fresh)]
    # the browser logs each failed request as a console error too: those left are judged above
    ignored = IGNORED_CONSOLE + (NEWER_FRONTEND_CONSOLE if os.environ.get("COMFYUI_FRONT_END_ROOT") else ())
    ignored += FORK2026_CONSOLE if ON_FORK2026 else ()
    console = [
        e
        for e in ed.console_errors
        if not any(i in e for i in ignored)
        and not (
            e.startswith("Failed to load resource: the server responded with a status")
            and not any(f.split(" ", 1)[1] in e for f in failed)
        )
    ]
    assert (ed.page_errors, console, failed) == ([], [], []), "errors in the page"


def _check_loaded(state: dict, workflow: dict) -> None:
    assert state["missing"] == [], f"missing node types: {state['missing']}"
    assert state["dialogs"] == [], f"the editor showed a dialog: {state['dialogs']}"
    assert state["loadErrors"] == []
    by_id = {n["id"]: n for n in state["nodes"]}
    assert sorted(by_id) == sorted(n["id"] for n in workflow["nodes"])
    assert state["links"] == len(workflow["links"])
    for saved in workflow["nodes"]:
        shown = by_id[saved["id"]]
        assert shown["type"] == saved["type"]
        # every saved value is on a widget, in order: a missing or extra widget would shift or drop values
        assert shown["widgets_values"] == saved.get("widgets_values", []), f"node #{saved['id']} ({saved['type']})"
        for w in shown["widgets"]:
            if w["type"] == "combo" and w["values"] is not None and w["name"] != "control_after_generate":
                assert w["value"] in w["values"], (
                    f"node #{saved['id']} {w['name']}={w['value']!r} is not a listed choice"
                )


@needs_browser
def test_the_editor_opens_with_the_pack(editor, host):
    types = editor.page.evaluate("() => Object.keys(LiteGraph.registered_node_types)")
    assert set(PACK_KINDS) <= set(types)
    extensions = host.get("/extensions")
    assert any(e.endswith("/iqa_adapter_help.js") for e in extensions), extensions
    assert editor.page.evaluate("() => app.extensions.some((e) => e.name === 'IQAAdapter.TooltipsAndHelp')")
    # the 2024 editor gets the pack's tooltips; the Vue frontend has its own, and the extension stays out
    assert editor.page.locator(".iqa-adapter-tooltip").count() == (0 if editor.modern else 1)
    # host nodes whose null python_module the driver filled in (fork2026's own; see browser_editor.Editor)
    assert not set(editor.null_modules) & set(PACK_KINDS), editor.null_modules
    # the frontend that upstream pins or fork2026 installs, unless COMFYUI_FRONT_END_ROOT names another
    pinned = host.host.frontend_version()
    if pinned is not None:
        want = os.environ.get("IQA_FRONTEND_VERSION") or (None if os.environ.get("COMFYUI_FRONT_END_ROOT") else pinned)
        print(f"editor: ComfyUI frontend {editor.frontend_version()} (this ComfyUI's own: {pinned})")
        assert editor.modern and (want is None or editor.frontend_version() == want)


@needs_browser
@pytest.mark.parametrize("name", NAMES)
def test_example_loads_like_a_drop(editor, host, name):
    path = workflow_titles.example_path(name)
    workflow = json.loads(path.read_text())
    state = editor.drop_workflow(path.name, workflow)
    _check_loaded(state, workflow)
    for node in state["nodes"]:
        if node["type"] not in DOCUMENTED:
            continue
        definition = host.info[node["type"]]
        inputs = w2a.editor_inputs(definition)
        documented = DOCUMENTED[node["type"]]
        widgets = {w["name"] for w in node["widgets"]} & set(inputs)
        # input slots of their own; the Vue frontend also gives every widget a slot (i["widget"]), the 2024
        # editor only a widget turned into an input
        slots = {i["name"] for i in node["inputs"] if i["widget"] is None}
        assert widgets == {n for n in documented if w2a.is_widget_input(inputs[n])}, f"{node['type']} widgets"
        assert slots == {n for n in documented if not w2a.is_widget_input(inputs[n])}, f"{node['type']} slots"
    twin = json.loads((conftest.REPO / "scripts" / "prompts" / f"{name}.json").read_text())
    assert _comparable(editor.editor_prompt(), host.info) == _comparable(twin, host.info), (
        "the editor converts the graph differently"
    )
    shot = editor.screenshot_graph(be.SCREENSHOTS / f"{name}.png")
    if WRITE_THUMBNAILS:
        # the README shows what users see: the current editor, not the fork's 2024 one
        assert editor.modern, (
            "write thumbnails from upstream's editor: IQA_WRITE_THUMBNAILS=1 scripts/test_upstream.sh tests/workflows/test_browser.py"
        )
        marker = be.thumbnail_marker(
            name, be.pack_nodes_digest(conftest.pack.NODE_CLASS_MAPPINGS, conftest.pack.NODE_DISPLAY_NAME_MAPPINGS)
        )
        be.write_thumbnail(shot, workflow_titles.example_path(name, ".jpg"), marker)


@needs_browser
@pytest.mark.parametrize("name", NAMES)
def test_example_runs_from_the_queue_button(editor, host, name):
    path = workflow_titles.example_path(name)
    workflow = json.loads(path.read_text())
    ui, tiny = be.tiny_ui_workflow(workflow, host.info, host.adapters)
    state = editor.drop_workflow(path.name, ui)
    _check_loaded(state, ui)
    assert _comparable(editor.editor_prompt(), host.info) == _comparable(tiny, host.info), (
        "the editor's prompt is not the tiny substitution"
    )
    started = time.time()
    run = editor.queue_and_wait(timeout=240)
    assert run["queued"]["ok"], f"the host refused the prompt: {run['queued']}"
    assert run["queued"]["res"]["node_errors"] == {}
    errors = [e["detail"] for e in run["events"] if e["type"] in ("execution_error", "execution_interrupted")]
    assert errors == [], errors
    assert run["queue_text"] == "Queue size: 0"
    state = editor.state()
    assert not state["lastNodeErrors"] and state["dialogs"] == []
    entry = host.get(f"/history/{run['prompt_id']}")[run["prompt_id"]]
    assert entry["status"]["status_str"] == "success", entry["status"]
    shown = {
        e["detail"]["node"]
        for e in run["events"]
        if e["type"] == "executed" and (e["detail"].get("output") or {}).get("images")
    }
    outputs = {k for k, v in tiny.items() if v["class_type"] in OUTPUT_KINDS}
    assert outputs and outputs <= shown, f"output nodes without images in the page: {sorted(outputs - shown)}"
    editor.page.wait_for_function(
        """(ids) => ids.every((id) => {
        const n = app.graph.getNodeById(Number(id));
        return n.imgs?.length && n.imgs.every((im) => im.complete && im.naturalWidth > 0);
    })""",
        arg=sorted(outputs),
        timeout=30_000,
    )
    editor.screenshot_graph(be.SCREENSHOTS / f"{name}_run.png")
    print(f"{name}: ran in {time.time() - started:.1f} s from the {'Run' if editor.modern else 'Queue Prompt'} button")


def _first_example_with(kind: str) -> tuple[str, int]:
    for name in NAMES:
        workflow = json.loads(workflow_titles.example_path(name).read_text())
        for node in workflow["nodes"]:
            if node["type"] == kind:
                return name, node["id"]
    raise AssertionError(f"no example workflow shows {kind}")


@needs_browser
def test_tooltips_and_help_for_every_pack_node_kind(editor, host):
    """Hover a node's title, a widget and an input slot; open its help: DESCRIPTION, tooltips, the help page."""
    by_example: dict[str, list[tuple[str, int]]] = {}
    for kind in PACK_KINDS:
        name, node_id = _first_example_with(kind)
        by_example.setdefault(name, []).append((kind, node_id))
    for name, nodes in by_example.items():
        path = workflow_titles.example_path(name)
        workflow = json.loads(path.read_text())
        _check_loaded(editor.drop_workflow(path.name, workflow), workflow)
        for kind, node_id in nodes:
            info = host.info[kind]
            inputs = w2a.editor_inputs(info)
            tips = {n: spec[1]["tooltip"] for n, spec in inputs.items() if len(spec) > 1 and spec[1].get("tooltip")}
            editor.focus_node(node_id)
            title = editor.hover_tooltip(node_id, "title")
            assert (title["nodeType"], title["kind"], title["text"]) == (kind, "title", info["description"])
            node = next(n for n in editor.state()["nodes"] if n["id"] == node_id)
            drawn = [w["name"] for w in node["widgets"] if not w["dom"] and w["name"] in tips]
            html = [w["name"] for w in node["widgets"] if w["dom"] and w["name"] in tips]
            assert drawn, f"{kind} shows no canvas widget with a tooltip"
            # one drawn on the canvas, one HTML (multiline); the Vue frontend shows no tooltip on HTML widgets
            for i, widget in enumerate(drawn[:1] + ([] if editor.modern else html[:1])):
                shot = be.SCREENSHOTS / f"tooltip_{kind}.png" if i == 0 else None
                shown = editor.hover_tooltip(node_id, "widget", widget, screenshot=shot)
                assert (shown["kind"], shown["name"], shown["text"]) == ("widget", widget, tips[widget])
            slot = next((n for n in DOCUMENTED[kind] if not w2a.is_widget_input(inputs[n])), None)
            if slot is not None:
                shown = editor.hover_tooltip(node_id, "input", slot)
                assert (shown["kind"], shown["name"], shown["text"]) == ("input", slot, tips[slot])
            page = editor.open_help(node_id, screenshot=be.SCREENSHOTS / f"help_{kind}.png")
            assert page["type"] == kind
            text = _words(page["text"])
            assert info["display_name"] in text and _words(info["description"]) in text, text[:400]
            for documented in DOCUMENTED[kind]:
                assert documented in text, f"{kind} help does not list {documented}"
            # one section per input (a wide table would be clipped in the Vue frontend's narrow help panel);
            # clipped: px past the panel's edge (Vue frontend; 0 in the 2024 dialog), 1 px for sub-pixel rounding
            assert page["html"].count("<h3") >= len(DOCUMENTED[kind]) and page["clipped"] <= 1, page["clipped"]
            assert editor.state()["dialogs"] == [], "the help dialog did not close"


def test_thumbnails_are_editor_screenshots_of_the_current_graphs():
    """The README's pictures (example_workflows/<title>.jpg) are this suite's screenshots of these very files."""
    digest = be.pack_nodes_digest(conftest.pack.NODE_CLASS_MAPPINGS, conftest.pack.NODE_DISPLAY_NAME_MAPPINGS)
    hint = "refresh them: IQA_WRITE_THUMBNAILS=1 scripts/test_upstream.sh tests/workflows/test_browser.py"
    stale = []
    for name in NAMES:
        thumb = workflow_titles.example_path(name, ".jpg")
        assert thumb.is_file(), f"no thumbnail {thumb.name}: {hint}"
        assert thumb.stat().st_size < be.THUMB_MAX_BYTES, f"{thumb.name} is {thumb.stat().st_size} bytes"
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and im.width >= 640
        if be.thumbnail_comment(thumb) != be.thumbnail_marker(name, digest):
            stale.append(thumb.name)
    assert stale == [], f"not a screenshot of the current workflow and nodes: {stale}; {hint}"
    readme = (conftest.REPO / "README.md").read_text()
    # a path with spaces and parentheses goes in <...> (CommonMark's link destination form)
    pictures = set(re.findall(r"!\[[^\]]*\]\(<(example_workflows/[^>]+\.jpg)>\)", readme))
    assert pictures == {f"example_workflows/{workflow_titles.TITLES[n]}.jpg" for n in NAMES}, (
        "the README shows every example's screenshot"
    )


@needs_browser
def test_templates_are_listed_under_the_pack_name(editor, host):
    """The template browser lists every example_workflows/ file under "IQA-Adapter" (locales/en/main.json), not
    under the folder name, each card titled by its human title (the file name: this frontend titles custom
    nodes' templates by file name only, docs/host-compatibility.md), not cut off, with its thumbnail loaded
    from the .jpg of the same name."""
    if not editor.modern:
        pytest.skip("the 2024 editor has no template browser for custom nodes' example workflows")
    cards, fetched = editor.template_cards(workflow_titles.CATEGORY, screenshot=be.SCREENSHOTS / "templates.png")
    titles = [workflow_titles.TITLES[n] for n in NAMES]
    assert sorted(c["title"] for c in cards) == sorted(titles), cards
    for card in cards:
        # the frontend describes a custom template by its name with '-' and '_' as spaces: the titles have none
        assert card["description"] in ("", card["title"]), card
        assert card["clamped"] <= 1, f"title cut off on the card: {card}"  # 1 px: sub-pixel rounding
        thumb = workflow_titles.example_path(workflow_titles.slug_of(card["title"]), ".jpg")
        url = f"/api/workflow_templates/{workflow_host.PACK_NAME}/{thumb.name}"
        if ON_FORK2026:  # that host serves no custom node's template files (FORK2026_DEFECTS): none can show
            assert fetched.get(url) == 404, f"{card['title']}: fork2026 now serves {url}: drop this exception"
            continue
        assert fetched.get(url) == 200, f"{card['title']}: thumbnail {url} not fetched: {fetched}"
        with Image.open(thumb) as im:
            assert card["width"] == im.width, f"thumbnail not shown: {card}"
