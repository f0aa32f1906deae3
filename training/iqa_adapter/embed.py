"""`embed`: every image's reference embedding, computed once, for training a reference adapter.

    python -m training embed --data SRC --spec topiq_nr_resnet50_meanstd --resolution 512 --out emb.parquet
    accelerate launch --multi_gpu --num_processes 4 -m training embed ...   (each process embeds its share)

A reference adapter learns to draw an image from its own embedding, so the embedding of each training image
must be exactly what Reference Quality Transfer computes from a reference at inference. It is: the image is
prepared as `train` prepares it (shorter side to --resolution, center crop), then handed as a host IMAGE to
guidance.reference_embedding.embed_reference, the node's own function (the spec's resize, normalisation,
taps and pooling). Computing it once here, not in every epoch, keeps the IQA network out of training.

Processes, parts and resuming work as in `score` (training/iqa_adapter/score.py): OUT.parts/ holds small
Parquet files written atomically; a rerun skips the keys already saved; process 0 merges them into OUT.

OUT (Parquet): `key` (image id, as `score` and `train` name it) and `embedding` (a list of spec.dim float32),
sorted by key. Its schema metadata holds the spec (JSON) and the resolution; `train --kind reference` reads
both, so the adapter carries the spec it was trained with.

Which network runs: the pack's IQA model of the spec's metric, with weights from --iqa-dir or pyiqa's cache,
never downloaded. A plug-in (--plugin MODULE) may register another builder for a metric with
register_embedding_model, e.g. a network with weights of its own.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from training.common.base_formats import import_plugins
from training.common.datasets import SPLITS, Dataset, open_dataset
from training.common.errors import TrainingError

log = logging.getLogger(__name__)

PARTS_FORMAT = "iqa-embedding-parts/1"
FILE_FORMAT = "iqa-embeddings/1"
META_PREFIX = "iqa_embed."
CRASH_ENV = "TRAINING_EMBED_CRASH_AFTER"  # test hook: a process dies (os._exit) once it has saved this many images

# metric name -> build(iqa_dirs, device) -> IQAModel; plug-ins add theirs (see the module docstring)
_BUILDERS: dict[str, Callable[[Sequence[Path], Any], Any]] = {}


def register_embedding_model(metric: str, build: Callable[[Sequence[Path], Any], Any]) -> None:
    """Let a plug-in supply the IQA model that embeds for `metric` (instead of the pack's weight files)."""
    _BUILDERS[metric] = build


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="image folder, a .tar, a folder of .tar shards, or a brace pattern")
    p.add_argument("--data-kind", choices=("auto", "folder", "shards"), default="auto")
    p.add_argument(
        "--spec",
        default="topiq_nr_resnet50_meanstd",
        help="embedding spec: a name in weights/embedding_specs.json or a JSON file (default: the pack's default)",
    )
    p.add_argument("--out", type=Path, required=True, help="the Parquet file to write (parts go to OUT.parts/)")
    p.add_argument(
        "--resolution", type=int, default=512, help="prepare images as train does at this --resolution (default 512)"
    )
    p.add_argument("--batch", type=int, default=8, help="images per network call")
    p.add_argument("--device", default=None, help="torch device (default: this process's accelerate device)")
    p.add_argument("--iqa-dir", action="append", type=Path, default=[], help="folder with IQA weight files")
    p.add_argument("--part-size", type=int, default=256, help="images per saved part (what a crash can lose at most)")
    p.add_argument("--split", choices=SPLITS, default="auto", help="how shards are divided among processes")
    p.add_argument(
        "--plugin", action="append", default=[], metavar="MODULE", help="import MODULE first (it may register models)"
    )


# -- the spec ------------------------------------------------------------------------------------------------------
def resolve_spec(text: str) -> tuple[Any, dict]:
    """--spec NAME or FILE -> (EmbeddingSpec, its full field dict, the form export writes into the adapter)."""
    from adapter.embedding_spec import known_specs, spec_from_dict
    from adapter.errors import IQAAdapterError

    if text in known_specs():
        obj, where = {"spec": text}, f"weights/embedding_specs.json ('{text}')"
    elif Path(text).is_file():
        where = text
        try:
            obj = json.loads(Path(text).read_text())
        except ValueError as e:
            raise TrainingError(f"--spec {text} is not valid JSON ({e}). Fix the file.") from None
        if isinstance(obj, dict) and isinstance(obj.get("embedding"), dict):
            obj = obj["embedding"]  # an adapter's metadata or sidecar JSON
        if not isinstance(obj, dict):
            raise TrainingError(f"--spec {text} must hold a JSON object (the embedding spec's fields).")
    else:
        raise TrainingError(
            f"--spec {text!r} is neither a known spec ({', '.join(sorted(known_specs()))}) nor a JSON file. "
            "Give a name from weights/embedding_specs.json or the path of a spec file (docs/nodes.md, the embedding spec)."
        )
    try:
        spec = spec_from_dict(obj, where)
    except IQAAdapterError as e:
        raise TrainingError(str(e)) from None
    return spec, spec_dict(spec)


