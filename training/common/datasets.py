"""Streaming datasets for score and train: an image folder with caption sidecars, or webdataset `.tar` shards.

Nothing loads a whole dataset: a folder is walked one directory at a time, shards are read as tar streams
member by member, and an image is decoded only when `Sample.image` is read (so skipping a sample, to
resume or because another process owns it, costs no decode).

Global order (the same on every process, whatever the file system returns):
- image folder: a walk with each directory's entries sorted by name, a directory's images before its
  subdirectories; hidden names (starting with '.') are skipped; symlinked directories are not followed;
- shards: in the order given (a brace pattern expands in order, a folder's *.tar sorted by name), the
  members of each shard in the order they are stored.

Splitting across `world` processes, for exactly-once coverage (`split`):
- 'items': process `rank` takes the items whose global index i has i % world == rank. Exactly balanced and
  right for any number of shards; every process reads (but does not decode) every shard.
- 'shards': process `rank` takes the whole shards j with j % world == rank, so each shard is read by one
  process only (what CC3M-size data needs: ~1 TB read once, not once per GPU). Counts per process then
  differ by up to one shard.
- 'auto' (default): 'shards' when there are at least as many shards as processes, else 'items'; always
  'items' for a folder (a file that is not ours is never opened).
Either way every item goes to exactly one process.

Reading shards: plain `tarfile` streaming (no webdataset pipeline), so that every error can name the shard
and member, nothing is shuffled or decoded behind our back, and a sample that is not ours is skipped
without reading its bytes. The sample grouping is webdataset's: consecutive members whose names agree up to
the first '.' of the file name form one sample, whose `__key__` is that prefix (directory included); the
rest of the name is the field ('jpg', 'txt', 'json', ...). tests/training/test_training_score.py checks the keys
against the webdataset package's own reader.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import random
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Optional

from PIL import Image

from training.common.errors import TrainingError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
WDS_IMAGE_FIELDS = ("jpg", "jpeg", "png", "webp")  # webdataset fields read as the image, first present wins
WDS_JSON_CAPTION_KEYS = ("caption", "text")
SPLITS = ("auto", "items", "shards")
BAD_IMAGE_HELP = (
    "Delete or replace it (or re-encode it, e.g. with PIL), then run again; "
    "`score --skip-bad` records such images and goes on."
)


class Sample:
    """One dataset item. `image` (a PIL RGB image) is decoded on first access and kept; `caption` is the
    sidecar/txt/json caption, or the one from a captions mapping, or None."""

    __slots__ = ("key", "source", "_read", "_caption", "_image")

    def __init__(self, key: str, source: str, read: Callable[[], bytes], caption: Callable[[], Optional[str]]):
        self.key = key  # image id: relative path without extension (folder) or webdataset __key__
        self.source = source  # the file, or "shard.tar:member", for messages
        self._read = read
        self._caption = caption
        self._image: Optional[Image.Image] = None

    def __repr__(self) -> str:
        return f"Sample({self.key!r}, {self.source!r})"

    @property
    def caption(self) -> Optional[str]:
        return self._caption()

    def require_caption(self) -> str:
        """The caption, or a TrainingError naming the image and where a caption can come from."""
        text = self.caption
        if text is None:
            raise TrainingError(
                f"Image {self.source} (key '{self.key}') has no caption. Training needs one per image: put it in "
                f"a sidecar .txt file next to the image, in the shard's 'txt' field (or 'json' with a "
                f"'caption'/'text' entry), or in a column of the scores file (train --caption-column)."
            )
        return text

    @property
    def image(self) -> Image.Image:
        if self._image is None:
            self._image = decode_image(self._read, self.source)
        return self._image


def decode_image(read: Callable[[], bytes], source: str) -> Image.Image:
    """The image as PIL RGB (alpha dropped, palette and greyscale converted); a TrainingError naming it otherwise."""
    try:
        data = read()
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")
    except TrainingError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many types for broken files
        raise TrainingError(f"Cannot decode image {source} ({type(e).__name__}: {e}). {BAD_IMAGE_HELP}") from e


@dataclass
class Dataset:
    """A source of Samples in a fixed global order; `samples(rank, world)` is one process's share."""

    kind: str  # 'folder' or 'shards'
    root: str  # what the user gave, for messages
    shards: tuple[Path, ...] = ()
    captions: Optional[Mapping[str, str]] = None  # key -> caption; when given, it is the caption source
    split: str = "auto"
    _folder: Optional[Path] = field(default=None, repr=False)

    def split_mode(self, world: int) -> str:
        if self.split not in SPLITS:
            raise TrainingError(f"Unknown split '{self.split}'; use one of {', '.join(SPLITS)}.")
        if self.kind == "folder":
            return "items"
        if self.split == "auto":
            return "shards" if len(self.shards) >= world else "items"
        return self.split

    def samples(self, rank: int = 0, world: int = 1) -> Iterator[Sample]:
        """This process's samples, in global order (see the module docstring for the split)."""
        if not 0 <= rank < world:
            raise ValueError(f"rank {rank} outside world {world}")
        mode = self.split_mode(world)
        if self.kind == "folder":
            for i, path in enumerate(self._walk()):
                if i % world == rank:
                    yield self._folder_sample(path)
            return
        index = 0
        for j, shard in enumerate(self.shards):
            if mode == "shards":
                if j % world == rank:
                    yield from self._shard_samples(shard, lambda _i: True)
                continue
            counter = _Counter(index)
            yield from self._shard_samples(shard, lambda i: i % world == rank, counter)
            index = counter.value

    def first(self) -> Optional[Sample]:
        """The first sample in global order, or None for an empty dataset (reads at most one shard)."""
        return next(self.samples(0, 1), None)

    def count(self) -> Optional[int]:
        """Number of images where it is cheap to know (a folder: names only); None for shards."""
        if self.kind == "folder":
            return sum(1 for _ in self._walk())
        return None

    def check_not_empty(self) -> None:
        if self.first() is None:
            what = (
                f"no images ({', '.join(IMAGE_SUFFIXES)}) under the folder {self.root}"
                if self.kind == "folder"
                else f"no samples in the shards {self.root} ({len(self.shards)} file(s))"
            )
            raise TrainingError(
                f"The dataset is empty: {what}. Point --data at a folder of images or at webdataset .tar shards."
            )

    # -- image folder ------------------------------------------------------------------------------------------
    def _walk(self) -> Iterator[Path]:
        assert self._folder is not None
        stack = [self._folder]
        while stack:
            d = stack.pop()
            try:
                entries = sorted(os.scandir(d), key=lambda e: e.name)
            except OSError as e:
                raise TrainingError(f"Cannot list the folder {d}: {e}.") from e
            subdirs, stems = [], {}
            for e in entries:
                if e.name.startswith("."):
                    continue
                if e.is_dir(follow_symlinks=False):
                    subdirs.append(Path(e.path))
                elif Path(e.name).suffix.lower() in IMAGE_SUFFIXES:
                    stem = Path(e.name).stem
                    if stem in stems:
                        raise TrainingError(
                            f"Images {stems[stem]} and {e.path} have the same key "
                            f"'{self._key(Path(e.path))}' (the path without extension). Rename or remove one."
                        )
                    stems[stem] = e.path
                    yield Path(e.path)
            stack.extend(reversed(subdirs))

    def _key(self, path: Path) -> str:
        return path.relative_to(self._folder).with_suffix("").as_posix()

    def _folder_sample(self, path: Path) -> Sample:
        key = self._key(path)
        if self.captions is not None:
            caption = lambda k=key: self.captions.get(k)  # noqa: E731
        else:
            sidecar = path.with_suffix(".txt")
            caption = lambda p=sidecar: _read_sidecar(p)  # noqa: E731
        return Sample(key, str(path), path.read_bytes, caption)

    # -- webdataset shards ---------------------------------------------------------------------------------------
    def _shard_samples(
        self, shard: Path, mine: Callable[[int], bool], counter: Optional["_Counter"] = None
    ) -> Iterator[Sample]:
        counter = counter or _Counter(0)
        try:
            tar = tarfile.open(shard, mode="r|*")
        except (OSError, tarfile.TarError) as e:
            raise TrainingError(
                f"Cannot read the shard {shard} ({type(e).__name__}: {e}). Replace it with a "
                "good copy (a .tar as webdataset writes it)."
            ) from e
        key, fields, take = None, {}, False
        try:
            with tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    base, ext = _split_name(member.name)
                    if ext is None:
                        continue
                    if base != key:
                        if key is not None and take:
                            yield self._wds_sample(shard, key, fields)
                        key, fields = base, {}
                        take = mine(counter.value)
                        counter.value += 1
                    if take:
                        f = tar.extractfile(member)
                        fields[ext.lower()] = (member.name, f.read() if f is not None else b"")
                if key is not None and take:
                    yield self._wds_sample(shard, key, fields)
        except tarfile.TarError as e:
            raise TrainingError(
                f"The shard {shard} is broken after sample '{key}' ({type(e).__name__}: {e}). "
                "Replace it with a good copy; samples before it that were scored are kept."
            ) from e

    def _wds_sample(self, shard: Path, key: str, fields: dict) -> Sample:
        image_field = next((f for f in WDS_IMAGE_FIELDS if f in fields), None)
        if image_field is None:
            source = f"{shard}:{key}.*"

            def read() -> bytes:
                raise TrainingError(
                    f"Sample '{key}' in {shard} has no image field (members: "
                    f"{', '.join(n for n, _ in fields.values())}; looked for "
                    f"{', '.join(WDS_IMAGE_FIELDS)})."
                )
        else:
            name, data = fields[image_field]
            source = f"{shard}:{name}"
            read = lambda d=data: d  # noqa: E731
        if self.captions is not None:
            caption = lambda k=key: self.captions.get(k)  # noqa: E731
        else:
            caption = lambda: _wds_caption(shard, fields)  # noqa: E731
        return Sample(key, source, read, caption)


