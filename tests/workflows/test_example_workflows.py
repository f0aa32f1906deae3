"""The example workflows stay in sync with the host: UI format -> API format, in-process (fast).

Every UI workflow in example_workflows/ (named by its title, scripts/workflow_titles.py) matches the node definitions of the real host (slots, outputs,
widget counts in the editor's order), converts to an API prompt whose every widget maps to a real input,
equals its API twin in scripts/prompts/, is what scripts/workflow_build.py generates, has a thumbnail,
and validates on the real host: with placeholder files under the names it asks for, and with the tiny
fixtures substituted. Running them through the HTTP prompt queue is tests/server/test_http_api.py.

With IQA_HOST=upstream (or fork2026) the node definitions come from that host's server's /object_info and
validation is that server's POST /prompt (a valid prompt is then run, or fails on the empty placeholder files).
"""

from __future__ import annotations

import json
from pathlib import Path

import conftest
import pytest
import server_host
import workflow_build  # noqa: E402
import workflow_fixtures  # noqa: E402
import workflow_titles  # noqa: E402
import workflow_to_api as w2a  # noqa: E402
from PIL import Image
from server_host import PromptFailed

pytestmark = pytest.mark.server

NAMES = workflow_titles.example_slugs()  # the examples' slugs; their files carry the titles


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A server of the host IQA_HOST names (upstream, fork2026); None on the fork, which is checked in-process."""
    if server_host.host().kind == "fork":
        yield None
        return
    with server_host.running_host(tmp_path_factory.mktemp("workflows")) as h:
        yield h


@pytest.fixture(scope="module")
def info(server) -> dict:
    if server is not None:
        return server.info
    nodes = conftest.HOST_NODES
    return w2a.object_info_from_classes(nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS)


def load(name: str) -> dict:
    return json.loads(workflow_titles.example_path(name).read_text())


def validate(prompt: dict, server=None):
    """(valid, error, node_errors) from the host's own validation: in-process on the fork; on a server, its
    POST /prompt, waiting for a queued prompt to end so that the next one is judged on an idle host."""
    if server is None:
        from comfy.cmd.execution import validate_prompt

        valid, error, outputs, node_errors = validate_prompt(prompt)
        return valid, error, node_errors
    status, body = server.request("/prompt", {"prompt": prompt, "client_id": "validation"})
    if status == 200:
        try:
            server.wait(body["prompt_id"], timeout=300)
        except PromptFailed:  # placeholder model files are empty: loading them fails after validation passed
            pass
    return status == 200 and not body.get("node_errors"), body.get("error"), body.get("node_errors")


def test_every_planned_workflow_exists_once_its_nodes_do(info):
    """A workflow whose nodes have all landed must be in example_workflows/ (run workflow_build.py --write)."""
    ready = [name for name, (_, needs) in workflow_build.WORKFLOWS.items() if all(n in info for n in needs)]
    assert sorted(ready) == sorted(set(ready) & set(NAMES)), f"missing: {sorted(set(ready) - set(NAMES))}"
    assert set(NAMES) <= set(workflow_build.WORKFLOWS), "a workflow file that the builder does not describe"


def test_example_files_are_named_by_their_titles():
    """example_workflows/ holds <title>.json and <title>.jpg for each example and nothing else (the template
    browser lists every .json there, titled by its file name); every title is safe in a file name and in the
    URL the frontend builds from it; the API twins keep the slugs."""
    files = sorted(p.name for p in workflow_titles.EXAMPLES.iterdir())
    assert files == sorted(f"{workflow_titles.TITLES[n]}{s}" for n in NAMES for s in (".json", ".jpg")), files
    assert workflow_build.check_titles() == []
    assert set(workflow_titles.TITLES) == set(workflow_build.WORKFLOWS), "one title per workflow the builder describes"
    for slug, title in workflow_titles.TITLES.items():
        assert workflow_titles.unsafe_characters(title) == [], title  # the browser suite checks the cards show it whole
        assert (
            workflow_titles.slug_of(title)
            == workflow_titles.slug_of(f"{title}.json")
            == workflow_titles.slug_of(slug)
            == slug
        )
    assert sorted(p.stem for p in (conftest.REPO / "scripts" / "prompts").glob("*.json")) == NAMES
    for bad in ("a/b", "a: b", "a#b", "50%", "what?", "p1-p99", "with_underscore", " padded"):
        assert workflow_titles.unsafe_characters(bad), bad
    assert workflow_titles.slug_of("no such example") is None


def test_the_main_job_takes_an_example_by_slug_or_title():
    import run_workflow

    sweep = workflow_titles.example_path("sdxl_quality_sweep")
    for name in (
        "sdxl_quality_sweep",
        "Quality sweep p1 to p99 (SDXL)",
        "Quality sweep p1 to p99 (SDXL).json",
        str(sweep),
    ):
        assert run_workflow.resolve_workflow(name) == sweep, name
    with pytest.raises(SystemExit, match=r"'Quality sweep p1 to p99 \(SDXL\)' \(sdxl_quality_sweep\)"):
        run_workflow.resolve_workflow("sdxl_no_such_example")


@pytest.mark.parametrize("name", NAMES)
def test_workflow_matches_the_host_and_converts(name, info):
    workflow = load(name)
    assert workflow["version"] == 0.4 and "extra" in workflow, "the 2024 editor's format"
    assert w2a.check_against_definitions(workflow, info) == []
    prompt = w2a.convert(workflow, info)
    ui_nodes = [n for n in workflow["nodes"] if n["type"] not in w2a.FRONTEND_ONLY]
    assert sorted(prompt) == sorted(str(n["id"]) for n in ui_nodes)
    for node in ui_nodes:
        entry = prompt[str(node["id"])]
        definition = info[node["type"]]
        inputs = w2a.editor_inputs(definition)
        assert set(entry["inputs"]) <= set(inputs), (node["type"], set(entry["inputs"]) - set(inputs))
        widgets = [n for n in w2a.widget_names(definition) if n]
        assert len(node.get("widgets_values", [])) == len(w2a.widget_names(definition))
        for widget in widgets:  # every widget maps to a real input and keeps its saved value
            assert widget in inputs
            if not isinstance(entry["inputs"].get(widget), list):
                assert entry["inputs"][widget] == node["widgets_values"][w2a.widget_names(definition).index(widget)]
        required = set(definition["input"].get("required", {}))
        assert required <= set(entry["inputs"]), (node["type"], required - set(entry["inputs"]))
    pack_nodes = {n["type"] for n in ui_nodes} & set(conftest.pack.NODE_CLASS_MAPPINGS)
    assert pack_nodes, "every example shows at least one node of this pack"


@pytest.mark.parametrize("name", NAMES)
def test_api_twin_and_builder_are_in_sync(name, info):
    """scripts/prompts/<name>.json is the conversion of the UI file, and the UI file is what the builder makes."""
    workflow = load(name)
    twin = json.loads((conftest.REPO / "scripts" / "prompts" / f"{name}.json").read_text())
    assert twin == w2a.convert(workflow, info), (
        "API twin out of date: run .venv/bin/python scripts/workflow_build.py --write"
    )
    built, _ = workflow_build.build_all(info)
    assert built[name] == workflow, "example out of date: run .venv/bin/python scripts/workflow_build.py --write"


@pytest.mark.parametrize("name", NAMES)
def test_thumbnail_exists(name):
    thumb = workflow_titles.example_path(name, ".jpg")
    assert thumb.is_file(), f"no thumbnail {thumb.name}"
    with Image.open(thumb) as im:
        assert im.format == "JPEG" and im.width >= 640


PLACEHOLDERS = workflow_build.MODEL_FILES  # empty files under every model name the examples use


def _server_placeholders(ws: Path) -> None:
    """The same empty files in a server's own model folders (it lists them on the next request)."""
    for folder, files in PLACEHOLDERS.items():
        (ws / "models" / folder).mkdir(parents=True, exist_ok=True)
        for f in files:
            if not (ws / "models" / folder / f).exists():
                (ws / "models" / folder / f).write_bytes(b"")
    if not (ws / "input" / "example.png").exists():
        Image.new("RGB", (64, 64), (120, 140, 160)).save(ws / "input" / "example.png")


