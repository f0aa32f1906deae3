"""The real host's HTTP server for server-level tests: one process per test module, started headless
with this pack and the test-only fixture pack in its custom_nodes/, tiny random adapters in
models/iqa_adapter, and helpers to turn an example workflow into a tiny API prompt for it.
"""
from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import workflow_fixtures  # noqa: E402
import workflow_to_api  # noqa: E402
from workflow_host import HostServer, PromptFailed, PromptRejected, make_workspace  # noqa: E402,F401

EXAMPLES = REPO / "example_workflows"


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
        """The example workflow `name` converted with this server's /object_info."""
        workflow = json.loads((EXAMPLES / f"{name}.json").read_text())
        return workflow_to_api.convert(workflow, self.info)

    def tiny_prompt(self, name: str, **options) -> dict:
        opts = workflow_fixtures.TinyOptions(adapters=self.adapters, **options)
        return workflow_fixtures.tiny_prompt(self.api_prompt(name), opts)


@contextmanager
def running_host(root: Path, threads: int = 1) -> Iterator[ServerHost]:
    """Start the host in a fresh workspace under `root`; stop it (and only it) on exit."""
    ws = make_workspace(Path(root) / "ws", fixtures=True)
    adapters = workflow_fixtures.write_tiny_adapters(ws / "models" / "iqa_adapter")
    server = HostServer(ws, log_path=Path(root) / "host.log", threads=threads)
    server.start()
    try:
        yield ServerHost(server, adapters)
    finally:
        server.stop()


def example_names() -> list[str]:
    return sorted(p.stem for p in EXAMPLES.glob("*.json"))


class EditorPage:
    """The host's own web editor in headless Chromium, driven over the DevTools protocol (aiohttp websocket).

    Only what the workflow tests need: open the editor, evaluate JavaScript (awaiting promises), close.
    """

    FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run"]

    def __init__(self, chromium: str, url: str, profile: Path):
        import asyncio
        import subprocess

        self.loop = asyncio.new_event_loop()
        port = _free_port()
        self.proc = subprocess.Popen([chromium, *self.FLAGS, f"--user-data-dir={profile}", f"--remote-debugging-port={port}",
                                      "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._id = 0
        try:
            self.loop.run_until_complete(self._connect(port))
            self.call("Page.navigate", url=url)
            self.wait_for("!!window.app && !!window.app.graph && Object.keys(LiteGraph.registered_node_types).length > 100")
        except BaseException:
            self.close()
            raise

    async def _connect(self, port: int) -> None:
        import asyncio

        import aiohttp

        self.session = aiohttp.ClientSession()
        for _ in range(100):
            try:
                async with self.session.get(f"http://127.0.0.1:{port}/json/list") as r:
                    pages = [t for t in await r.json() if t["type"] == "page"]
                if pages:
                    break
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        else:
            raise RuntimeError("Chromium did not open its DevTools port")
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"], max_msg_size=0)

    async def _call(self, method: str, params: dict) -> dict:
        self._id += 1
        await self.ws.send_json({"id": self._id, "method": method, "params": params})
        while True:
            msg = await self.ws.receive_json()
            if msg.get("id") == self._id:
                return msg

    def call(self, method: str, **params) -> dict:
        return self.loop.run_until_complete(self._call(method, params))

    def evaluate(self, expression: str):
        """The JSON value of a JavaScript expression (promises awaited); JS exceptions raise RuntimeError."""
        msg = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        result = msg.get("result", {})
        if "exceptionDetails" in result or "error" in msg:
            raise RuntimeError(f"JavaScript failed: {result.get('exceptionDetails') or msg.get('error')}")
        return result["result"].get("value")

    def wait_for(self, condition: str, timeout: float = 60.0) -> None:
        import time

        end = time.time() + timeout
        while time.time() < end:
            try:
                if self.evaluate(condition) is True:
                    return
            except RuntimeError:
                pass
            time.sleep(0.25)
        raise TimeoutError(f"the editor never satisfied: {condition}")

    def close(self) -> None:
        if getattr(self, "session", None) is not None:
            if getattr(self, "ws", None) is not None:
                self.loop.run_until_complete(self.ws.close())
            self.loop.run_until_complete(self.session.close())
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except Exception:  # noqa: BLE001 - a browser that will not stop is killed
            self.proc.kill()
        self.loop.close()


def _free_port() -> int:
    from workflow_host import free_port

    return free_port()
