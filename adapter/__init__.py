"""IQA-Adapter core: checkpoints, metadata, targets, encoding and the decoupled attention patch.

Plain torch. The host is reached only through adapter.patching (duck-typed ModelPatcher calls) and
the attention function that the caller passes in.
"""

from .attention import DecoupledCrossAttention, QualityTokens
from .checkpoint import AdapterSpec, infer_spec, load_state_dict
from .condition import condition_from_vectors, quality_tokens
from .errors import IQAAdapterError
from .metadata import AdapterMetadata, resolve_metadata
from .model import IQAAdapter
from .norm_table import NormTable, default_norm_table
from .patching import attach_quality_tokens, final_sigma, sigma_window
from .region_mask import RegionMask
from .targets import MAX_TARGET_ITEMS, TARGET_MODES, build_targets, items_from_scores, parse_targets

__all__ = [
    "AdapterMetadata",
    "AdapterSpec",
    "DecoupledCrossAttention",
    "IQAAdapter",
    "IQAAdapterError",
    "NormTable",
    "QualityTokens",
    "RegionMask",
    "TARGET_MODES",
    "attach_quality_tokens",
    "final_sigma",
    "condition_from_vectors",
    "build_targets",
    "default_norm_table",
    "infer_spec",
    "items_from_scores",
    "load_state_dict",
    "parse_targets",
    "MAX_TARGET_ITEMS",
    "quality_tokens",
    "resolve_metadata",
    "sigma_window",
]
