"""ToyCLIP: the toy model's text encoder stand-in, a learned word-embedding table trained with the UNet.

Captions are short ("a photo of coffee"), so lowercased word tokens looked up in a table (unknown words ->
one UNK row, padding -> a PAD row) plus a learned position embedding is enough conditioning, and weighs a
few kB. An empty caption is all PAD: the unconditional input that text dropout trains for CFG.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import torch

PAD, UNK = "<pad>", "<unk>"
# GenzIQA's two prompts on the toy (genziqa-train --prompts). The vocabulary is the captions' words ("a photo
# of coffee", ...), so the authors' "Good Photo." / "Bad Photo." both read "<unk> photo": identical
# conditionings and a noise term of 0. Two different in-vocabulary prompts keep the method's two
# conditionings; they carry no notion of quality, which the context vectors and the LoRA learn.
GENZIQA_PROMPTS = ("a photo", "of")
_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> list[str]:
    """Lowercased word tokens of a caption."""
    return _WORD.findall(text.lower())


def build_vocab(captions: Iterable[str]) -> list[str]:
    """PAD, UNK, then every word of the captions in sorted order (deterministic)."""
    seen = sorted({w for c in captions for w in words(c)})
    return [PAD, UNK] + seen


class TextTable(torch.nn.Module):
    """Token ids [B,T] -> context [B,T,dim]: word embedding plus position embedding, then LayerNorm."""

    def __init__(self, vocab: Sequence[str], tokens: int = 8, dim: int = 64):
        super().__init__()
        self.vocab = list(vocab)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.tokens, self.dim = tokens, dim
        self.embed = torch.nn.Embedding(len(self.vocab), dim)
        self.pos = torch.nn.Parameter(torch.zeros(tokens, dim))
        self.norm = torch.nn.LayerNorm(dim)
        with torch.no_grad():
            self.embed.weight.normal_(0.0, 1.0)
            self.pos.normal_(0.0, 0.1)

    def ids(self, text: str) -> list[int]:
        """A caption as exactly `tokens` ids (truncated or PAD-padded)."""
        unk = self.index[UNK]
        out = [self.index.get(w, unk) for w in words(text)][: self.tokens]
        return out + [self.index[PAD]] * (self.tokens - len(out))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.norm(self.embed(ids) + self.pos[None])

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        ids = torch.tensor([self.ids(t) for t in texts], dtype=torch.long, device=self.pos.device)
        return self.forward(ids)


class ToyCLIP:
    """Duck type of the host's CLIP as CLIPTextEncode uses it: tokenize(), then encode_from_tokens() (the
    2024 fork) or encode_from_tokens_scheduled() (upstream since late 2024)."""

    def __init__(self, table: TextTable):
        self.table = table.eval()

    @property
    def context_dim(self) -> int:
        return self.table.dim

    def clone(self) -> "ToyCLIP":
        return ToyCLIP(self.table)

    def tokenize(self, text: str, return_word_ids: bool = False, **kwargs) -> list[int]:
        return self.table.ids(text)

    def encode_from_tokens(self, tokens: list[int], return_pooled: bool | str = False, return_dict: bool = False):
        with torch.no_grad(), torch.inference_mode(False):
            cond = self.table(torch.tensor([tokens], dtype=torch.long)).detach().clone()
        pooled = cond.mean(1)
        if return_dict:
            return {"cond": cond, "pooled_output": pooled}
        return (cond, pooled) if return_pooled else cond

    def encode_from_tokens_scheduled(
        self, tokens: list[int], unprojected: bool = False, add_dict: dict | None = None, show_pbar: bool = True
    ) -> list:
        """A CONDITIONING list with one [cond, {"pooled_output": ...}] entry (no hooks, so no schedule)."""
        out = self.encode_from_tokens(tokens, return_pooled=True, return_dict=True)
        cond = out.pop("cond")
        out.update(add_dict or {})
        return [[cond, out]]

    # -- GenzIQA's learned prompt context (guidance/genziqa/host.py, training/genziqa/prompts.py) ---------
    CONTEXT_KEY = "toy"  # the file's context tensor: genziqa.ctx.toy

    def context_encoders(self) -> dict[str, int]:
        """The context vectors this encoder takes: {key: width}."""
        return {self.CONTEXT_KEY: self.table.dim}

    def encode_with_context(self, text: str, context) -> tuple[torch.Tensor, torch.Tensor]:
        """[1, n + tokens, dim] features: the n context vectors through the table's LayerNorm (the table's
        embeddings without a position), then the table's features of `text`; and the pooled mean. The
        word-table analogue of CoOp's "X X ... X <words>": the vectors are extra key/value tokens, the words
        keep their own positions. Differentiable in the vectors (training); the table stays frozen."""
        ctx = context.get(self.CONTEXT_KEY)
        if ctx is None or ctx.ndim != 2 or ctx.shape[1] != self.table.dim:
            got = {k: list(v.shape) for k, v in context.items()}
            raise ValueError(
                f"The toy text encoder takes context vectors '{self.CONTEXT_KEY}' [n, {self.table.dim}]; got {got}. "
                "Use a GenzIQA file made for the toy model."
            )
        with torch.inference_mode(False):
            with torch.no_grad():
                words = self.table(torch.tensor([self.table.ids(text)], dtype=torch.long)).detach().clone()
            norm = self.table.norm
            weight, bias = norm.weight.detach(), norm.bias.detach()
            vectors = torch.nn.functional.layer_norm(ctx.to(words.dtype), (ctx.shape[1],), weight, bias, norm.eps)[None]
            cond = torch.cat([vectors, words], 1)
        return cond, cond.mean(1)

    def load_model(self):
        return None

    def get_sd(self) -> dict:
        return self.table.state_dict()
