"""The real ComfyUI host as a headless HTTP server in a subprocess, and a small client for its prompt queue.

Used by the main job (scripts/run_workflow.py), the workflow builder and the server-level tests. The host
(the PyPI fork, an upstream ComfyUI folder or the February 2026 ComfyUI, scripts/comfy_host.py) is started the way a user starts it,
serving a workspace WS with this pack (and, for tiny runs, the test-only fixture pack) symlinked into
WS/custom_nodes. HostServer.attach(url) talks to a server that is already running instead.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Optional

import comfy_host  # noqa: E402
from comfy_host import Host  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PACK_NAME = "comfyui_iqa_adapter"
FIXTURES_NAME = "iqa_test_fixtures"
TOY_NODES_NAME = "iqa_toy_nodes"

log = logging.getLogger(__name__)


class PromptRejected(RuntimeError):
    """POST /prompt answered an HTTP error (validation failed): status and the JSON body the host sent."""

    def __init__(self, status: int, body: Any):
        self.status, self.body = status, body
        super().__init__(f"HTTP {status}: {json.dumps(body)[:3000]}")


class PromptFailed(RuntimeError):
    """The prompt was queued but its execution failed: the host's execution_error message."""

    def __init__(self, prompt_id: str, error: dict):
        self.prompt_id, self.error = prompt_id, error
        where = f"node {error.get('node_id')} ({error.get('node_type')})" if error.get("node_type") else "the prompt"
        super().__init__(f"{where} failed: {error.get('exception_type', '')}: {error.get('exception_message', error)}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_workspace(
    root: Optional[Path] = None, fixtures: bool = False, models: Optional[Path] = None, toy: bool = False
) -> Path:
    """A host working directory: custom_nodes/ with the pack (and the fixture pack, and the toy world's
    hidden loader pack toy/nodes and its adapters when toy), models/ (a link to a user's models folder when given), input/
    and output/."""
    ws = Path(root) if root else Path(tempfile.mkdtemp(prefix="iqa-host-"))
    nodes = ws / "custom_nodes"
    nodes.mkdir(parents=True, exist_ok=True)
    (nodes / PACK_NAME).symlink_to(REPO)
    if fixtures:
        (nodes / FIXTURES_NAME).symlink_to(REPO / "tests" / "fixture_nodes")
    if toy:
        (nodes / TOY_NODES_NAME).symlink_to(REPO / "toy" / "nodes")
    if models is not None:
        (ws / "models").symlink_to(Path(models).resolve())
    else:
        (ws / "models").mkdir(exist_ok=True)
    if toy and models is None:  # the toy adapters (weights/toy), where Load IQA-Adapter lists them
        (ws / "models" / "iqa_adapter").mkdir(exist_ok=True)
        for f in sorted((REPO / "weights" / "toy").glob("toy_adapter_*.safetensors")):
            (ws / "models" / "iqa_adapter" / f.name).symlink_to(f)
    for d in ("input", "output"):
        (ws / d).mkdir(exist_ok=True)
    return ws


class ExecutionErrors:
    """The host's websocket (/ws?clientId=...), read in a thread: each prompt's execution_error event (node_id,
    node_type, exception_type, exception_message), as the editor receives it. Needed because the February 2026
    host (fork2026) keeps only "execution_error: <message>" strings in /history, without the node."""

    def __init__(self, base: str, client_id: str, timeout: float = 10.0):
        self.by_prompt: dict[str, dict] = {}
        self._ready = threading.Event()
        url = "ws" + base[len("http") :] + "/ws?" + urllib.parse.urlencode({"clientId": client_id})
        threading.Thread(target=self._read, args=(url,), daemon=True, name="host-websocket").start()
        self._ready.wait(timeout)

    def _read(self, url: str) -> None:
        import aiohttp  # the host's own dependency, in every venv that runs this module

        async def listen() -> None:
            async with aiohttp.ClientSession() as session, session.ws_connect(url, max_msg_size=0) as ws:
                self._ready.set()
                async for msg in ws:  # binary frames are previews; the JSON events are text
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        event = json.loads(msg.data)
                        data = event.get("data") or {}
                        if event.get("type") == "execution_error" and data.get("prompt_id"):
                            self.by_prompt[data["prompt_id"]] = data

        try:
            asyncio.run(listen())
        except Exception as e:  # the server stopped, or never answered: /history's text is all there is
            log.debug("host websocket %s closed: %s", url, e)
        finally:
            self._ready.set()

    def get(self, prompt_id: str, timeout: float) -> Optional[dict]:
        """The prompt's execution_error event; waits up to timeout (it may arrive just after /history)."""
        end = time.time() + timeout
        while prompt_id not in self.by_prompt and time.time() < end:
            time.sleep(0.05)
        return self.by_prompt.get(prompt_id)


