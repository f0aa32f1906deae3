"""The example workflows in the host's own web editor (the 2024 LiteGraph app), in headless Chromium.

For each file: the editor's own loader (app.loadGraphData, what a drop does) shows no missing-node dialog
and logs no error, every node gets exactly the widgets our converter expects, and the editor's own
graphToPrompt gives the same API prompt as scripts/workflow_to_api.py. Skipped where Chromium is not
installed (`apt-get install chromium`); the browser suite of the UI issue builds on this.
"""
from __future__ import annotations

import json
import shutil
import sys

import pytest

import conftest
import server_host

sys.path.insert(0, str(conftest.REPO / "scripts"))
import workflow_to_api as w2a  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
NAMES = server_host.example_names()

LOAD = """(async () => {
  const errors = [], original = console.error;
  console.error = (...a) => { errors.push(a.map(String).join(' ')); original(...a); };
  try {
    app.ui.dialog.close();
    await app.loadGraphData(%s);
    const prompt = await app.graphToPrompt();
    const dialog = app.ui.dialog.element;
    const shown = dialog.style.display !== 'none' ? dialog.textContent : '';
    const widgets = {};
    for (const n of app.graph._nodes) widgets[n.id] = (n.widgets || []).map(w => w.name);
    return JSON.stringify({output: prompt.output, dialog: shown, errors, widgets});
  } finally { console.error = original; }
})()"""


@pytest.fixture(scope="module")
def host(tmp_path_factory):
    with server_host.running_host(tmp_path_factory.mktemp("editor")) as h:
        yield h


@pytest.fixture(scope="module")
def page(host, tmp_path_factory):
    editor = server_host.EditorPage(CHROMIUM, host.base + "/", tmp_path_factory.mktemp("chromium-profile"))
    yield editor
    editor.close()


@pytest.mark.parametrize("name", NAMES)
def test_editor_loads_the_workflow_and_queues_what_the_converter_derives(host, page, name):
    workflow = json.loads((server_host.EXAMPLES / f"{name}.json").read_text())
    result = json.loads(page.evaluate(LOAD % json.dumps(workflow)))
    assert "were not found" not in result["dialog"] and "error" not in result["dialog"].lower(), result["dialog"]
    assert result["errors"] == []
    for node in workflow["nodes"]:
        if node["type"] in w2a.FRONTEND_ONLY:
            continue
        expected = w2a.widget_names(host.info[node["type"]])
        shown = result["widgets"][str(node["id"])]
        assert len(shown) == len(expected), (node["type"], shown, expected)
        assert [s for s, e in zip(shown, expected) if e] == [e for e in expected if e], (node["type"], shown)
    editor = {k: {"class_type": v["class_type"], "inputs": {i: x for i, x in v["inputs"].items() if i != "upload"}}
              for k, v in result["output"].items()}
    assert editor == w2a.convert(workflow, host.info, keep_titles=False)