@pytest.fixture()
def placeholder_files(tmp_path, server):
    """Empty files under every model name the examples use, in extra model folders, for validation only."""
    if server is not None:
        _server_placeholders(server.workspace)
        yield
        return
    from comfy.cmd import folder_paths

    names = PLACEHOLDERS
    added = []
    for folder, files in names.items():
        d = tmp_path / folder
        d.mkdir()
        for f in files:
            (d / f).write_bytes(b"")
        folder_paths.add_model_folder_path(folder, str(d))
        folder_paths.invalidate_cache(folder)
        added.append((folder, str(d)))
    example = Path(folder_paths.get_input_directory()) / "example.png"  # what the examples' Load Image nodes name
    made = not example.exists()
    if made:
        example.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), (120, 140, 160)).save(example)
    yield
    if made:
        example.unlink()
    for folder, d in added:
        folder_paths.folder_names_and_paths[folder][0].remove(d)
        folder_paths.invalidate_cache(folder)


@pytest.mark.parametrize("name", NAMES)
def test_real_prompt_validates_on_the_host(name, info, placeholder_files, server):
    """With files under the names it uses, the converted prompt passes the host's own validation."""
    valid, error, node_errors = validate(w2a.convert(load(name), info), server)
    assert valid, (error, node_errors)