def spec_dict(spec: Any) -> dict:
    """Every field of a spec, so that the file that carries it needs no lookup in weights/embedding_specs.json."""
    return {
        "name": spec.name,
        "metric": spec.metric,
        "taps": list(spec.taps),
        "channels": list(spec.channels),
        "pooling": spec.pooling,
        "resolution": spec.resolution,
        "normalize": spec.normalize,
    }


# -- the network -----------------------------------------------------------------------------------------------------
def build_model(metric: str, iqa_dirs: Sequence[Path], device: Any) -> Any:
    """The IQA model of the spec's metric: a plug-in's, else the pack's (weight files only, never downloaded)."""
    if metric in _BUILDERS:
        return _BUILDERS[metric](iqa_dirs, device)
    from training.iqa_adapter.score import build_metric

    return build_metric(metric, iqa_dirs, device, command="embed")


def embed_images(model: Any, images: Any, spec: Any, where: str) -> np.ndarray:
    """[B, H, W, 3] images in [0, 1] -> [B, dim] float32, through the node's own embedding function."""
    from adapter.errors import IQAAdapterError
    from training.common.core import guidance

    try:
        return guidance("reference_embedding").embed_reference(model, images, spec).numpy().astype(np.float32)
    except IQAAdapterError as e:
        raise TrainingError(
            f"The embedding spec {where} does not fit its network: {e} Fix the spec's taps or channels "
            "(module paths of the metric's network, e.g. semantic_model.layer1)."
        ) from None