class _Counter:
    def __init__(self, value: int):
        self.value = value


def _split_name(name: str) -> tuple[str, Optional[str]]:
    """webdataset's member naming: 'dir/abc.seg.jpg' -> ('dir/abc', 'seg.jpg'); no dot -> (name, None)."""
    d, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    if not dot:
        return name, None
    return (f"{d}/{stem}" if d else stem), ext


def _read_sidecar(path: Path) -> Optional[str]:
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise TrainingError(f"Cannot read the caption file {path} ({e}). Save it as UTF-8 text.") from e


def _wds_caption(shard: Path, fields: dict) -> Optional[str]:
    if "txt" in fields:
        name, data = fields["txt"]
        try:
            return data.decode("utf-8").strip()
        except UnicodeDecodeError as e:
            raise TrainingError(f"The caption {shard}:{name} is not UTF-8 text ({e}).") from e
    if "json" in fields:
        name, data = fields["json"]
        try:
            doc = json.loads(data)
        except ValueError as e:
            raise TrainingError(f"The metadata {shard}:{name} is not valid JSON ({e}).") from e
        if isinstance(doc, dict):
            for k in WDS_JSON_CAPTION_KEYS:
                if isinstance(doc.get(k), str):
                    return doc[k].strip()
    return None


def expand_shards(spec: str) -> list[Path]:
    """Shard files of a brace pattern ('data/{00000..00009}.tar'), a glob, one .tar, or a folder of .tar files."""
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix == ".tar" and f.is_file())
        if not files:
            raise TrainingError(f"The folder {spec} has no .tar shards.")
        return files
    if "{" in spec:
        import braceexpand

        files = [Path(s) for s in braceexpand.braceexpand(spec)]
    elif any(c in spec for c in "*?["):
        files = [Path(f) for f in sorted(glob.glob(spec))]
    else:
        files = [p]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise TrainingError(
            f"Shard file(s) not found: {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''} "
            f"(from --data {spec}). Check the pattern."
        )
    if not files:
        raise TrainingError(f"--data {spec} matches no files.")
    return files


