"""Run API-format prompts through the real host's validator and node executor, in-process."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field


class Recorder:
    """The executor's server side: collects the messages a websocket client would get."""

    client_id = None
    last_node_id = None
    last_prompt_id = None
    receive_all_progress_notifications = True

    def __init__(self):
        self.messages: list = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


@dataclass
class Run:
    ok: bool
    validation_error: dict | None = None
    node_errors: dict = field(default_factory=dict)
    executor: object = None
    messages: list = field(default_factory=list)

    def output(self, node_id: str, index: int = 0):
        """The first batch-list item of one output of a node."""
        return self.executor.outputs[node_id][index][0]

    @property
    def error_message(self) -> str:
        for event, data in self.messages:
            if event == "execution_error":
                return data["exception_message"]
        return f"{self.validation_error} {self.node_errors}"


def execute(prompt: dict, executor=None) -> Run:
    from comfy.cmd.execution import PromptExecutor, validate_prompt

    valid, error, outputs, node_errors = validate_prompt(prompt)
    if not valid:
        return Run(False, error, node_errors)
    recorder = Recorder()
    executor = executor or PromptExecutor(recorder)
    executor.server = recorder
    executor.execute(prompt, str(uuid.uuid4()), {"client_id": "tests"}, outputs)
    return Run(executor.success is True, None, {}, executor, recorder.messages)


def sampling_graph(
    layout: str,
    adapter_name: str | None,
    targets: str = "99",
    batch: int = 1,
    seed: int = 3,
    scale: float = 1.0,
    steps: int = 3,
    cfg: float = 4.0,
    mode: str = "percentile",
    extra: dict | None = None,
) -> dict:
    """Tiny model -> (Load IQA-Adapter -> Quality Condition) -> KSampler -> image -> preview.

    The positive and negative prompts have the same token count, so the host runs cond and uncond as one
    batch when psutil reports more free RAM than BaseModel.memory_required (1.2 GB for two 64 px latents, 1.8 GB for one at 192 px),
    and one after the other below that. Tests that compare two runs bit for bit assume both are on the same
    side of that line. The sub-quadratic attention's chunk sizes, also set from free RAM, give one chunk at
    these sizes unless less than about 10 MB is free.
    """
    g = {
        "model": {"class_type": "IQATestTinyModel", "inputs": {"layout": layout, "seed": 0}},
        "pos": {"class_type": "IQATestTinyConditioning", "inputs": {"layout": layout, "seed": 1, "tokens": 6}},
        "neg": {"class_type": "IQATestTinyConditioning", "inputs": {"layout": layout, "seed": 2, "tokens": 6}},
        "latent": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": batch}},
        "sampler": {
            "class_type": "KSampler",
            "inputs": {
                "model": ["model", 0],
                "seed": seed,
                "steps": steps,
                "cfg": cfg,
                "sampler_name": "euler",
                "scheduler": "normal",
                "positive": ["pos", 0],
                "negative": ["neg", 0],
                "latent_image": ["latent", 0],
                "denoise": 1.0,
            },
        },
        "image": {"class_type": "IQATestLatentToImage", "inputs": {"samples": ["sampler", 0]}},
        "preview": {"class_type": "PreviewImage", "inputs": {"images": ["image", 0]}},
    }
    if adapter_name is not None:
        g["loader"] = {
            "class_type": "IQAAdapterLoader",
            "inputs": {"adapter_name": adapter_name, "metadata_override": ""},
        }
        g["qc"] = {
            "class_type": "IQAQualityCondition",
            "inputs": {
                "model": ["model", 0],
                "iqa_adapter": ["loader", 0],
                "targets": targets,
                "target_mode": mode,
                "scale": scale,
                "start_percent": 0.0,
                "end_percent": 1.0,
                "uncond": "zeros",
                "negative_strength": 0.5,
            },
        }
        g["sampler"]["inputs"]["model"] = ["qc", 0]
    for node, inputs in (extra or {}).items():
        g[node]["inputs"].update(inputs)
    return g


def reference_transfer_graph(layout: str, adapter_name: str, reference: dict, iqa: dict, batch: int = 1) -> dict:
    """sampling_graph with Reference Quality Transfer between the tiny model and the sampler: the reference
    image node, the IQA model node (both given), Load IQA-Adapter of adapter_name and the transfer node."""
    g = sampling_graph(layout, None, batch=batch)
    g["ref_img"], g["iqa"] = reference, iqa
    g["loader"] = {"class_type": "IQAAdapterLoader", "inputs": {"adapter_name": adapter_name, "metadata_override": ""}}
    g["rqt"] = {
        "class_type": "IQAReferenceQualityTransfer",
        "inputs": {
            "model": ["model", 0],
            "iqa_adapter": ["loader", 0],
            "reference": ["ref_img", 0],
            "iqa_model": ["iqa", 0],
            "scale": 1.0,
            "start_percent": 0.0,
            "end_percent": 1.0,
        },
    }
    g["sampler"]["inputs"]["model"] = ["rqt", 0]
    return g