@pytest.mark.parametrize("name", NAMES)
def test_tiny_prompt_validates_on_the_host(name, info, adapter_dir, server):
    adapters = server.adapters if server is not None else workflow_fixtures.write_tiny_adapters(adapter_dir)
    if server is None:  # the server's own workspace has them (server_host.running_host)
        workflow_fixtures.write_tiny_genziqa(adapter_dir.parent / "genziqa")
    prompt = workflow_fixtures.tiny_prompt(
        w2a.convert(load(name), info), workflow_fixtures.TinyOptions(adapters=adapters)
    )
    assert not {n["class_type"] for n in prompt.values()} & {"CheckpointLoaderSimple", "VAELoader", "LoadImage"}
    valid, error, node_errors = validate(prompt, server)
    assert valid, (error, node_errors)


# -- the converter's rules, on hand-made graphs ------------------------------------------------------------


def _node(node_id, kind, widgets=(), inputs=(), outputs=(), mode=0):
    return {
        "id": node_id,
        "type": kind,
        "pos": [0, 0],
        "size": [100, 50],
        "mode": mode,
        "order": node_id,
        "inputs": [dict(name=n, type=t, link=link) for n, t, link in inputs],
        "outputs": [dict(name=n, type=t, links=ls, slot_index=i) for i, (n, t, ls) in enumerate(outputs)],
        "widgets_values": list(widgets),
    }


def test_widget_order_follows_the_editor(info):
    assert w2a.widget_names(info["KSampler"]) == ["seed", None, "steps", "cfg", "sampler_name", "scheduler", "denoise"]
    assert w2a.widget_names(info["LoadImage"]) == ["image", None]  # the upload button
    assert w2a.widget_names(info["IQAAdapterLoader"]) == [
        "adapter_name",
        "metadata_override",
    ]  # required, then optional
    combo_seed = {"input": {"required": {"x": [["a", "b"], {"control_after_generate": True}], "n": ["INT", {}]}}}
    assert w2a.widget_names(combo_seed) == ["x", None, None, "n"]


def test_convert_follows_reroutes_and_bypass_and_drops_muted(info):
    ckpt = _node(
        1,
        "CheckpointLoaderSimple",
        ["m.safetensors"],
        outputs=[("MODEL", "MODEL", [1]), ("CLIP", "CLIP", [2]), ("VAE", "VAE", [])],
    )
    reroute = _node(2, "Reroute", inputs=[("", "*", 2)], outputs=[("", "CLIP", [3])])
    text = _node(
        3, "CLIPTextEncode", ["hello"], inputs=[("clip", "CLIP", 3)], outputs=[("CONDITIONING", "CONDITIONING", [])]
    )
    bypassed = _node(
        4,
        "ModelSamplingDiscrete",
        ["eps", False],
        inputs=[("model", "MODEL", 1)],
        outputs=[("MODEL", "MODEL", [4])],
        mode=4,
    )
    muted = _node(5, "CLIPTextEncode", ["muted"], inputs=[("clip", "CLIP", None)], mode=2)
    sampler = _node(6, "KSampler", [7, "fixed", 20, 8.0, "euler", "normal", 1.0], inputs=[("model", "MODEL", 4)])
    note = {"id": 7, "type": "Note", "pos": [0, 0], "size": [10, 10], "mode": 0, "widgets_values": ["hi"]}
    links = [[1, 1, 0, 4, 0, "MODEL"], [2, 1, 1, 2, 0, "CLIP"], [3, 2, 0, 3, 0, "CLIP"], [4, 4, 0, 6, 0, "MODEL"]]
    prompt = w2a.convert({"nodes": [ckpt, reroute, text, bypassed, muted, sampler, note], "links": links}, info)
    assert sorted(prompt) == ["1", "3", "6"]
    assert prompt["3"]["inputs"] == {"text": "hello", "clip": ["1", 1]}
    assert prompt["6"]["inputs"]["model"] == ["1", 0] and prompt["6"]["inputs"]["seed"] == 7
    assert "control_after_generate" not in prompt["6"]["inputs"]