def open_dataset(
    spec: str, *, kind: str = "auto", captions: Optional[Mapping[str, str]] = None, split: str = "auto"
) -> Dataset:
    """A Dataset from what the user gave as --data.

    kind 'auto': a brace pattern, a glob or a path ending in .tar means shards; a folder holding .tar files
    and no images at its top level means shards; any other folder is an image folder. `captions` (key ->
    caption, e.g. a column of the scores file) replaces the sidecar/txt/json captions when given.
    """
    if kind not in ("auto", "folder", "shards"):
        raise TrainingError(f"Unknown dataset kind '{kind}'; use auto, folder or shards.")
    p = Path(spec)
    if kind == "auto":
        if p.is_dir():
            top = [f for f in p.iterdir() if f.is_file()]
            has_tar = any(f.suffix == ".tar" for f in top)
            has_img = any(f.suffix.lower() in IMAGE_SUFFIXES for f in top)
            kind = "shards" if has_tar and not has_img else "folder"
        elif spec.endswith(".tar") or "{" in spec or any(c in spec for c in "*?["):
            kind = "shards"
        else:
            raise TrainingError(
                f"--data {spec} is neither a folder nor .tar shards (it does not exist?). Give an "
                "image folder, a .tar, a folder of .tar files or a pattern like data/{00000..00009}.tar."
            )
    if kind == "folder":
        if not p.is_dir():
            raise TrainingError(f"The image folder {spec} does not exist.")
        return Dataset("folder", spec, captions=captions, split=split, _folder=p)
    return Dataset("shards", spec, shards=tuple(expand_shards(spec)), captions=captions, split=split)


