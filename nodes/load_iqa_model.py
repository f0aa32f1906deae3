"""Load IQA Model: a pyiqa no-reference metric by name, with weights from models/iqa, as IQA_MODEL."""

from __future__ import annotations

from ..adapter.errors import IQAAdapterError
from ..guidance.iqa_models import load_iqa_model
from ..guidance.metric_specs import DEFAULT_METRIC, METRICS, metric_names
from . import host

DEVICES = ("auto", "cpu")


class LoadIQAModel:
    DESCRIPTION = (
        "Loads a no-reference IQA metric through pyiqa (TOPIQ, MUSIQ, LIQE, CLIP-IQA+, LAION-Aes, NIQE, ...). "
        "Weight files are looked up in models/iqa first, then in pyiqa's cache ($TORCH_HOME/hub/pyiqa); nothing "
        "is downloaded unless allow_download is on. A missing file's error names it and its download URL. "
        "Loaded metrics are shared: graphs that use the same metric load it once."
    )
    CATEGORY = "IQA-Adapter"
    RETURN_TYPES = ("IQA_MODEL",)
    RETURN_NAMES = ("iqa_model",)
    OUTPUT_TOOLTIPS = ("The metric, for IQA Score, IQA Gradient Guidance and Reference Quality Transfer.",)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "metric": (
                    metric_names(),
                    {
                        "default": DEFAULT_METRIC,
                        "tooltip": "pyiqa metric name. The paper's adapters use topiq_nr and laion_aes; niqe, brisque and piqe "
                        "are lower-is-better. "
                        + "; ".join(f"{n}: {s.note}" for n, s in list(METRICS.items())[:6])
                        + "; ...",
                    },
                ),
                "allow_download": (
                    "BOOLEAN",
                    {
                        "default": False,
                        "tooltip": "Off (default): use only files already in models/iqa or pyiqa's cache, and fail with the file "
                        "name and URL otherwise. On: let pyiqa download missing weights into its cache.",
                    },
                ),
            },
            "optional": {
                "device": (
                    list(DEVICES),
                    {
                        "default": "auto",
                        "tooltip": "auto: run on the host's device (the GPU when there is one), parked on the host's offload "
                        "device between uses. cpu: always on the CPU, to leave GPU memory to the diffusion model.",
                    },
                ),
            },
        }

    def load(self, metric: str, allow_download: bool = False, device: str = "auto"):
        if device not in DEVICES:
            raise IQAAdapterError(f"device must be one of {DEVICES}, got {device!r}.")
        home = host.offload_device() if device == "auto" else "cpu"
        model = load_iqa_model(
            metric, search_dirs=host.model_folder_dirs(host.IQA_FOLDER), allow_download=allow_download, home=home
        )
        # The device choice travels with this IQA_MODEL; the cached network itself stays shared.
        return (model.with_device(host.compute_device() if device == "auto" else "cpu"),)


NODE_CLASS_MAPPINGS = {"IQALoadModel": LoadIQAModel}
NODE_DISPLAY_NAME_MAPPINGS = {"IQALoadModel": "Load IQA Model"}
