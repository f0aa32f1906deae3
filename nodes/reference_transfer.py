"""Reference Quality Transfer: condition a MODEL on the quality traits of a reference image."""

from __future__ import annotations

from ..adapter import IQAAdapter, IQAAdapterError, attach_quality_tokens, condition_from_vectors, sigma_window
from ..guidance.reference_embedding import embed_reference
from . import host
from .schedule import BLOCK_WEIGHTS_INPUT, MODEL_INPUT, check_schedule, layer_weights, schedule_inputs


class ReferenceQualityTransfer:
    DESCRIPTION = (
        "Conditions the model on the quality traits (blur, JPEG blocks, noise, colour shift) of a reference image "
        "through a reference-based IQA-Adapter, without copying its content. The reference is embedded with the "
        "IQA network its adapter's embedding spec names. A batch of references conditions latents one to one."
    )
    CATEGORY = "IQA-Adapter"
    RETURN_TYPES = ("MODEL",)
    OUTPUT_TOOLTIPS = ("A clone of the model with the reference condition on every cross-attention layer.",)
    FUNCTION = "apply"

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": MODEL_INPUT,
                "iqa_adapter": (
                    "IQA_ADAPTER",
                    {"tooltip": "A reference-based IQA-Adapter (metadata kind 'reference' with an embedding spec)."},
                ),
                "reference": (
                    "IMAGE",
                    {
                        "tooltip": "Reference image(s). One applies to every latent; a batch maps one to one. "
                        "RGBA drops alpha, greyscale repeats to RGB; at least 32 px a side."
                    },
                ),
                "iqa_model": (
                    "IQA_MODEL",
                    {"tooltip": "From Load IQA Model: the metric the adapter's embedding spec names."},
                ),
                **schedule_inputs("reference"),
            },
            "optional": {"block_weights": BLOCK_WEIGHTS_INPUT},
        }

    def apply(
        self,
        model,
        iqa_adapter: IQAAdapter,
        reference,
        iqa_model,
        scale: float,
        start_percent: float,
        end_percent: float,
        block_weights: str = "",
    ):
        check_schedule(scale, start_percent, end_percent)
        spec = iqa_adapter.embedding_spec
        if spec is None:
            raise IQAAdapterError(
                f"{iqa_adapter.name} is a score-based adapter; use it with Quality Condition, not Reference Quality Transfer."
            )
        weights = layer_weights(model, block_weights)
        embedding = embed_reference(iqa_model, reference, spec)  # on the device Load IQA Model chose
        s_start, s_end = sigma_window(model, start_percent, end_percent)
        tokens = condition_from_vectors(
            iqa_adapter,
            embedding,
            scale,
            s_start,
            s_end,
            label=f"Reference Quality Transfer ({iqa_adapter.name})",
            rows_name="references",
        )
        return (attach_quality_tokens(model, iqa_adapter.spec, tokens, host.host_attention, iqa_adapter.name, weights),)


NODE_CLASS_MAPPINGS = {"IQAReferenceQualityTransfer": ReferenceQualityTransfer}
NODE_DISPLAY_NAME_MAPPINGS = {"IQAReferenceQualityTransfer": "Reference Quality Transfer"}
