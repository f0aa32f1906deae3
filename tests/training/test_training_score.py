"""`python -m training score` and training/common/datasets.py on real small data made here: PNG/JPEG/WebP files in a
folder, webdataset shards written with tarfile, real offline metrics (pyiqa piqe, and niqe with the parameters
that scripts/prepare_test_data.sh converts from PyPI).

Two processes run under `accelerate launch` on the CPU (gloo); a crash is simulated with the score command's
fault hook (the process calls os._exit once it has saved k images, as a kill would leave it).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import conftest
import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers import NIQE_FILE, NIQE_MAT, TWO_CPU_PROCESSES, accelerate_launch
from PIL import Image

REPO = conftest.REPO
from adapter.norm_table import NormTable  # noqa: E402
from training.common import datasets  # noqa: E402
from training.common.errors import TrainingError  # noqa: E402
from training.iqa_adapter import score  # noqa: E402

SIZE = 192  # NIQE needs >= 2x2 blocks of 96 px for a covariance (pyiqa's NIQE); small enough to be quick
METRICS = ["piqe", "niqe"]
# Per-image agreement between two runs that batch the images differently (batch 2, other neighbours, other
# processes). PIQE runs in float32 with per-image reductions: a batch-size-dependent kernel path may change
# summation order, a few ulps (float32 eps 1.2e-7) in each of a few reductions: rel 1e-5. NIQE rounds
# 255 * Y to grey levels, and a .5 tie may round either way with the kernel's summation order: up to 0.025 on
# a natural image (tests/guidance/test_iqa_models.py, NIQE_TOL); the rest is float64.
TOL = {"piqe": dict(rel=1e-5, abs=1e-6), "niqe": dict(rel=0, abs=0.025)}


def _photo(seed: int, h: int, w: int) -> Image.Image:
    """A smooth scene with edges and texture whose sharpness and noise vary with the seed (not flat: PIQE is
    NaN on black and NIQE fails on flat images)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = 110 + 60 * np.sin(xx / (4 + seed)) * np.cos(yy / (7 + seed % 3)) + 0.3 * yy
    edge = np.where((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (h / 3) ** 2, 40.0, -30.0)
    img = np.stack([base + edge, base * 0.8, 250 - base], -1) + rng.normal(0, 2 + 4 * (seed % 4), (h, w, 3))
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def _encode(im: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **({"quality": 60} if fmt in ("JPEG", "WEBP") else {}))
    return buf.getvalue()


FOLDER = {  # relative path -> caption (None: no sidecar)
    "a.png": "a red thing",
    "b.jpg": None,
    "c.webp": "c caption",
    "sub/d.png": "d",
    "sub/e.jpg": None,
    "sub/deeper/f.png": "f",
    "g.jpeg": "g",
    "sub/h.png": None,
    "z.bmp": "z",
}
FOLDER_ORDER = [
    "a",
    "b",
    "c",
    "g",
    "z",
    "sub/d",
    "sub/e",
    "sub/h",
    "sub/deeper/f",
]  # a directory's files, then its subdirectories


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("score-data")
    folder = root / "images"
    for i, (rel, caption) in enumerate(FOLDER.items()):
        p = folder / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP"}[p.suffix]
        p.write_bytes(_encode(_photo(i, 150 + 13 * i, 170 + 7 * i), fmt))
        if caption is not None:
            p.with_suffix(".txt").write_text(caption + "\n")
    (folder / ".hidden").mkdir()
    (folder / ".hidden" / "x.png").write_bytes(_encode(_photo(99, 100, 100), "PNG"))  # hidden: not part of the data
    (folder / "notes.md").write_text("not an image")
    shards = root / "shards"
    shards.mkdir()
    _tar(
        shards / "00000.tar",
        [
            ("000001.jpg", _encode(_photo(20, 160, 200), "JPEG")),
            ("000001.txt", b"one"),
            ("000002.png", _encode(_photo(21, 200, 160), "PNG")),
            ("000002.json", json.dumps({"caption": "two", "url": "x"}).encode()),
        ],
    )
    _tar(
        shards / "00001.tar",
        [
            ("d/000003.webp", _encode(_photo(22, 180, 180), "WEBP")),
            ("d/000003.json", json.dumps({"text": "three"}).encode()),
            ("000004.jpg", _encode(_photo(23, 170, 190), "JPEG")),
            ("000004.seg.png", _encode(_photo(25, 170, 190), "PNG")),  # another field, not the image
            ("000005.jpg", _encode(_photo(24, 190, 170), "JPEG")),
        ],
    )
    return root


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as t:
        for name, blob in members:
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            t.addfile(info, io.BytesIO(blob))


SHARD_KEYS = ["000001", "000002", "d/000003", "000004", "000005"]


@pytest.fixture(scope="module")
def iqa_dir(tmp_path_factory) -> Path:
    if not NIQE_MAT.is_file():
        pytest.fail(f"NIQE parameters missing at {NIQE_MAT}: run scripts/prepare_test_data.sh (scripts/test.sh does).")
    d = tmp_path_factory.mktemp("iqa")
    shutil.copy(NIQE_MAT, d / NIQE_FILE)
    return d


def run_score(argv: list[str]) -> int:
    """The score subcommand in this process (one process: accelerate's PartialState sees no launcher)."""
    p = argparse.ArgumentParser()
    score.add_arguments(p)
    return score.run(p.parse_args(argv))


def cli(args: list[str], *, launch: list[str] | None = None, env: dict | None = None, timeout: int = 120):
    """`python -m training score ...` (or under `accelerate launch ...`) as a subprocess from the pack's folder."""
    e = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1", **(env or {}))
    cmd = [sys.executable, "-m", "training", "score", *args]
    if launch is None:
        return subprocess.run(cmd, cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout)
    # torch's elastic agent (under accelerate launch) looks up this machine's own name (socket.getfqdn), which
    # the session's network guard (tests/netguard) would log as an attempt. Give the launch a guard log of its
    # own and allow exactly that lookup; anything else still fails the test.
    guard = Path(tempfile.mkdtemp(prefix="netguard-launch-"))
    e["IQA_NETGUARD_DIR"] = str(guard)
    cmd = [*accelerate_launch(*launch), "-m", "training", "score", *args]
    r = subprocess.run(cmd, cwd=REPO, env=e, capture_output=True, text=True, timeout=timeout)
    own = {socket.gethostname(), socket.getfqdn()}
    for f in guard.glob("*.jsonl"):
        for line in f.read_text().splitlines():
            a = json.loads(line)
            ok = (
                a["event"] in ("socket.gethostbyaddr", "socket.getaddrinfo", "socket.gethostbyname")
                and a["host"] in own
                and any("torch/distributed/elastic" in s for s in a["stack"])
            )
            assert ok, f"a process under accelerate launch tried to reach the network: {a}"
    return r


def rows(path: Path) -> dict[str, dict]:
    t = pq.read_table(path).to_pylist()
    return {r["key"]: r for r in t}


# -- datasets ----------------------------------------------------------------------------------------------------
def test_image_folder_keys_order_and_captions(data):
    ds = datasets.open_dataset(str(data / "images"))
    assert ds.kind == "folder" and ds.count() == len(FOLDER)
    samples = list(ds.samples())
    assert [s.key for s in samples] == FOLDER_ORDER
    want = {str(Path(rel).with_suffix("").as_posix()): c for rel, c in FOLDER.items()}
    assert {s.key: s.caption for s in samples} == want
    s = samples[0]
    assert s.image.mode == "RGB" and s.image.size == (170, 150) and s.source == str(data / "images" / "a.png")
    missing = next(s for s in samples if s.key == "sub/e")
    with pytest.raises(TrainingError, match=r"sub/e\.jpg.*has no caption.*sidecar \.txt"):
        missing.require_caption()
    assert samples[0].require_caption() == "a red thing"
    # captions from a scores-file column replace the sidecars
    ds2 = datasets.open_dataset(str(data / "images"), captions={"sub/e": "from the table"})
    by_key = {s.key: s for s in ds2.samples()}
    assert by_key["sub/e"].caption == "from the table" and by_key["a"].caption is None


def test_shards_read_as_webdataset_does(data):
    import webdataset as wds

    tars = sorted((data / "shards").glob("*.tar"))
    pattern = str(data / "shards" / "{00000..00001}.tar")
    for spec in (pattern, str(data / "shards")):  # a brace pattern and a folder of shards give the same dataset
        ds = datasets.open_dataset(spec)
        assert ds.kind == "shards" and list(ds.shards) == tars
        samples = list(ds.samples())
        assert [s.key for s in samples] == SHARD_KEYS
    theirs = list(wds.WebDataset([str(t) for t in tars], shardshuffle=False, empty_check=False))
    assert [d["__key__"] for d in theirs] == SHARD_KEYS  # webdataset groups members into the same samples
    assert [s.caption for s in samples] == ["one", "two", "three", None, None]
    assert samples[2].source == f"{tars[1]}:d/000003.webp" and samples[3].source.endswith(":000004.jpg")
    assert all(s.image.mode == "RGB" for s in samples)


@pytest.mark.parametrize("world", [1, 2, 3, 4])
def test_split_gives_every_item_to_exactly_one_process(data, world):
    for spec, split in (
        (str(data / "images"), "auto"),
        (str(data / "shards"), "items"),
        (str(data / "shards"), "shards"),
    ):
        ds = datasets.open_dataset(spec, split=split)
        every = [s.key for s in ds.samples()]
        shares = [[s.key for s in ds.samples(r, world)] for r in range(world)]
        assert sorted(k for sh in shares for k in sh) == sorted(every), (spec, split, world)
        if ds.split_mode(world) == "items":  # interleaved in the global order
            assert all(sh == every[r::world] for r, sh in enumerate(shares))
    ds = datasets.open_dataset(str(data / "shards"))
    assert ds.split_mode(2) == "shards" and ds.split_mode(3) == "items"  # auto: whole shards when there are enough


def test_train_stream_is_seeded_resumable_and_covers_each_epoch(data):
    ds = datasets.open_dataset(str(data / "images"))
    take = lambda it, n: [next(it).key for _ in range(n)]  # noqa: E731
    n = len(FOLDER)
    a = take(datasets.train_stream(ds, seed=5, shuffle_buffer=4), 3 * n)
    assert a == take(datasets.train_stream(ds, seed=5, shuffle_buffer=4), 3 * n)
    assert a != take(datasets.train_stream(ds, seed=6, shuffle_buffer=4), 3 * n)
    for e in range(3):  # every epoch is a permutation of the process's share
        assert sorted(a[e * n : (e + 1) * n]) == sorted(FOLDER_ORDER)
    assert a[:n] != a[n : 2 * n]  # epochs are shuffled differently
    assert take(datasets.train_stream(ds, seed=5, shuffle_buffer=4, start=7), 3 * n - 7) == a[7:]
    r1 = take(datasets.train_stream(ds, rank=1, world=2, seed=5), 8)
    assert sorted(r1[:4]) == sorted(FOLDER_ORDER[1::2])
    with pytest.raises(TrainingError, match="fewer items"):
        next(datasets.train_stream(datasets.open_dataset(str(data / "shards"), split="shards"), rank=3, world=4))


def test_dataset_errors_name_the_file(data, tmp_path):
    with pytest.raises(TrainingError, match="does not exist"):
        datasets.open_dataset(str(tmp_path / "nope"))
    with pytest.raises(TrainingError, match=r"not found: .*00002\.tar"):
        datasets.open_dataset(str(data / "shards" / "{00000..00007}.tar"))
    (tmp_path / "dup").mkdir()
    for ext in ("png", "jpg"):
        _photo(1, 40, 40).save(tmp_path / "dup" / f"x.{ext}")
    with pytest.raises(TrainingError, match=r"x\.jpg and .*x\.png have the same key 'x'"):
        list(datasets.open_dataset(str(tmp_path / "dup")).samples())
    (tmp_path / "bad.tar").write_bytes(b"this is not a tar file at all" * 30)
    with pytest.raises(TrainingError, match=r"bad\.tar"):
        list(datasets.open_dataset(str(tmp_path / "bad.tar")).samples())
    _tar(tmp_path / "noimg.tar", [("k1.txt", b"caption only")])
    s = next(datasets.open_dataset(str(tmp_path / "noimg.tar")).samples())
    with pytest.raises(TrainingError, match=r"Sample 'k1' in .*noimg\.tar has no image field"):
        _ = s.image


# -- score: processes, resume, the table ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def two_processes(data, iqa_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("score2") / "scores.parquet"
    # On a machine without GPUs, accelerate 1.15 starts several CPU processes only through its torchrun path
    # (--multi_gpu); `--cpu --num_processes 2` runs one process unless mpirun is configured.
    r = cli(
        [
            "--data",
            str(data / "images"),
            "--metrics",
            *METRICS,
            "--out",
            str(out),
            "--size",
            str(SIZE),
            "--batch",
            "2",
            "--part-size",
            "2",
            "--iqa-dir",
            str(iqa_dir),
        ],
        launch=[*TWO_CPU_PROCESSES, "--main_process_port", "29631"],
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert "process 0/2: scored 5 image(s)" in r.stderr and "process 1/2: scored 4 image(s)" in r.stderr
    return out


def test_two_processes_score_every_image_exactly_once(two_processes):
    out = two_processes
    got = rows(out)
    assert sorted(got) == sorted(FOLDER_ORDER) and pq.read_table(out).num_rows == len(FOLDER)
    parts = sorted(score.parts_dir(out).glob("part-*.parquet"))
    per_rank = {}
    keys_in_parts = []
    for f in parts:
        k = pq.read_table(f).column("key").to_pylist()
        per_rank.setdefault(f.name.split("-")[1], []).extend(k)
        keys_in_parts += k
    assert sorted(keys_in_parts) == sorted(FOLDER_ORDER)  # each image in exactly one part
    assert sorted(per_rank["00000"]) == sorted(FOLDER_ORDER[0::2]) and sorted(per_rank["00001"]) == sorted(
        FOLDER_ORDER[1::2]
    )
    assert list(pq.read_table(out).column_names) == ["key", "piqe", "niqe", "piqe_z", "niqe_z"]
    assert all(np.isfinite(v) for r in got.values() for v in list(r.values())[1:])


def test_norm_table_loads_and_matches_the_column(two_processes):
    out = two_processes
    table_file = score.default_table_path(out)
    nt = NormTable.from_json(table_file)
    doc = json.loads(table_file.read_text())
    assert (
        doc["format"] == "iqa-adapter-norm-table/1"
        and doc["count"] == len(FOLDER)
        and sorted(nt.names()) == sorted(METRICS)
    )
    t = pq.read_table(out)
    for m in METRICS:
        raw, z = t.column(m).to_numpy(), t.column(f"{m}_z").to_numpy()
        st = nt.get(m)
        # Same float64 numbers through the same numpy calls: equal up to JSON's round trip (repr is exact).
        assert st.mean == pytest.approx(raw.mean(), rel=1e-12) and st.std == pytest.approx(raw.std(), rel=1e-12)
        assert st.percentiles[0] == (0.0, raw.min()) and st.percentiles[-1] == (100.0, raw.max())
        want = np.percentile(raw, range(1, 100))
        assert [p for p, _ in st.percentiles[1:-1]] == list(map(float, range(1, 100)))
        assert np.allclose([v for _, v in st.percentiles[1:-1]], want, rtol=1e-12, atol=0)
        # z columns are the table's z: z_from_raw(raw) to float64 rounding (a subtraction and a division).
        assert np.allclose([st.z_from_raw(v) for v in raw], z, rtol=1e-12, atol=1e-12)
        zs = doc["z_metrics"][m]
        assert zs["mean"] == pytest.approx(0.0, abs=1e-12) and zs["std"] == pytest.approx(1.0, rel=1e-12)
        assert np.allclose(
            [zs["percentiles"][str(p)] for p in range(1, 100)], np.percentile(z, range(1, 100)), rtol=1e-12, atol=1e-12
        )
        assert st.percentile_from_raw(float(np.median(raw))) == pytest.approx(50.0, abs=1e-9)
        # pyiqa's lower_better flag travels with the table, so percentiles are quality percentiles.
        assert doc["metrics"][m]["lower_better"] is st.lower_better is score._metric_specs().get_spec(m).lower_better


def test_resume_after_a_crash_loses_nothing_and_matches(data, iqa_dir, two_processes, tmp_path):
    out = tmp_path / "scores.parquet"
    args = [
        "--data",
        str(data / "images"),
        "--metrics",
        *METRICS,
        "--out",
        str(out),
        "--size",
        str(SIZE),
        "--batch",
        "2",
        "--part-size",
        "2",
        "--iqa-dir",
        str(iqa_dir),
        "--no-progress",
    ]
    r = cli(args, env={score.CRASH_ENV: "4"})
    assert r.returncode == 75, r.stderr[-3000:]  # died after saving 4 images (two parts), like a kill
    parts = score.parts_dir(out)
    saved = sorted(parts.glob("part-*.parquet"))
    assert len(saved) == 2 and not out.exists()
    first = {k for f in saved for k in pq.read_table(f).column("key").to_pylist()}
    assert first == set(FOLDER_ORDER[:4])
    # What a kill during a part's write leaves: a hidden temporary, never read.
    (parts / ".part-00000-000002.parquet.999.tmp").write_bytes(b"PAR1 half a file")
    assert run_score(args) == 0  # the rerun, in this process
    keys = [k for f in sorted(parts.glob("part-*.parquet")) for k in pq.read_table(f).column("key").to_pylist()]
    assert sorted(keys) == sorted(FOLDER_ORDER)  # the rerun scored only the 5 others
    assert all(pq.read_table(f).num_rows for f in saved)  # the parts of the crashed run are untouched
    got, ref = rows(out), rows(two_processes)
    assert sorted(got) == sorted(ref)
    for k in ref:
        for m in METRICS:
            assert got[k][m] == pytest.approx(ref[k][m], **TOL[m]), (k, m)
    assert run_score(args) == 0 and rows(out) == got  # a third run has nothing left to do


# -- bad input ---------------------------------------------------------------------------------------------------
def test_bad_inputs_get_clear_errors(data, iqa_dir, tmp_path):
    base = ["--out", str(tmp_path / "o.parquet"), "--size", "64", "--no-progress"]
    with pytest.raises(TrainingError, match=r"Unknown IQA metric 'piqee'. Did you mean 'piqe'.*Supported: .*niqe"):
        run_score(["--data", str(data / "images"), "--metrics", "piqee", *base])
    with pytest.raises(TrainingError, match=r"--size 64 is too small for 'niqe'.*96"):
        run_score(["--data", str(data / "images"), "--metrics", "niqe", *base])
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "a.txt").write_text("a caption without an image")
    with pytest.raises(TrainingError, match=r"dataset is empty: no images"):
        run_score(["--data", str(tmp_path / "empty"), "--metrics", "piqe", *base])
    with pytest.raises(
        TrainingError,
        match=r"'topiq_nr' needs the weight file '[^']+\.pth'.*never downloads\. Put the file at "
        + str(tmp_path / "noweights"),
    ):
        run_score(
            ["--data", str(data / "images"), "--metrics", "topiq_nr", *base, "--iqa-dir", str(tmp_path / "noweights")]
        )

    def folder(name: str, extra: dict[str, bytes]) -> str:
        d = tmp_path / name
        d.mkdir()
        for i in range(3):
            _photo(i, 80, 80).save(d / f"ok{i}.png")
        for file, blob in extra.items():
            (d / file).write_bytes(blob)
        return str(d)

    broken = {"broken.jpg": b"\xff\xd8\xff\xe0 not really a jpeg"}
    black = {"black.png": _encode(Image.new("RGB", (80, 80)), "PNG")}  # PIQE is NaN on a black image
    with pytest.raises(TrainingError, match=r"Cannot decode image .*broken\.jpg.*--skip-bad"):
        run_score(
            ["--data", folder("broken", broken), "--metrics", "piqe", *base, "--out", str(tmp_path / "1.parquet")]
        )
    with pytest.raises(TrainingError, match=r"Image .*black\.png \(key 'black'\): metric 'piqe' gave nan"):
        run_score(["--data", folder("black", black), "--metrics", "piqe", *base, "--out", str(tmp_path / "2.parquet")])
    both = folder("both", {**broken, **black})
    out = tmp_path / "3.parquet"
    assert run_score(["--data", both, "--metrics", "piqe", *base, "--out", str(out), "--skip-bad"]) == 0
    assert sorted(rows(out)) == ["ok0", "ok1", "ok2"]
    skipped = [json.loads(line) for line in score.skipped_path(out).read_text().splitlines()]
    assert sorted(s["key"] for s in skipped) == ["black", "broken"]
    with pytest.raises(TrainingError, match=r"scored with metrics \['piqe'\], this run asks for \['piqe', 'entropy'\]"):
        run_score(["--data", both, "--metrics", "piqe", "entropy", *base, "--out", str(out), "--skip-bad"])


def test_read_scores_gives_train_its_vectors_and_names_bad_rows(two_processes, tmp_path):
    import pyarrow as pa

    out = two_processes
    z = score.read_scores(out, ["niqe", "piqe"])
    t = pq.read_table(out)
    assert sorted(z) == sorted(FOLDER_ORDER) and z["a"].dtype == np.float32
    i = t.column("key").to_pylist().index("a")
    assert z["a"].tolist() == pytest.approx(
        [t.column("niqe_z")[i].as_py(), t.column("piqe_z")[i].as_py()], rel=1e-6
    )  # float32
    assert score.read_scores(out, ["piqe"], z=False)["a"][0] == pytest.approx(t.column("piqe")[i].as_py(), rel=1e-6)
    with pytest.raises(TrainingError, match=r"lacks the column\(s\) topiq_nr_z.*score --metrics piqe topiq_nr"):
        score.read_scores(out, ["piqe", "topiq_nr"])
    nan = tmp_path / "nan.parquet"
    pq.write_table(pa.table({"key": ["x", "y"], "piqe_z": [0.5, float("nan")], "cap": ["a cat", None]}), nan)
    with pytest.raises(TrainingError, match=r"holds nan in column 'piqe_z' at row 1 \(key 'y'\)"):
        score.read_scores(nan, ["piqe"])
    assert score.read_captions(nan, "cap") == {"x": "a cat"}
    with pytest.raises(TrainingError, match="no caption column 'caption'"):
        score.read_captions(nan, "caption")
    official = tmp_path / "official.feather"  # the official script's layout: image_file, <metric>_normalized
    import pyarrow.feather as feather

    feather.write_feather(pa.table({"image_file": ["000001"], "piqe": [40.0], "piqe_normalized": [1.5]}), str(official))
    assert score.read_scores(official, ["piqe"])["000001"].tolist() == [1.5]