def history_error(status: dict) -> Optional[dict]:
    """The execution_error in a /history status: [event, data] pairs (fork, upstream), or "event: message"
    strings (fork2026, which drops the node; HostServer then asks ExecutionErrors)."""
    for m in status.get("messages", []):
        if isinstance(m, (list, tuple)) and m and m[0] == "execution_error":
            return m[1]
        if isinstance(m, str) and m.startswith("execution_error"):
            return {"exception_message": m.partition(": ")[2].strip() or m}
    return None


class HostServer:
    """One host process serving one workspace, or (attach) a server someone else started. Use as a context
    manager; stop() always reaps the process it started, and leaves an attached server running."""

    def __init__(
        self,
        workspace: Optional[Path],
        log_path: Optional[Path] = None,
        gpu: bool = False,
        threads: Optional[int] = None,
        isolated: bool = True,
        host: Optional[Host] = None,
        url: Optional[str] = None,
    ):
        """isolated: offline Hugging Face hub and a torch cache inside the workspace (tests, tiny runs); a real
        run leaves the user's environment alone, so pyiqa's cache ($TORCH_HOME/hub/pyiqa) is found.
        host: which ComfyUI to start (default: the PyPI fork in this venv). url: use attach() instead."""
        self.workspace = Path(workspace) if workspace is not None else None
        self.host = host or comfy_host.fork()
        self.isolated = isolated
        self.log_path = Path(log_path) if log_path else (self.workspace / "host.log" if self.workspace else None)
        self.gpu = gpu
        self.threads = threads
        self.proc: Optional[subprocess.Popen] = None
        self.client_id = f"iqa-adapter-{uuid.uuid4().hex[:8]}"  # the prompts' client id, and the websocket's
        self._errors: Optional[ExecutionErrors] = None
        self.attached = url is not None
        if url is None:
            self.port = free_port()
            self.base = f"http://127.0.0.1:{self.port}"
        else:
            parsed = urllib.parse.urlparse(url if "://" in url else f"http://{url}")
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(f"Server address {url!r}: give it as http://HOST:PORT")
            self.port = parsed.port
            self.base = f"{parsed.scheme}://{parsed.netloc}"

    @classmethod
    def attach(cls, url: str) -> "HostServer":
        """A server that is already running at `url` (http://host:port): nothing is started or stopped, and
        images come back over HTTP (fetch_image), since its folders may be on another machine."""
        return cls(None, isolated=False, url=url)

    # -- process ---------------------------------------------------------------------------------------
    def start(self, timeout: float = 180.0) -> "HostServer":
        if self.attached:
            self._wait_ready(timeout=10.0)
            return self
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        if self.isolated:
            env["HF_HUB_OFFLINE"] = "1"
            env.setdefault("TORCH_HOME", str(self.workspace / "torch_home"))
        if self.threads:  # tiny models gain nothing from threads and lose a lot to oversubscription
            env["OMP_NUM_THREADS"] = str(self.threads)
        cmd = self.host.server_command(self.workspace, self.port, gpu=self.gpu)
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(cmd, cwd=self.workspace, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.attached:
                try:
                    info = self.get("/object_info/IQAAdapterLoader", timeout=5)
                except (urllib.error.URLError, ConnectionError, OSError) as e:
                    raise RuntimeError(
                        f"No ComfyUI server answers at {self.base} ({e}); start it, or leave out --server"
                    ) from None
                if "IQAAdapterLoader" not in info:
                    raise RuntimeError(
                        f"The server at {self.base} has not loaded this pack: put it into that ComfyUI's custom_nodes/ and restart it"
                    )
                return
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"The host exited early (code {self.proc.returncode}); see {self.log_path}:\n{self.log_tail()}"
                )
            try:
                if "IQAAdapterLoader" in self.get("/object_info/IQAAdapterLoader", timeout=5):
                    return
                raise RuntimeError(f"The host runs but did not load this pack; see {self.log_path}:\n{self.log_tail()}")
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.3)
        raise RuntimeError(f"The host did not answer within {timeout:.0f} s; see {self.log_path}")

    def alive(self) -> bool:
        if self.attached:
            try:
                return self.request("/system_stats", timeout=10)[0] == 200
            except (urllib.error.URLError, ConnectionError, OSError):
                return False
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if getattr(self, "_log", None):
            self._log.close()

    def log_tail(self, chars: int = 3000) -> str:
        if self.log_path is None:
            return f"(the server at {self.base} was started elsewhere: see its own console)"
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def __enter__(self) -> "HostServer":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- HTTP ------------------------------------------------------------------------------------------
    def request(self, path: str, payload: Any = None, timeout: float = 30.0) -> tuple[int, Any]:
        """(status, JSON body) of a GET, or of a POST when payload is given; HTTP errors are returned, not raised."""
        data = None if payload is None else json.dumps(payload).encode()
        req = urllib.request.Request(self.base + path, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                raw, status = r.read(), r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw or b"{}")
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def get(self, path: str, timeout: float = 30.0) -> Any:
        status, body = self.request(path, timeout=timeout)
        if status != 200:
            raise RuntimeError(f"GET {path}: HTTP {status}: {body}")
        return body

    def object_info(self) -> dict:
        return self.get("/object_info")

    def post_prompt(self, prompt: dict) -> tuple[int, Any]:
        """POST /prompt under this client's id, with its websocket listening first (so that wait() can name
        the failing node on every host): (status, JSON body)."""
        if self._errors is None:
            self._errors = ExecutionErrors(self.base, self.client_id)
        return self.request("/prompt", {"prompt": prompt, "client_id": self.client_id})

    def queue(self, prompt: dict) -> str:
        """POST /prompt; the prompt id, or PromptRejected with the host's node_errors."""
        status, body = self.post_prompt(prompt)
        if status != 200:
            raise PromptRejected(status, body)
        return body["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = 600.0, poll: float = 0.2) -> dict:
        """Poll /history until the prompt is done; its history entry, or PromptFailed."""
        end = time.time() + timeout
        while time.time() < end:
            if not self.alive():
                raise RuntimeError(
                    f"The host died while running the prompt; see {self.log_path or self.base}:\n{self.log_tail()}"
                )
            hist = self.get(f"/history/{prompt_id}")
            if prompt_id in hist:
                entry = hist[prompt_id]
                status = entry.get("status") or {}
                if status.get("status_str") == "error":
                    error = history_error(status)
                    if (error is None or "node_type" not in error) and self._errors is not None:
                        error = self._errors.get(prompt_id, timeout=5.0) or error
                    raise PromptFailed(prompt_id, error or {"exception_message": str(status)})
                return entry
            time.sleep(poll)
        raise TimeoutError(f"Prompt {prompt_id} did not finish within {timeout:.0f} s")

    def run(self, prompt: dict, timeout: float = 600.0) -> dict:
        return self.wait(self.queue(prompt), timeout)

    def output_images(self, entry: dict) -> dict[str, list[Path]]:
        """Image files each output node of a history entry wrote, by node id (saved and temp previews).
        Only for a server this process started; for any server, see image_refs and fetch_image."""
        if self.workspace is None:
            raise RuntimeError(f"The files of the server at {self.base} are not local: use image_refs and fetch_image")
        out: dict[str, list[Path]] = {}
        for node_id, node_out in (entry.get("outputs") or {}).items():
            for im in node_out.get("images", []) or []:
                folder = {"output": "output", "temp": "temp", "input": "input"}.get(im.get("type", "output"), "output")
                out.setdefault(node_id, []).append(self.workspace / folder / im.get("subfolder", "") / im["filename"])
        return out

    @staticmethod
    def image_refs(entry: dict) -> dict[str, list[dict]]:
        """The image entries ({filename, subfolder, type}) each output node of a history entry recorded."""
        return {
            node_id: list(node_out.get("images", []) or [])
            for node_id, node_out in (entry.get("outputs") or {}).items()
            if node_out.get("images")
        }

    def fetch_image(self, ref: dict, timeout: float = 60.0) -> bytes:
        """One image's bytes through GET /view, which every host serves (local or not)."""
        query = urllib.parse.urlencode(
            {"filename": ref["filename"], "subfolder": ref.get("subfolder", ""), "type": ref.get("type", "output")}
        )
        with urllib.request.urlopen(f"{self.base}/view?{query}", timeout=timeout) as r:
            return r.read()


def remove_workspace(ws: Path) -> None:
    shutil.rmtree(ws, ignore_errors=True)
