"""GenzIQA (De, Mitra, Soundararajan, arXiv 2406.04654): no-reference IQA read from a latent diffusion
model's cross-attention with learned antonym prompts. Plain torch; the host is reached only in host.py.
"""

from .file_format import GenzIQAFile, GenzIQAMeta, load_genziqa, read_genziqa, save_genziqa
from .layer_selection import LayerSelection, default_selection, model_family
from .pooling import pooled_logits
from .scorer import GenzIQAScorer

__all__ = [
    "GenzIQAFile",
    "GenzIQAMeta",
    "GenzIQAScorer",
    "LayerSelection",
    "default_selection",
    "load_genziqa",
    "model_family",
    "pooled_logits",
    "read_genziqa",
    "save_genziqa",
]
