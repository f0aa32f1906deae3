"""What the tensors of an IQA-Adapter cannot say: which metrics, in what order, and how they were encoded.

Looked up in this order, the first source found wins:
  1. the safetensors header, key "iqa_adapter", a JSON object;
  2. a sidecar JSON beside the file: "<file name without extension>.json";
  3. the manifest of known files shipped in weights/known_adapters.json, keyed by file name.
A JSON override given on the Load IQA-Adapter node is then merged over it, field by field.
Every source is size-limited and validated; the encoded size must equal the checkpoint's input_dim.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

from .embedding_spec import EmbeddingSpec, check_spec_fits, spec_from_dict
from .encoding import encoded_dim
from .errors import IQAAdapterError
from .norm_table import NormTable

HEADER_KEY = "iqa_adapter"
TABLE_HEADER_KEY = "iqa_adapter_norm_table"  # the training set's normalisation table (python -m training export)
MAX_JSON_BYTES = 64 * 1024
MAX_TABLE_BYTES = 1024 * 1024
MANIFEST = Path(__file__).resolve().parent.parent / "weights" / "known_adapters.json"
KINDS = ("quality", "reference")
_EXAMPLE = 'e.g. {"metrics": ["topiq_nr", "laion_aes"], "use_flag": false, "pos_encode_L": 0}'
_FIELDS = {"kind", "metrics", "use_flag", "pos_encode_L", "normalized", "base_model", "embedding"}


@dataclass(frozen=True)
class AdapterMetadata:
    """Training options of an adapter that change its input vector."""

    metrics: tuple[str, ...] = ()
    use_flag: bool = False
    pos_encode_L: int = 0
    normalized: bool = True
    kind: str = "quality"
    base_model: str | None = None
    embedding: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    source: str = "unknown"

    @property
    def input_dim(self) -> int:
        return encoded_dim(len(self.metrics), self.use_flag, self.pos_encode_L)


class _RepeatedKey(ValueError):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json object_pairs_hook: an object, or _RepeatedKey for a key written twice (at any depth)."""
    obj: dict[str, Any] = {}
    for key, value in pairs:
        if key in obj:
            raise _RepeatedKey(key)
        obj[key] = value
    return obj


def parse_json_text(text: str, where: str) -> dict[str, Any]:
    """Parse a metadata JSON object with a size limit and a clear error."""
    if len(text.encode("utf-8", "replace")) > MAX_JSON_BYTES:
        raise IQAAdapterError(
            f"IQA-Adapter metadata in {where} is over {MAX_JSON_BYTES // 1024} KiB; it is not metadata. "
            f"Give a small JSON object instead (sidecar JSON or the node's metadata_override), {_EXAMPLE}."
        )
    try:
        obj = json.loads(text, object_pairs_hook=_unique_keys)
    except json.JSONDecodeError as exc:
        raise IQAAdapterError(f"IQA-Adapter metadata in {where} is not valid JSON: {exc}. Fix or remove it.") from None
    except _RepeatedKey as exc:
        raise IQAAdapterError(
            f"IQA-Adapter metadata in {where} writes the key '{exc.key}' twice; JSON would silently keep the last "
            f"one. Keep one '{exc.key}' and delete the other."
        ) from None
    if not isinstance(obj, dict):
        raise IQAAdapterError(
            f"IQA-Adapter metadata in {where} must be a JSON object, got {type(obj).__name__}. "
            f"Write one, {_EXAMPLE}, or remove it."
        )
    return obj


