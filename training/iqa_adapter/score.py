"""`score`: score a dataset with pyiqa metrics into one Parquet file and the dataset's normalisation table.

    python -m training score --data SRC --metrics piqe niqe --out scores.parquet [--size 512] [--batch 8]
    accelerate launch --num_processes 4 -m training score --data 'cc3m/{00000..00575}.tar' --metrics topiq_nr laion_aes --out cc3m.parquet

Images are prepared as the CC3M table's were: decoded to RGB, resized to --size x --size (512 by default;
PIL bicubic with antialiasing), float in [0, 1], then handed to the metric, which applies its own
normalisation and resizing. `--size 0` scores at native size (the toy world does: its patches already have
the size the model is trained at); images of different sizes then go in separate batches.

Metrics are built by the pack's own guidance.iqa_models (same registry, same weight lookup: --iqa-dir
folders, then pyiqa's cache). Nothing is ever downloaded: a missing weight file is an error that says which
file to put where.

Outputs:
- OUT (Parquet): column `key` (image id: the relative path without extension, or the webdataset __key__),
  then one float64 column per metric with the raw score, then `<metric>_z`: the z-score over this dataset,
  (raw - mean) / std with the population std (ddof 0), so that the table's mean and std turn a raw score into
  exactly the stored z. (The official feather named these `<metric>_normalized`.) Rows are sorted by key.
- TABLE (default OUT with suffix .norm.json): the pack's norm-table format (adapter/norm_table.py,
  "iqa-adapter-norm-table/1", as weights/cc3m_norm_stats.json): per metric mean, std, min, max and
  percentiles "1".."99" (numpy's linear interpolation) of the raw scores under "metrics", and the same
  statistics of the z-scores under "z_metrics" (NormTable.from_json reads "metrics" and ignores the rest).
- With --skip-bad, OUT with suffix .skipped.jsonl lists the images that failed (key, source, error).

Processes (`accelerate launch`; plain python is one process): process r scores its share of the dataset's
global order (training/common/datasets.py: whole shards or every world-th item), so across all processes each
image is scored exactly once. Work is saved as it goes in OUT.parts/: each process writes
part-<rank>-<seq>.parquet files of --part-size images (or whatever was scored in 5 minutes, if less), each
written to a temporary name, synced, then renamed, so a crash or a kill loses at most the images of the part
being filled and never damages a finished part.
A rerun (with any number of processes) skips every key already in a part. When every process is done,
process 0 merges the parts into OUT and writes TABLE, each also through a temporary file and a rename.
OUT.parts/ is kept (a later rerun then has nothing to do); delete it once OUT is there.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

import numpy as np

from training.common.datasets import SPLITS, Dataset, Sample, open_dataset
from training.common.errors import TrainingError
from training.common.norm_tables import TABLE_FORMAT, describe

log = logging.getLogger(__name__)

Z_SUFFIX = "_z"
PARTS_FORMAT = "iqa-score-parts/1"
CRASH_ENV = "TRAINING_SCORE_CRASH_AFTER"  # test hook: a process dies (os._exit) once it has saved this many images


def z_column(metric: str) -> str:
    """The name of a metric's z-score column in the scores file."""
    return f"{metric}{Z_SUFFIX}"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        help="an image folder (captions optional for scoring), a .tar, a folder of "
        ".tar shards, or a pattern such as 'data/{00000..00009}.tar'",
    )
    p.add_argument(
        "--data-kind", choices=("auto", "folder", "shards"), default="auto", help="how to read --data (default: guess)"
    )
    p.add_argument("--metrics", nargs="+", required=True, help="pyiqa metric names, e.g. topiq_nr laion_aes piqe niqe")
    p.add_argument("--out", type=Path, required=True, help="the Parquet file to write (its parts go to OUT.parts/)")
    p.add_argument(
        "--table",
        type=Path,
        default=None,
        help="the normalisation table to write (default: OUT with suffix .norm.json)",
    )
    p.add_argument(
        "--size",
        type=int,
        default=512,
        help="resize every image to SIZE x SIZE before scoring (512: as the CC3M table; 0: native size)",
    )
    p.add_argument("--batch", type=int, default=8, help="images per metric call")
    p.add_argument("--device", default=None, help="torch device (default: this process's accelerate device)")
    p.add_argument(
        "--iqa-dir",
        action="append",
        type=Path,
        default=[],
        help="folder with IQA weight files (searched before pyiqa's cache; repeatable)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="record images that fail to decode or score NaN in "
        "OUT.skipped.jsonl and go on (default: stop with an error naming the image)",
    )
    p.add_argument("--part-size", type=int, default=256, help="images per saved part (what a crash can lose at most)")
    p.add_argument(
        "--split",
        choices=SPLITS,
        default="auto",
        help="how shards are divided among processes (see training/common/datasets.py)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


# -- paths and files ---------------------------------------------------------------------------------------------
def parts_dir(out: Path) -> Path:
    return out.with_name(out.name + ".parts")


def default_table_path(out: Path) -> Path:
    return out.with_suffix(".norm.json")


def skipped_path(out: Path) -> Path:
    return out.with_suffix(".skipped.jsonl")


def _atomic_write(path: Path, write: Any) -> None:
    """write(file) into a hidden temporary beside `path`, fsync, then rename over it: readers see old or new."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _write_parquet(path: Path, table: Any) -> None:
    import pyarrow.parquet as pq

    _atomic_write(path, lambda f: pq.write_table(table, f))


def _part_files(parts: Path) -> list[Path]:
    return sorted(parts.glob("part-*.parquet"))


# -- run ---------------------------------------------------------------------------------------------------------
@dataclass
class _Bad:
    key: str
    source: str
    error: str


@dataclass
class _Rank:
    rank: int
    world: int
    main: bool
    device: Any
    wait: Any  # barrier


def _rank_info(device: Optional[str]) -> _Rank:
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    # cpu=True is what makes accelerate join CPU processes with gloo (under `accelerate launch --multi_gpu` or
    # torchrun on a machine without GPUs); without it each CPU process would think it is alone.
    cpu = device == "cpu" or parse_flag_from_env("ACCELERATE_USE_CPU") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    dev = torch.device(device) if device else state.device
    return _Rank(state.process_index, state.num_processes, state.is_main_process, dev, state.wait_for_everyone)


def run(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for name, value, low in (("--size", args.size, 0), ("--batch", args.batch, 1), ("--part-size", args.part_size, 1)):
        if value < low:
            raise TrainingError(f"{name} must be at least {low}, got {value}.")
    metrics = resolve_metrics(args.metrics, args.size)
    dataset = open_dataset(str(args.data), kind=args.data_kind, split=args.split)
    dataset.check_not_empty()
    out: Path = args.out
    table_path: Path = args.table or default_table_path(out)
    parts = parts_dir(out)
    meta = {"format": PARTS_FORMAT, "metrics": metrics, "size": args.size, "data": str(args.data)}
    # every process checks before any waits, so a mismatch stops them all alike
    saved = check_parts_meta(parts, meta, ("metrics", "size"), "scored")
    if saved and saved.get("data") != meta["data"]:
        log.warning("resuming parts made from --data %s with --data %s", saved.get("data"), meta["data"])
    ctx = _rank_info(args.device)
    if ctx.main:
        parts.mkdir(parents=True, exist_ok=True)
        _atomic_write(parts / "meta.json", lambda f: f.write(json.dumps(meta, indent=1).encode()))
        for old in parts.glob("skipped-*.jsonl"):  # bad images are tried again on every run
            old.unlink()
    ctx.wait()
    done = _done_keys(parts)
    models = [build_metric(m, args.iqa_dir, ctx.device) for m in metrics]
    scored, bad = _score_share(dataset, models, metrics, ctx, done, parts, args)
    if bad:
        lines = "".join(json.dumps(b.__dict__) + "\n" for b in bad)
        _atomic_write(parts / f"skipped-{ctx.rank:05d}.jsonl", lambda f: f.write(lines.encode()))
    log.info(
        "process %d/%d: scored %d image(s), %d already done, %d skipped as bad",
        ctx.rank,
        ctx.world,
        scored,
        len(done),
        len(bad),
    )
    ctx.wait()
    if ctx.main:
        merge(parts, out, table_path, metrics, args.size, str(args.data))
    return 0


def resolve_metrics(names: Sequence[str], size: int) -> list[str]:
    """Canonical pyiqa names; an unknown name lists the known ones; a size below a metric's minimum is an error."""
    from adapter.errors import IQAAdapterError

    specs = []
    for n in names:
        try:
            specs.append(_metric_specs().get_spec(n))
        except IQAAdapterError as e:
            raise TrainingError(str(e)) from None
    seen: set[str] = set()
    for s in specs:
        if s.name in seen:
            raise TrainingError(f"--metrics names '{s.name}' twice; give each metric once.")
        seen.add(s.name)
        if size and size < s.min_side:
            raise TrainingError(
                f"--size {size} is too small for '{s.name}', which needs at least {s.min_side} px. Use a larger --size."
            )
    return [s.name for s in specs]


def _metric_specs():
    from training.common.core import guidance

    return guidance("metric_specs")


def build_metric(name: str, iqa_dirs: Sequence[Path], device: Any, command: str = "score"):
    """The pack's IQAModel for `name` on `device`: weights from iqa_dirs or pyiqa's cache, never downloaded."""
    from adapter.errors import IQAAdapterError
    from training.common.core import guidance

    iqa, weights = guidance("iqa_models"), guidance("weights")
    try:
        return iqa.build_iqa_model(name, search_dirs=[str(d) for d in iqa_dirs], allow_download=False, home=device)
    except weights.MissingWeightsError as e:
        where = str(iqa_dirs[0]) if iqa_dirs else weights.pyiqa_cache_dir()
        raise TrainingError(
            f"IQA metric '{name}' needs the weight file '{e.file_name}', which is not on this machine, and {command} never "
            f"downloads. Put the file at {os.path.join(where, e.file_name)} (or in any folder passed with --iqa-dir). "
            f"It comes from {e.url} ."
        ) from None
    except IQAAdapterError as e:
        raise TrainingError(str(e)) from None


def check_parts_meta(parts: Path, meta: dict, keys: Sequence[str], made: str) -> dict:
    """Refuse saved parts made with other `keys` (named after their options): one file must not mix two runs.

    `made` says how the parts were made ("scored", "embedded"). Returns the saved meta ({} when there is none).
    """
    f = parts / "meta.json"
    if not f.is_file():
        return {}
    try:
        old = json.loads(f.read_text())
    except ValueError as e:
        raise TrainingError(f"{f} is unreadable ({e}). Delete the folder {parts} to start over.") from None
    for k in keys:
        if old.get(k) != meta[k]:
            flags = "/".join(f"--{name}" for name in keys)
            raise TrainingError(
                f"The saved parts in {parts} were {made} with {k} {old.get(k)!r}, this run asks for {meta[k]!r}. Run "
                f"with the same {flags} to resume, or delete {parts} (or choose another --out) to start over."
            )
    return old


def _done_keys(parts: Path) -> set[str]:
    import pyarrow.parquet as pq

    done: set[str] = set()
    for f in _part_files(parts):
        try:
            done.update(pq.read_table(f, columns=["key"]).column("key").to_pylist())
        except Exception as e:  # noqa: BLE001 - a part written by hand or by another tool
            raise TrainingError(
                f"The saved part {f} is unreadable ({type(e).__name__}: {e}). Delete it; its images "
                "are scored again on the next run."
            ) from None
    return done


# -- scoring one process's share ----------------------------------------------------------------------------------
@dataclass
class _Item:
    sample: Sample
    pixels: Any = None  # uint8 HxWx3 numpy array, or None when bad
    error: str = ""


def prepare(image: Any, size: int) -> np.ndarray:
    """A PIL RGB image as the uint8 HxWx3 array the metrics get (resized to size x size unless size is 0)."""
    from PIL import Image

    if size and image.size != (size, size):
        image = image.resize((size, size), Image.BICUBIC)
    return np.asarray(image, dtype=np.uint8)


def _prepared(samples: Iterator[Sample], done: set[str], size: int, bar: Any) -> Iterator[_Item]:
    for s in samples:
        if s.key in done:
            bar.update(1)  # tqdm is thread-safe
            continue
        try:
            yield _Item(s, prepare(s.image, size))
        except TrainingError as e:
            yield _Item(s, None, str(e))


def prefetch(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run the iterator in a background thread (decoding and resizing overlap scoring; PIL releases the GIL)."""
    q: "queue.Queue[tuple[str, Any]]" = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()

    def work() -> None:
        try:
            for it in items:
                if stop.is_set():
                    return
                q.put(("item", it))
            q.put(("end", None))
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            q.put(("error", e))

    t = threading.Thread(target=work, name="score-prefetch", daemon=True)
    t.start()
    try:
        while True:
            kind, value = q.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        stop.set()
        while t.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                t.join(0.05)


def _batches(items: Iterator[_Item], batch: int) -> Iterator[list[_Item]]:
    """Consecutive items of one shape, at most `batch` at a time; a bad item comes alone."""
    cur: list[_Item] = []
    for it in items:
        if it.pixels is None:
            if cur:
                yield cur
                cur = []
            yield [it]
            continue
        if cur and (len(cur) == batch or cur[0].pixels.shape != it.pixels.shape):
            yield cur
            cur = []
        cur.append(it)
    if cur:
        yield cur


@dataclass
class _PartWriter:
    parts: Path
    rank: int
    metrics: list[str]
    part_size: int
    crash_after: int = 0
    max_seconds: float = 300.0  # also save a part this often, so slow metrics lose at most this much work
    keys: list[str] = field(default_factory=list)
    values: list[list[float]] = field(default_factory=list)
    seq: int = 0
    saved: int = 0

    def __post_init__(self) -> None:
        mine = [int(f.stem.split("-")[2]) for f in self.parts.glob(f"part-{self.rank:05d}-*.parquet")]
        self.seq = max(mine, default=-1) + 1
        self.last = time.monotonic()

    def add(self, key: str, row: list[float]) -> None:
        self.keys.append(key)
        self.values.append(row)
        if len(self.keys) >= self.part_size or time.monotonic() - self.last >= self.max_seconds:
            self.flush()

    def flush(self) -> None:
        if not self.keys:
            return
        import pyarrow as pa

        cols = {"key": pa.array(self.keys, pa.string())}
        arr = np.asarray(self.values, dtype=np.float64).reshape(len(self.keys), len(self.metrics))
        for j, m in enumerate(self.metrics):
            cols[m] = pa.array(arr[:, j], pa.float64())
        _write_parquet(self.parts / f"part-{self.rank:05d}-{self.seq:06d}.parquet", pa.table(cols))
        self.seq += 1
        self.last = time.monotonic()
        self.saved += len(self.keys)
        self.keys, self.values = [], []
        if self.crash_after and self.saved >= self.crash_after:
            log.warning("%s=%d: process %d exits now (simulated crash)", CRASH_ENV, self.crash_after, self.rank)
            os._exit(75)


def _metric_scores(model: Any, x: Any) -> np.ndarray:
    """One raw score per image from the pack's IQAModel, without IQAModel.score's input conversion: x is
    uint8 / 255, so already NCHW RGB, in [0, 1] and finite, and that conversion's clamp and finiteness scan
    cost ~9 % of PIQE's time at 512 px (measured here)."""
    import torch

    model.check_images(x)
    with model.on_device() as metric, torch.inference_mode():
        out = metric(x)
    out = torch.as_tensor(out[0] if isinstance(out, (tuple, list)) else out)
    if out.numel() != x.shape[0]:
        raise RuntimeError(f"metric '{model.name}' returned {out.numel()} values for {x.shape[0]} images")
    return out.reshape(-1).double().cpu().numpy()


def score_batch(models: list, metrics: list[str], x: Any) -> tuple[np.ndarray, list[str]]:
    """Raw scores [n, metrics] of a batch, and per image an error text ('' when every score is finite).

    A metric that raises on the batch is run image by image, so the error names the image that caused it."""
    n = x.shape[0]
    rows = np.full((n, len(models)), np.nan)
    errors = [[] for _ in range(n)]
    for j, (model, name) in enumerate(zip(models, metrics)):
        try:
            rows[:, j] = _metric_scores(model, x)
        except Exception:  # noqa: BLE001 - find the image(s) at fault
            for i in range(n):
                try:
                    rows[i, j] = float(_metric_scores(model, x[i : i + 1])[0])
                except Exception as e:  # noqa: BLE001
                    errors[i].append(f"metric '{name}' failed ({type(e).__name__}: {e})")
        for i in range(n):
            if not errors[i] and not math.isfinite(rows[i, j]):
                errors[i].append(f"metric '{name}' gave {rows[i, j]}")
    return rows, ["; ".join(e) for e in errors]


def _score_share(
    dataset: Dataset,
    models: list,
    metrics: list[str],
    ctx: _Rank,
    done: set[str],
    parts: Path,
    args: argparse.Namespace,
) -> tuple[int, list[_Bad]]:
    import torch
    from tqdm import tqdm

    show = ctx.main and not args.no_progress
    total = dataset.count() if show else None  # a folder's names only; shards are not counted (a full read)
    share = None if total is None else len(range(ctx.rank, total, ctx.world))
    bar = tqdm(total=share, unit="img", desc=f"score (process 0 of {ctx.world})", disable=not show, dynamic_ncols=True)
    writer = _PartWriter(parts, ctx.rank, metrics, args.part_size, int(os.environ.get(CRASH_ENV, "0") or 0))
    bad: list[_Bad] = []
    scored = 0
    items = prefetch(_prepared(dataset.samples(ctx.rank, ctx.world), done, args.size, bar), depth=2 * args.batch)
    try:
        for group in _batches(items, args.batch):
            if group[0].pixels is None:
                it = group[0]
                if not args.skip_bad:
                    raise TrainingError(it.error)
                log.warning("skipping %s: %s", it.sample.source, it.error)
                bad.append(_Bad(it.sample.key, it.sample.source, it.error))
                bar.update(1)
                continue
            x = torch.from_numpy(np.stack([it.pixels for it in group])).permute(0, 3, 1, 2)
            x = x.to(ctx.device, non_blocking=True).float().div_(255.0)
            scores, errors = score_batch(models, metrics, x)
            for it, row, err in zip(group, scores, errors):
                if err:
                    msg = (
                        f"Image {it.sample.source} (key '{it.sample.key}'): {err}. Such images (flat, tiny or broken) "
                        "have no defined score: remove the image, or pass --skip-bad to record it and go on."
                    )
                    if not args.skip_bad:
                        raise TrainingError(msg)
                    log.warning("skipping %s", msg)
                    bad.append(_Bad(it.sample.key, it.sample.source, msg))
                    continue
                writer.add(it.sample.key, [float(v) for v in row])
                scored += 1
            bar.update(len(group))
    finally:
        writer.flush()  # what was scored before an error is kept
        bar.close()
    return scored, bad


# -- merge -------------------------------------------------------------------------------------------------------
def merge(parts: Path, out: Path, table_path: Path, metrics: list[str], size: int, data: str) -> None:
    """Parts -> OUT (sorted by key, raw and z columns) and the norm table; the skipped list beside OUT."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyiqa

    files = _part_files(parts)
    tables = []
    for f in files:
        t = _read_part(f)
        missing = [m for m in metrics if m not in t.column_names]
        if missing:
            raise TrainingError(f"The saved part {f} lacks the column(s) {missing}. Delete {parts} to start over.")
        tables.append(t.select(["key", *metrics]))
    bad = [
        json.loads(line) for f in sorted(parts.glob("skipped-*.jsonl")) for line in f.read_text().splitlines() if line
    ]
    if bad:
        lines = "".join(json.dumps(b) + "\n" for b in bad)
        _atomic_write(skipped_path(out), lambda f: f.write(lines.encode()))
        log.warning("%d image(s) skipped as bad; listed in %s", len(bad), skipped_path(out))
    elif skipped_path(out).exists():
        skipped_path(out).unlink()
    if not tables or sum(t.num_rows for t in tables) == 0:
        raise TrainingError(
            f"No image of {data} could be scored ({len(bad)} bad; see {skipped_path(out)}). Check the images."
        )
    table = pa.concat_tables(tables).sort_by("key")
    keys = table.column("key")
    if pc.count_distinct(keys).as_py() != table.num_rows:
        vc = pc.value_counts(keys)
        dup = [d["values"] for d in vc.to_pylist() if d["counts"] > 1][:5]
        raise TrainingError(
            f"Key(s) {dup} occur more than once in {data} (two images or shard samples with the "
            f"same id). Give every image a unique name; then delete {parts} and score again."
        )
    lower = {m: bool(_metric_specs().get_spec(m).lower_better) for m in metrics}
    source = (
        f"python -m training score: pyiqa {pyiqa.__version__} scores of {table.num_rows} images of {data}, "
        f"{'resized to ' + str(size) + 'x' + str(size) if size else 'at native size'}, RGB in [0,1]."
    )
    write_scores(
        out, table_path, keys, {m: table.column(m) for m in metrics}, lower, source, size, {"pyiqa": pyiqa.__version__}
    )


def write_scores(
    out: Path,
    table_path: Path,
    keys: Any,
    raw: dict[str, Any],
    lower_better: dict[str, bool],
    source: str,
    size: int,
    info: Optional[dict[str, str]] = None,
) -> None:
    """The scores file (key, raw and z columns) and its norm table, from raw scores per metric in key order.
    `merge` writes pyiqa's scores with it; a model of one's own (the toy's quality net) writes the same files,
    with its own lower_better flags, so `train` and Quality Condition read them alike."""
    import pyarrow as pa

    keys = pa.array(keys) if not isinstance(keys, (pa.Array, pa.ChunkedArray)) else keys
    metrics = list(raw)
    stats, zstats, zcols = {}, {}, {}
    for m in metrics:
        values = np.asarray(raw[m], dtype=np.float64)
        mean, std = float(values.mean()), float(values.std())
        if not (std > 0 and math.isfinite(std)):
            raise TrainingError(
                f"Metric '{m}' gives the same score ({mean}) to all {values.size} scored image(s), so "
                "its z-scores are undefined. Score more (and more varied) images, or drop the metric."
            )
        z = (values - mean) / std
        lower = bool(lower_better[m])
        stats[m], zstats[m] = dict(describe(values), lower_better=lower), dict(describe(z), lower_better=lower)
        zcols[z_column(m)] = pa.array(z, pa.float64())
    n = len(keys)
    meta = {
        "metrics": " ".join(metrics),
        "image_size": str(size),
        **(info or {}),
        "z": "(raw - mean) / std over this file, population std (ddof 0)",
        "table": table_path.name,
    }
    final = pa.table({"key": keys, **{m: pa.array(np.asarray(raw[m], dtype=np.float64)) for m in metrics}, **zcols})
    final = final.replace_schema_metadata({f"iqa_score.{k}": v for k, v in meta.items()})
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_parquet(out, final)
    doc = {
        "format": TABLE_FORMAT,
        "source": source,
        "description": "Per-metric raw-score statistics. z = (raw - mean) / std (std with ddof 0). percentiles maps a "
        "percentile (0-100, as a string) to the raw score at that percentile (numpy linear "
        "interpolation); min and max stand for percentiles 0 and 100. lower_better (the metric's flag): "
        "lower raw scores are better, so a quality percentile p is the raw percentile 100 - p. "
        "z_metrics: the same statistics of the z-scores.",
        "count": n,
        "image_size": size,
        "metrics": stats,
        "z_metrics": zstats,
    }
    table_path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(table_path, lambda f: f.write((json.dumps(doc, indent=1) + "\n").encode()))
    log.info("wrote %s (%d images, %d metric(s)) and %s", out, n, len(metrics), table_path)


def _read_part(f: Path):
    import pyarrow.parquet as pq

    try:
        return pq.read_table(f)
    except Exception as e:  # noqa: BLE001
        raise TrainingError(
            f"The saved part {f} is unreadable ({type(e).__name__}: {e}). Delete it and run score "
            "again: its images are scored again."
        ) from None


# -- reading a scores file (for train) ------------------------------------------------------------------------------
def read_scores(path: Path, metrics: Sequence[str], *, z: bool = True) -> dict[str, np.ndarray]:
    """key -> float32 vector of the metrics, in the order given: the `<metric>_z` columns (z=True, what the
    adapter trains on) or the raw ones. Works on this command's output and on any Parquet/Feather file with
    a `key` column (or the official feather's `image_file`) and those columns. A missing file or column, a
    NaN, or a repeated key is an error naming the row."""
    import pyarrow as pa
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    path = Path(path)
    if not path.is_file():
        raise TrainingError(f"The scores file {path} does not exist. Make it with `python -m training score`.")
    try:
        table = feather.read_table(path) if path.suffix in (".feather", ".arrow") else pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise TrainingError(
            f"Cannot read the scores file {path} ({e}). Give the Parquet file that score wrote."
        ) from None
    key_col = "key" if "key" in table.column_names else "image_file" if "image_file" in table.column_names else None
    if key_col is None:
        raise TrainingError(f"The scores file {path} has no 'key' column (columns: {', '.join(table.column_names)}).")
    cols = [z_column(m) if z else m for m in metrics]
    if z and "key" not in table.column_names:  # the official feather: <metric>_normalized
        cols = [c if c in table.column_names else f"{m}_normalized" for c, m in zip(cols, metrics)]
    missing = [c for c in cols if c not in table.column_names]
    if missing:
        raise TrainingError(
            f"The scores file {path} lacks the column(s) {', '.join(missing)} (it has: "
            f"{', '.join(table.column_names)}). Score the dataset with these metrics "
            f"(score --metrics {' '.join(metrics)}), or train on the metrics it has."
        )
    keys = [str(k) for k in table.column(key_col).to_pylist()]
    values = np.stack([table.column(c).to_numpy(zero_copy_only=False).astype(np.float64) for c in cols], axis=1)
    bad = np.argwhere(~np.isfinite(values))
    if bad.size:
        i, j = bad[0]
        raise TrainingError(
            f"The scores file {path} holds {values[i, j]} in column '{cols[j]}' at row {i} (key "
            f"'{keys[i]}'){f' and {len(bad) - 1} more' if len(bad) > 1 else ''}. Score that image "
            "again, or remove its row."
        )
    out = dict(zip(keys, values.astype(np.float32)))
    if len(out) != len(keys):
        seen: set[str] = set()
        dup = next(k for k in keys if k in seen or seen.add(k))
        raise TrainingError(f"The scores file {path} has the key '{dup}' more than once. Give every image one row.")
    return out


def read_captions(path: Path, column: str) -> dict[str, str]:
    """key -> caption from a text column of a scores file (datasets.open_dataset(captions=...))."""
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    if column not in schema.names:
        raise TrainingError(
            f"The scores file {path} has no caption column '{column}' (columns: {', '.join(schema.names)})."
        )
    t = pq.read_table(path, columns=["key", column])
    return {str(k): c for k, c in zip(t.column("key").to_pylist(), t.column(column).to_pylist()) if c is not None}
