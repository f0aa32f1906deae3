"""Load IQA-Adapter: a checkpoint from models/iqa_adapter, with its metadata, as IQA_ADAPTER."""

from __future__ import annotations

from ..adapter import IQAAdapter, IQAAdapterError
from ..adapter.metadata import parse_json_text
from . import host


class LoadIQAAdapter:
    DESCRIPTION = (
        "Loads an IQA-Adapter checkpoint (IP-Adapter format) from models/iqa_adapter. The tensors give its "
        "shape; the metrics it was trained on come from the safetensors header, a sidecar JSON beside the file, "
        "the pack's manifest, or the override below."
    )
    CATEGORY = "IQA-Adapter"
    RETURN_TYPES = ("IQA_ADAPTER",)
    RETURN_NAMES = ("iqa_adapter",)
    OUTPUT_TOOLTIPS = ("The loaded adapter, for Quality Condition.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "adapter_name": (
                    host.model_file_list(host.ADAPTER_FOLDER),
                    {
                        "tooltip": "IQA-Adapter file in models/iqa_adapter (or a folder listed for 'iqa_adapter' in extra_model_paths.yaml, extra_paths.yaml on ComfyUI since 2026).",
                    },
                ),
            },
            "optional": {
                "metadata_override": (
                    "STRING",
                    {
                        "default": "",
                        "multiline": True,
                        "tooltip": 'JSON merged over the file\'s metadata, e.g. {"metrics": ["topiq_nr", "laion_aes"], '
                        '"use_flag": false, "pos_encode_L": 0, "normalized": true}. Leave empty to use the file\'s own.',
                    },
                ),
            },
        }

    def load(self, adapter_name: str, metadata_override: str = ""):
        if not isinstance(metadata_override, str):  # optional inputs may reach here unvalidated (API, older hosts)
            raise IQAAdapterError(
                f"metadata_override must be JSON text, got {type(metadata_override).__name__} "
                f"{str(metadata_override)[:80]!r}. Leave it empty to use the file's own metadata."
            )
        path = host.model_file_path(host.ADAPTER_FOLDER, adapter_name)
        override = (
            parse_json_text(metadata_override, "the node's metadata_override") if metadata_override.strip() else None
        )
        return (IQAAdapter.load(path, override),)


NODE_CLASS_MAPPINGS = {"IQAAdapterLoader": LoadIQAAdapter}
NODE_DISPLAY_NAME_MAPPINGS = {"IQAAdapterLoader": "Load IQA-Adapter"}