def test_wrong_widget_count_names_the_node(info):
    bad = _node(9, "KSampler", [7, 20, 8.0, "euler", "normal", 1.0])  # seed's control value missing
    bad["title"] = "My sampler"
    with pytest.raises(w2a.WorkflowError, match=r"node #9 \(KSampler, 'My sampler'\) has 6 widget values.*makes 7"):
        w2a.convert({"nodes": [bad], "links": []}, info)
    with pytest.raises(w2a.WorkflowError, match="no node type 'NotANode'"):
        w2a.convert({"nodes": [_node(1, "NotANode")], "links": []}, info)


def test_node_reference_and_help_pages_match_the_code(info):
    """The node reference in docs/nodes.md and web/docs/<NodeId>.md are generated from the node classes."""
    import workflow_docs

    doc = workflow_docs.NODE_DOC.read_text()
    fresh, pages = workflow_docs.render_all(info, doc)
    hint = "run .venv/bin/python scripts/workflow_docs.py --write"
    assert fresh == doc, f"docs/nodes.md node reference is stale: {hint}"
    for path, text in pages.items():
        assert path.is_file() and path.read_text() == text, f"{path.name} is stale: {hint}"
    assert set(workflow_docs.parse_reference(doc)) == set(conftest.pack.NODE_CLASS_MAPPINGS)


def test_v3_combo_inputs_are_widgets_too():
    """Upstream's V3 nodes (LatentBatchSeedBehavior in 0.3.64) describe a dropdown as ("COMBO", {"options":
    [...]}) in /object_info (comfy_api/latest/_io.py, Combo.Input.as_dict), not as a list of choices; the
    editor makes the same widget for both forms, so the conversion must too."""
    v1 = {
        "input": {"required": {"samples": ["LATENT"], "seed_behavior": [["random", "fixed"], {"default": "fixed"}]}},
        "output": ["LATENT"],
    }
    v3 = {
        "input": {
            "required": {
                "samples": ["LATENT"],
                "seed_behavior": ["COMBO", {"default": "fixed", "multiselect": False, "options": ["random", "fixed"]}],
            }
        },
        "output": ["LATENT"],
    }
    for definition in (v1, v3):
        assert w2a.widget_names(definition) == ["seed_behavior"]
        assert w2a.socket_inputs(definition) == [("samples", "LATENT")]
        assert w2a.widget_default(definition["input"]["required"]["seed_behavior"]) == "fixed"
    no_default = ["COMBO", {"options": ["a", "b"]}]
    assert w2a.widget_default(no_default) == "a" and w2a.combo_options(no_default) == ["a", "b"]
    node = _node(
        1,
        "LatentBatchSeedBehavior",
        ["fixed"],
        inputs=[("samples", "LATENT", None)],
        outputs=[("LATENT", "LATENT", [])],
    )
    info = {"LatentBatchSeedBehavior": v3}
    assert w2a.check_against_definitions({"nodes": [node], "links": []}, info) == []
    assert w2a.convert({"nodes": [node], "links": []}, info)["1"]["inputs"] == {"seed_behavior": "fixed"}


@pytest.mark.parametrize("name", ["sdxl_quality_sweep", "sdxl_degradation"])
def test_same_noise_examples_convert_alike_with_upstreams_v3_definition(name, info):
    """With LatentBatchSeedBehavior described the V3 way (as upstream 0.3.64 serves it), the example still
    matches the definitions, converts to its API twin, and the builder makes the same file."""
    v3 = dict(info)
    v3["LatentBatchSeedBehavior"] = {
        **info["LatentBatchSeedBehavior"],
        "input": {
            "required": {
                "samples": ["LATENT", {}],
                "seed_behavior": ["COMBO", {"default": "fixed", "multiselect": False, "options": ["random", "fixed"]}],
            }
        },
    }
    workflow = load(name)
    assert w2a.check_against_definitions(workflow, v3) == []
    twin = json.loads((conftest.REPO / "scripts" / "prompts" / f"{name}.json").read_text())
    assert w2a.convert(workflow, v3) == twin
    assert workflow_build.build_all(v3)[0][name] == workflow