def metadata_from_dict(obj: Mapping[str, Any], where: str) -> AdapterMetadata:
    """Validate field names and types; metric names are checked later against the norm table."""
    unknown = set(obj) - _FIELDS - {"format", "comment", "source"}
    if unknown:
        raise IQAAdapterError(
            f"IQA-Adapter metadata in {where} has unknown fields {sorted(unknown)}; known: {sorted(_FIELDS)}."
        )
    metrics = obj.get("metrics", [])
    if isinstance(metrics, str):
        raise IQAAdapterError(
            f"IQA-Adapter metadata in {where}: 'metrics' is the text {metrics!r}; it must be a JSON list of pyiqa "
            'metric names in the adapter\'s training order, e.g. "metrics": ["topiq_nr", "laion_aes"].'
        )
    if not isinstance(metrics, list) or not all(isinstance(m, str) and m for m in metrics):
        raise IQAAdapterError(f"IQA-Adapter metadata in {where}: 'metrics' must be a list of pyiqa metric names.")
    repeated = sorted({m for m in metrics if metrics.count(m) > 1})
    if repeated:
        raise IQAAdapterError(
            f"IQA-Adapter metadata in {where}: 'metrics' names {', '.join(repeated)} more than once. "
            "List each metric once, in the adapter's training order."
        )
    kind = obj.get("kind", "quality")
    if kind not in KINDS:
        raise IQAAdapterError(f"IQA-Adapter metadata in {where}: 'kind' must be one of {KINDS}, got {kind!r}.")
    L = obj.get("pos_encode_L", 0)
    if isinstance(L, bool) or not isinstance(L, int) or not 0 <= L <= 32:
        raise IQAAdapterError(
            f"IQA-Adapter metadata in {where}: 'pos_encode_L' must be an integer 0-32 (0 = off), got {L!r}."
        )
    for flag in ("use_flag", "normalized"):
        if flag in obj and not isinstance(obj[flag], bool):
            raise IQAAdapterError(
                f"IQA-Adapter metadata in {where}: '{flag}' must be true or false, got {obj[flag]!r}."
            )
    emb = obj.get("embedding")
    if emb is not None and not isinstance(emb, dict):
        raise IQAAdapterError(f"IQA-Adapter metadata in {where}: 'embedding' must be a JSON object.")
    return AdapterMetadata(
        metrics=tuple(metrics),
        use_flag=bool(obj.get("use_flag", False)),
        pos_encode_L=L,
        normalized=bool(obj.get("normalized", True)),
        kind=kind,
        base_model=obj.get("base_model"),
        embedding=emb,
        source=where,
    )


def _header_text(path: Path, key: str) -> str | None:
    if path.suffix != ".safetensors":
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
    except Exception:
        return None  # unreadable files are reported by the checkpoint loader
    return header.get(key)


def _header_metadata(path: Path) -> dict[str, Any] | None:
    text = _header_text(path, HEADER_KEY)
    return None if text is None else parse_json_text(text, f"the safetensors header of {path.name}")


def header_norm_table(path: str | Path) -> NormTable | None:
    """The adapter's own normalisation table (its training set's), when its header carries one.

    Percentile targets on such an adapter refer to its own training distribution; files without one use
    the CC3M table of the paper."""
    path = Path(path)
    text = _header_text(path, TABLE_HEADER_KEY)
    if text is None:
        return None
    where = f"the safetensors header of {path.name} ({TABLE_HEADER_KEY})"
    if len(text.encode("utf-8", "replace")) > MAX_TABLE_BYTES:
        raise IQAAdapterError(
            f"{where} is over {MAX_TABLE_BYTES // 1024} KiB; it is not a normalisation table. "
            "Export the adapter again with `python -m training export`."
        )
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise IQAAdapterError(f"{where} is not valid JSON: {exc}. Export the adapter again.") from None
    if not isinstance(doc, dict):
        raise IQAAdapterError(f"{where} must be a JSON object. Export the adapter again.")
    return NormTable.from_dict(doc, where)


def _sidecar_metadata(path: Path) -> dict[str, Any] | None:
    side = path.with_suffix(".json")
    if not side.is_file():
        return None
    if side.stat().st_size > MAX_JSON_BYTES:
        raise IQAAdapterError(
            f"Sidecar {side.name} is over {MAX_JSON_BYTES // 1024} KiB; it is not IQA-Adapter metadata. "
            f"Replace it with a small JSON object, {_EXAMPLE}, or remove it."
        )
    return parse_json_text(side.read_text(encoding="utf-8", errors="replace"), f"sidecar {side.name}")


