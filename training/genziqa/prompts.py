"""GenzIQA's two prompts through the host's CLIP with gradients to the context vectors.

The scorer hands the context vectors to the host as textual-inversion embeddings, which the host copies into
a new embedding table in place: no gradient reaches them. Here the same token layout (start, 16 vectors,
words, end, padding) is built with a placeholder word in the vectors' places, and a forward hook on each
text encoder's embedding layer adds (vector - placeholder embedding) at those rows. The values are the
scorer's (up to rounding); the gradient reaches the vectors through the frozen text encoder. A text
encoder that places the vectors itself (`clip.encode_with_context(text, context)`, the toy world's word
table) is called directly, with gradients on.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Mapping, Sequence

import torch

from training.common.core import guidance
from training.common.errors import TrainingError

PLACEHOLDER = "X"  # the authors' "X X ... X" prompt prefix


def _embeddings(clip: Any, key: str) -> Any:
    """The CLIP text model's embedding layer (token + position) of encoder `key`."""
    enc = getattr(getattr(clip, "cond_stage_model", None), f"clip_{key}", None)
    module = getattr(getattr(getattr(enc, "transformer", None), "text_model", None), "embeddings", None)
    if module is None or not hasattr(module, "token_embedding"):
        raise TrainingError(
            f"The base model's text encoder '{key}' is not a host CLIP text model; GenzIQA training needs an "
            "SD1.x/SD2.x/SDXL checkpoint's CLIP."
        )
    return module


def _hook(ctx: torch.Tensor, placeholder: int):
    def add(module: Any, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        n, width = ctx.shape
        delta = ctx.to(output.dtype) - module.token_embedding.weight[placeholder].detach().to(output.dtype)
        zeros = output.new_zeros
        rows = torch.cat([zeros(1, width), delta, zeros(output.shape[1] - 1 - n, width)])
        return output + rows[None]

    return add


@contextlib.contextmanager
def _context_hooks(clip: Any, ctx: Mapping[str, torch.Tensor], placeholders: Mapping[str, int]) -> Iterator[None]:
    handles = []
    try:
        for key, vectors in ctx.items():
            handles.append(_embeddings(clip, key).register_forward_hook(_hook(vectors, placeholders[key])))
        yield
    finally:
        for h in handles:
            h.remove()


def _tokens(clip: Any, text: str, n: int) -> tuple[dict, dict[str, int]]:
    tokens, marks = clip.tokenize(text), clip.tokenize(PLACEHOLDER)
    out, placeholders = {}, {}
    for key, batches in tokens.items():
        row, mark = list(batches[0]), marks[key][0][1]
        pad = row[-1]
        if len(row) < n + 3 or any(t != pad for t in row[-n:]):
            raise TrainingError(f"The GenzIQA prompt '{text}' is too long to fit {n} context vectors in one chunk.")
        out[key] = [[row[0]] + [mark] * n + row[1:-n]]
        placeholders[key] = int(mark[0])
    return out, placeholders


def encode_prompts(
    clip: Any, prompts: Sequence[str], ctx: Mapping[str, torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """[len(prompts), T, C] text features and the pooled outputs (None without), differentiable in ctx."""
    n = next(iter(ctx.values())).shape[0]
    conds, pooled = [], []
    saved = torch.autograd.graph.saved_tensors_hooks(guidance("genziqa.scorer").clone_saved, lambda t: t)
    with torch.inference_mode(False), torch.enable_grad(), saved:
        for text in prompts:
            if hasattr(clip, "encode_with_context"):
                cond, pool = clip.encode_with_context(text, ctx)
                conds.append(cond.float())
                pooled.append(pool)
                continue
            tokens, placeholders = _tokens(clip, text, n)
            missing = sorted(set(tokens) - set(ctx))
            if missing:
                raise TrainingError(f"internal: no context vectors for text encoder(s) {', '.join(missing)}.")
            with _context_hooks(clip, {k: ctx[k] for k in tokens}, placeholders):
                cond, pool = clip.encode_from_tokens(tokens, return_pooled=True)
            conds.append(cond.float())
            pooled.append(pool)
    width = min(c.shape[1] for c in conds)
    context = torch.cat([c[:, :width] for c in conds])
    return context, None if any(p is None for p in pooled) else torch.cat([p.float() for p in pooled])