# -- run -----------------------------------------------------------------------------------------------------------
def run(args: argparse.Namespace) -> int:
    from training.iqa_adapter import score

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name, value, low in (
        ("--resolution", args.resolution, 32),
        ("--batch", args.batch, 1),
        ("--part-size", args.part_size, 1),
    ):
        if value < low:
            raise TrainingError(f"{name} must be at least {low}, got {value}.")
    import_plugins(args.plugin)
    spec, fields = resolve_spec(args.spec)
    dataset = open_dataset(str(args.data), kind=args.data_kind, split=args.split)
    dataset.check_not_empty()
    out: Path = args.out
    parts = score.parts_dir(out)
    meta = {"format": PARTS_FORMAT, "spec": fields, "resolution": args.resolution, "data": str(args.data)}
    score.check_parts_meta(parts, meta, ("spec", "resolution"), "embedded")  # another spec would mix two embeddings
    ctx = score._rank_info(args.device)
    if ctx.main:
        parts.mkdir(parents=True, exist_ok=True)
        score._atomic_write(parts / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
    ctx.wait()
    done = score._done_keys(parts)
    model = build_model(spec.metric, args.iqa_dir, ctx.device)
    count = _embed_share(dataset, model, spec, ctx, done, parts, args)
    log.info("process %d/%d: embedded %d image(s), %d already done", ctx.rank, ctx.world, count, len(done))
    ctx.wait()
    if ctx.main:
        merge(parts, out, fields, args.resolution)
    return 0


def _batches(samples: Iterator[Any], done: set[str], size: int, resolution: int) -> Iterator[list]:
    """(key, image [H, W, 3]) lists of at most `size`, skipping the keys already saved."""
    from training.iqa_adapter.batches import prepare_image

    cur: list = []
    for s in samples:
        if s.key in done:
            continue
        cur.append((s.key, prepare_image(s.image, resolution)))
        if len(cur) == size:
            yield cur
            cur = []
    if cur:
        yield cur


def _embed_share(dataset: Dataset, model: Any, spec: Any, ctx: Any, done: set[str], parts: Path, args: Any) -> int:
    import torch

    writer = _PartWriter(parts, ctx.rank, args.part_size, int(os.environ.get(CRASH_ENV, "0") or 0))
    count = 0
    try:
        for group in _batches(dataset.samples(ctx.rank, ctx.world), done, args.batch, args.resolution):
            images = torch.stack([img for _, img in group]).to(ctx.device)
            vectors = embed_images(model.with_device(ctx.device), images, spec, args.spec)
            for (key, _), row in zip(group, vectors):
                if not np.isfinite(row).all():
                    raise TrainingError(f"The embedding of image '{key}' is not finite. Check the image and the spec.")
                writer.add(key, row)
                count += 1
    finally:
        writer.flush()  # what was embedded before an error is kept
    return count


class _PartWriter:
    """Saves (key, embedding) rows as part-<rank>-<seq>.parquet every part_size rows, atomically."""

    def __init__(self, parts: Path, rank: int, part_size: int, crash_after: int = 0):
        self.parts, self.rank, self.part_size, self.crash_after = parts, rank, part_size, crash_after
        mine = [int(f.stem.split("-")[2]) for f in parts.glob(f"part-{rank:05d}-*.parquet")]
        self.seq = max(mine, default=-1) + 1
        self.keys: list[str] = []
        self.rows: list[np.ndarray] = []
        self.saved = 0

    def add(self, key: str, row: np.ndarray) -> None:
        self.keys.append(key)
        self.rows.append(row)
        if len(self.keys) >= self.part_size:
            self.flush()

    def flush(self) -> None:
        if not self.keys:
            return
        from training.iqa_adapter.score import _write_parquet

        _write_parquet(
            self.parts / f"part-{self.rank:05d}-{self.seq:06d}.parquet", embedding_table(self.keys, self.rows)
        )
        self.seq += 1
        self.saved += len(self.keys)
        self.keys, self.rows = [], []
        if self.crash_after and self.saved >= self.crash_after:
            log.warning("%s=%d: process %d exits now (simulated crash)", CRASH_ENV, self.crash_after, self.rank)
            os._exit(75)


def embedding_table(keys: Sequence[str], rows: Sequence[np.ndarray]) -> Any:
    import pyarrow as pa

    dim = len(rows[0])
    flat = pa.array(np.concatenate(rows).astype(np.float32), pa.float32())
    return pa.table(
        {"key": pa.array(list(keys), pa.string()), "embedding": pa.FixedSizeListArray.from_arrays(flat, dim)}
    )


def merge(parts: Path, out: Path, fields: dict, resolution: int) -> None:
    """Parts -> OUT, sorted by key, with the spec and resolution in the schema metadata; a key twice is an error."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from training.iqa_adapter.score import _part_files, _read_part

    tables = [_read_part(f).select(["key", "embedding"]) for f in _part_files(parts)]
    if not tables:
        raise TrainingError(f"Nothing was embedded into {parts}. Check --data.")
    table = pa.concat_tables(tables).sort_by("key")
    if pc.count_distinct(table.column("key")).as_py() != table.num_rows:
        raise TrainingError(
            f"Some keys occur more than once in {parts} (two images with the same id). Give every image a "
            f"unique name, then delete {parts} and embed again."
        )
    write_embeddings(out, table, fields, resolution)


def write_embeddings(out: Path, table: Any, fields: dict, resolution: int) -> None:
    """A key/embedding table -> OUT with the spec and resolution in its schema metadata (what train reads)."""
    from training.iqa_adapter.score import _write_parquet

    meta = {"format": FILE_FORMAT, "spec": json.dumps(fields), "resolution": str(resolution)}
    table = table.replace_schema_metadata({META_PREFIX + k: v for k, v in meta.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_parquet(out, table)
    log.info("wrote %s (%d images, %d values each)", out, table.num_rows, len(table.column("embedding")[0]))


# -- reading (for train) -------------------------------------------------------------------------------------------
def read_embeddings(path: Path) -> tuple[dict[str, np.ndarray], dict, Optional[int]]:
    """key -> float32 embedding, the spec fields and the resolution the file was made with."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"The embeddings file {path} does not exist. Make it with `python -m training embed`.")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise TrainingError(f"Cannot read the embeddings file {path} ({e}). Give the file that embed wrote.") from None
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    if meta.get(META_PREFIX + "format") != FILE_FORMAT or not {"key", "embedding"} <= set(table.column_names):
        raise TrainingError(
            f"{path} is not an embeddings file of `python -m training embed` (no key/embedding columns or "
            "spec in its metadata). Make it with `python -m training embed`."
        )
    keys = [str(k) for k in table.column("key").to_pylist()]
    values = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
    resolution = meta.get(META_PREFIX + "resolution")
    return dict(zip(keys, values)), json.loads(meta[META_PREFIX + "spec"]), int(resolution) if resolution else None


def check_covered(keys: Sequence[str], embeddings: dict, path: Path) -> None:
    """Every training image needs its embedding: name how many and which are missing, and the fix."""
    missing = [k for k in keys if k not in embeddings]
    if missing:
        shown = ", ".join(repr(k) for k in missing[:5])
        raise TrainingError(
            f"{len(missing)} of {len(keys)} training images have no embedding in {path} (e.g. {shown}). "
            "Run `python -m training embed` again on the same --data and --out (it embeds only what is "
            "missing), or remove those images."
        )