def _manifest_metadata(path: Path) -> dict[str, Any] | None:
    if not MANIFEST.is_file():
        return None
    files = json.loads(MANIFEST.read_text()).get("files", {})
    entry = files.get(path.name)
    return None if entry is None else dict(entry)


def resolve_metadata(path: str | Path, override: Mapping[str, Any] | None = None) -> AdapterMetadata:
    """Find an adapter's metadata (header, sidecar, manifest; first wins), then merge the override."""
    path = Path(path)
    found, where = None, None
    for getter, label in (
        (_header_metadata, f"the safetensors header of {path.name}"),
        (_sidecar_metadata, f"sidecar {path.with_suffix('.json').name}"),
        (_manifest_metadata, "weights/known_adapters.json"),
    ):
        found = getter(path)
        if found is not None:
            where = label
            break
    if found is None and not override:
        raise IQAAdapterError(
            f"No metadata for {path.name}: the file does not say which metrics it was trained on. Add a sidecar "
            f"'{path.with_suffix('.json').name}' beside it, {_EXAMPLE}, "
            "or paste that JSON into the node's metadata_override input."
        )
    merged = dict(found or {})
    merged.update(override or {})
    if override:
        where = f"{where} + metadata_override" if where else "metadata_override"
    return metadata_from_dict(merged, where or "metadata_override")


def _encoding_hint(d: int, input_dim: int) -> str:
    """What would fit input_dim: other flags for these d metrics, and another number of metrics."""
    settings = [(f, L) for f in (False, True) for L in (0, 10)]
    flags = lambda f, L: f"use_flag={str(f).lower()}, pos_encode_L={L}"  # noqa: E731
    hints = []
    same = [flags(f, L) for f, L in settings if encoded_dim(d, f, L) == input_dim]
    if same:
        hints.append(f"with {d} metrics, {' or '.join(same)} would fit")
    others = [(n, f, L) for f, L in settings for n in range(1, 33) if n != d and encoded_dim(n, f, L) == input_dim]
    if others:
        n, f, L = others[0]  # the plainest encoding first
        hints.append(
            f"{n} metrics with {flags(f, L)} would fit: check that 'metrics' lists every metric the adapter "
            "was trained on, in order"
        )
    return f" ({'; or '.join(hints)})." if hints else "."


def validate_metadata(meta: AdapterMetadata, input_dim: int, table: NormTable, name: str) -> Optional[EmbeddingSpec]:
    """Check the metadata against the checkpoint's input_dim and the known metrics; returns the embedding
    spec of a reference-based adapter (None for a score-based one)."""
    if meta.kind == "reference":
        if not meta.embedding:
            raise IQAAdapterError(
                f"{name}: a reference-based adapter needs an 'embedding' spec in its metadata ({meta.source}), e.g. "
                '{"kind": "reference", "embedding": {"spec": "topiq_nr_resnet50_meanstd"}}.'
            )
        embedding = spec_from_dict(meta.embedding, meta.source)
        check_spec_fits(embedding, input_dim, name)
        return embedding
    if not meta.metrics:
        raise IQAAdapterError(
            f"{name}: metadata ({meta.source}) lists no metrics. Give 'metrics' in the adapter's training order."
        )
    for m in meta.metrics:
        if m not in table:
            close = difflib.get_close_matches(m, table.names(), n=3)
            hint = f" Did you mean {', '.join(close)}?" if close else f" Known metrics: {', '.join(table.names())}."
            raise IQAAdapterError(f"{name}: unknown metric '{m}' in metadata ({meta.source}).{hint}")
    if meta.input_dim != input_dim:
        d = len(meta.metrics)
        hint = _encoding_hint(d, input_dim)
        raise IQAAdapterError(
            f"{name}: metadata ({meta.source}) encodes {d} metrics with use_flag={str(meta.use_flag).lower()}, "
            f"pos_encode_L={meta.pos_encode_L} into {meta.input_dim} values, but the checkpoint's projection "
            f"takes {input_dim}{hint} Fix the metadata (sidecar JSON or the node's override)."
        )