def train_stream(
    dataset: Dataset, *, rank: int = 0, world: int = 1, seed: int = 0, shuffle_buffer: int = 1000, start: int = 0
) -> Iterator[Sample]:
    """This process's samples, epoch after epoch without end, shuffled in a streaming buffer.

    Epoch e streams the process's share in global order through a buffer of `shuffle_buffer` samples (lazy:
    paths or encoded bytes, not decoded images), drawn with random.Random(f"{seed}/{e}/{rank}"). The n-th
    sample yielded is a function of (dataset, rank, world, seed, shuffle_buffer, n) alone, so a run resumed
    after n samples passes start=n and continues exactly (skipped samples are never decoded).
    """
    if shuffle_buffer < 1:
        raise TrainingError(f"shuffle_buffer must be at least 1, got {shuffle_buffer}.")
    n, epoch = 0, 0
    while True:
        rng = random.Random(f"{seed}/{epoch}/{rank}")
        yielded = 0
        for sample in _shuffled(dataset.samples(rank, world), shuffle_buffer, rng):
            yielded += 1
            if n >= start:
                yield sample
            n += 1
        if yielded == 0:
            raise TrainingError(
                f"Process {rank} of {world} got no samples from {dataset.root}: the dataset has fewer "
                "items (or shards) than processes. Use more data or fewer processes."
            )
        epoch += 1


def _shuffled(items: Iterator[Sample], size: int, rng: random.Random) -> Iterator[Sample]:
    buf: list[Sample] = []
    for item in items:
        if len(buf) < size:
            buf.append(item)
            continue
        j = rng.randrange(size)
        out, buf[j] = buf[j], item
        yield out
    rng.shuffle(buf)
    yield from buf
