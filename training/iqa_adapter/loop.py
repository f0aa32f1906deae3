"""The training loop behind `python -m training train` (arguments and checkpoint files: training/iqa_adapter/train.py)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any, Optional

import torch

from training.common.errors import TrainingError
from training.iqa_adapter.batches import prepare_image  # noqa: F401 - its old home; tests import it from here

# What the adapter's weights are shaped by (and what it is fed).
_SHAPE = ("kind", "embedding", "metrics", "proj", "num_tokens", "use_flag", "pos_encode_L")
SETTINGS = (
    *_SHAPE,
    "normalized",
    "base",
    "base_family",
    "resolution",
    "batch_size",
    "grad_accum",
    "lr",
    "weight_decay",
    "seed",
    "world_size",
    "norm_table",
)
# What a resumed run must share with its checkpoint: the adapter's shape and the stream positions each step reads.
_RESUME_KEYS = (*_SHAPE, "batch_size", "grad_accum", "seed", "world_size")


def _settings(
    args: argparse.Namespace, family: str, world: int, table_path: Optional[Path], embedding: Optional[dict] = None
) -> dict[str, Any]:
    return {
        "kind": args.kind,
        "embedding": embedding,
        "embeddings": str(args.embeddings or ""),
        "metrics": list(args.metrics or []),
        "proj": args.proj,
        "num_tokens": args.num_tokens,
        "use_flag": bool(args.use_flag),
        "pos_encode_L": args.pos_encode_L,
        "normalized": not args.no_normalize,
        "base": str(args.base),
        "base_family": family,
        "resolution": args.resolution,
        "batch_size": args.batch_size,
        "grad_accum": args.grad_accum,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "seed": args.seed,
        "world_size": world,
        "norm_table": str(table_path or ""),
        "init_adapter": args.init_adapter or "",
    }


def _check_resumable(ckpt: Path, state: dict, now: dict[str, Any]) -> None:
    """A checkpoint resumes only the same run: another shape or batch plan would load wrong weights or reread data."""
    for key in _RESUME_KEYS:
        if state.get(key) != now[key]:
            raise TrainingError(
                f"--resume {ckpt}: it was trained with {key}={state.get(key)!r}, this run has {now[key]!r}. "
                "Resume with the same settings (a different setting is a new run: use another --out)."
            )


def _check_args(args: argparse.Namespace) -> None:
    for name in ("batch_size", "grad_accum", "steps", "resolution", "num_tokens", "checkpoint_every", "log_every"):
        if getattr(args, name) < 1:
            raise TrainingError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if not 0 <= args.pos_encode_L <= 32:
        raise TrainingError(f"--pos-encode-L must be 0-32, got {args.pos_encode_L}.")
    if args.kind == "reference":
        _check_reference_args(args)
        return
    for option, value in (("--scores", args.scores), ("--metrics", args.metrics)):
        if not value:
            raise TrainingError(f"train needs {option} for a quality adapter (or --kind reference --embeddings FILE).")
    if len(set(args.metrics)) != len(args.metrics):
        raise TrainingError(f"--metrics names a metric twice ({' '.join(args.metrics)}); list each once.")


def _check_reference_args(args: argparse.Namespace) -> None:
    """A reference adapter takes the embedding as it is: no scores, metrics or input encoding."""
    if not args.embeddings:
        raise TrainingError(
            "--kind reference needs --embeddings FILE, the file of `python -m training embed --data ... --spec ...`."
        )
    for option, value in (
        ("--metrics", args.metrics),
        ("--use-flag", args.use_flag),
        ("--pos-encode-L", args.pos_encode_L),
        ("--no-normalize", args.no_normalize),
    ):
        if value:
            raise TrainingError(
                f"{option} is for quality adapters; a reference adapter's input is its embedding as the spec "
                "makes it. Leave it out."
            )
    if args.caption_column and not args.scores:
        raise TrainingError("--caption-column reads the --scores file; give --scores too, or use caption sidecars.")


def reference_vectors(args: argparse.Namespace) -> tuple[dict[str, torch.Tensor], dict, int]:
    """key -> embedding, the spec fields the adapter will carry and its size: the embeddings file's spec,
    which a --spec, when given, must equal (another spec would make inference embed otherwise than training)."""
    from training.iqa_adapter.embed import read_embeddings, resolve_spec

    embeddings, fields, resolution = read_embeddings(Path(args.embeddings))
    dim = _spec_dim(fields, args.embeddings)
    sizes = {v.size for v in embeddings.values()}
    if sizes != {dim}:
        raise TrainingError(
            f"{args.embeddings} holds embeddings of {sorted(sizes)} values, but its spec {fields['name']} gives {dim}. "
            "The file is damaged or was edited: embed again into a new --out."
        )
    if args.spec:
        _, wanted = resolve_spec(args.spec)
        if wanted != fields:
            raise TrainingError(
                f"--spec {args.spec} ({wanted['name']}: {wanted['metric']}, taps {', '.join(wanted['taps'])}) is not the "
                f"spec {args.embeddings} was made with ({fields['name']}: {fields['metric']}, taps "
                f"{', '.join(fields['taps'])}). Embed again with --spec {args.spec}, or leave --spec out."
            )
    if resolution is not None and resolution != args.resolution:
        print(
            f"warning: {args.embeddings} was embedded from images prepared at {resolution} px, this run trains at "
            f"{args.resolution} px",
            flush=True,
        )
    return {k: torch.from_numpy(v) for k, v in embeddings.items()}, fields, dim


def _spec_dim(fields: dict, where: str) -> int:
    from adapter.embedding_spec import spec_from_dict
    from adapter.errors import IQAAdapterError

    try:
        return spec_from_dict(fields, str(where)).dim
    except IQAAdapterError as e:
        raise TrainingError(str(e)) from None


def _table_path(args: argparse.Namespace) -> Path:
    table_path = Path(args.norm_table) if args.norm_table else Path(args.scores).with_suffix(".norm.json")
    if not table_path.is_file():
        raise TrainingError(
            f"No normalisation table at {table_path}. `python -m training score` writes it beside the "
            "scores file; give it with --norm-table."
        )
    return table_path


def metric_vectors(raw: dict, metrics: list[str], table: Any) -> dict[str, torch.Tensor]:
    """key -> the adapter's input values: z-scores under the run's normalisation table (the one export
    embeds, so training and inference standardise alike), or the raw scores when table is None."""
    if table is None:
        return {k: torch.from_numpy(v.copy()) for k, v in raw.items()}
    stats = [table.get(m) for m in metrics]
    mean = torch.tensor([s.mean for s in stats], dtype=torch.float64)
    std = torch.tensor([s.std for s in stats], dtype=torch.float64)
    return {k: ((torch.from_numpy(v).double() - mean) / std).float() for k, v in raw.items()}


def train(args: argparse.Namespace) -> None:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from adapter.encoding import encode_quality_vector, encoded_dim
    from adapter.layers import find_attn2_layers
    from adapter.live_tokens import LiveQualityTokens
    from adapter.norm_table import NormTable
    from training.common import datasets, host
    from training.common.autograd_safety import make_autograd_safe
    from training.common.draws import sample_draws
    from training.common.gradient_checkpointing import enable_gradient_checkpointing
    from training.common.loss_log import LossLog
    from training.common.run_checkpoints import latest_checkpoint, read_state, write_checkpoint
    from training.iqa_adapter.batches import micro_batches
    from training.iqa_adapter.diffusion_loss import adapter_patches, eps_loss
    from training.iqa_adapter.score import read_captions, read_scores
    from training.iqa_adapter.trainable import TrainableAdapter

    _check_args(args)
    out = Path(args.out)
    # cpu=True without a GPU: several CPU processes (accelerate launch --multi_gpu) then form one gloo group
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        gradient_accumulation_steps=args.grad_accum,
        cpu=not torch.cuda.is_available(),
    )
    rank, world = accelerator.process_index, accelerator.num_processes
    set_seed(args.seed)  # the new adapter's projection starts from the same weights in every run with this seed

    if args.kind == "reference":
        table_path = None
        vectors_by_key, embedding, input_dim = reference_vectors(args)
    else:
        table_path, embedding = _table_path(args), None
        table = NormTable.from_json(table_path)
        vectors_by_key = metric_vectors(
            read_scores(Path(args.scores), args.metrics, z=False), args.metrics, None if args.no_normalize else table
        )
        input_dim = encoded_dim(len(args.metrics), args.use_flag, args.pos_encode_L)
    captions = read_captions(Path(args.scores), args.caption_column) if args.caption_column else None

    host.import_host(args.comfyui_dir)
    base = host.load_base(args.base, args.plugin)
    device = accelerator.device
    unet = base.unet.requires_grad_(False).eval().to(device)
    dtype = base.patcher.model.get_dtype()
    layers = find_attn2_layers(unet)
    sites = [site for site, _ in layers]
    if args.init_adapter:
        extra = len(layers) - len(find_attn2_layers(unet, extra=False))
        adapter = TrainableAdapter.from_file(Path(args.init_adapter), layers, extra)
        if adapter.spec.input_dim != input_dim and embedding is not None:
            raise TrainingError(
                f"--init-adapter {args.init_adapter} takes {adapter.spec.input_dim} inputs, but the embedding spec "
                f"{embedding['name']} of {args.embeddings} gives {input_dim} values. Fine-tune an adapter trained "
                "with that spec, or embed with the adapter's own spec (embed --spec)."
            )
        if adapter.spec.input_dim != input_dim:
            raise TrainingError(
                f"--init-adapter {args.init_adapter} takes {adapter.spec.input_dim} inputs, but --metrics "
                f"{' '.join(args.metrics)} with use_flag={args.use_flag}, pos_encode_L={args.pos_encode_L} "
                f"encode to {input_dim}. Give the metrics and flags it was trained with."
            )
    else:
        adapter = TrainableAdapter.from_base(layers, args.proj, args.num_tokens, input_dim)
    make_autograd_safe(unet)
    if args.gradient_checkpointing:
        enable_gradient_checkpointing(unet)
    frozen = sum(p.numel() for p in unet.parameters() if p.requires_grad)
    if frozen:
        raise TrainingError(f"internal: {frozen} UNet parameters would train; only the adapter may.")
    expected = sum(p.numel() for p in adapter.parameters())
    if adapter.num_trainable() != expected:  # a frozen copy of to_k/to_v would silently train only the projection
        raise TrainingError(f"internal: {adapter.num_trainable()} of {expected} adapter parameters are trainable.")

    optimizer = torch.optim.AdamW(adapter.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    adapter, optimizer = accelerator.prepare(adapter, optimizer)
    live = LiveQualityTokens()
    patches = adapter_patches(sites, live, host.attention_function())

    step = 0
    ckpt = None
    if args.resume == "latest":  # the newest checkpoint if there is one: the same command starts and restarts a job
        ckpt = latest_checkpoint(out)
        if ckpt is None and accelerator.is_main_process:
            print(f"--resume latest: no checkpoint in {out / 'checkpoints'} yet, starting from step 0", flush=True)
    elif args.resume:
        ckpt = Path(args.resume)
    if ckpt is not None:
        state = read_state(ckpt)
        _check_resumable(ckpt, state, _settings(args, "", world, table_path, embedding))
        accelerator.load_state(str(ckpt))
        step = int(state["step"])
    settings = _settings(args, type(base.patcher.model.model_config).__name__.lower(), world, table_path, embedding)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "run.json").write_text(json.dumps(settings, indent=1))

    dataset = datasets.open_dataset(args.data, captions=captions)
    if embedding is not None and dataset.kind == "folder":  # shards are checked image by image (a full read)
        from training.iqa_adapter.embed import check_covered

        check_covered([s.key for s in dataset.samples()], vectors_by_key, Path(args.embeddings))
    size = dataset.count()
    if size is not None and size < args.batch_size * world:
        raise TrainingError(
            f"--data {args.data} has {size} images, fewer than one batch across all processes "
            f"({args.batch_size} x {world} processes). Add images or lower --batch-size."
        )
    per_rank_step = args.batch_size * args.grad_accum

    def prepare(sample: Any) -> tuple[torch.Tensor, str, torch.Tensor]:
        caption = sample.require_caption()
        vector = vectors_by_key.get(sample.key)
        if vector is None and embedding is not None:
            raise TrainingError(
                f"{sample.source} (key '{sample.key}') has no embedding in {args.embeddings}. Run `python -m "
                "training embed` again on the same --data and --out (it embeds only what is missing)."
            )
        if vector is None:
            raise TrainingError(
                f"{sample.source} (key '{sample.key}') has no row in {args.scores}. Score the whole "
                "dataset first (python -m training score), or remove the image."
            )
        return prepare_image(sample.image, args.resolution), caption, vector

    stream = datasets.train_stream(
        dataset, rank=rank, world=world, seed=args.seed, shuffle_buffer=args.shuffle_buffer, start=step * per_rank_step
    )
    batches = micro_batches(stream, args.batch_size, rank, world, step * per_rank_step, prepare)
    log = LossLog(out, accelerator.is_main_process, resume_step=step)
    ms = base.model_sampling
    num_timesteps = int(ms.sigmas.shape[0])
    started = time.time()
    while step < args.steps:
        total = torch.zeros((), device=device)
        for _ in range(args.grad_accum):
            batch = next(batches)
            with accelerator.accumulate(adapter):
                images = batch.images.to(device)
                latents = host.encode_images(base, images).to(device)
                draws = sample_draws(args.seed, batch.positions, tuple(latents.shape[1:]), num_timesteps)
                captions = ["" if drop else c for c, drop in zip(batch.captions, draws.drop_text.tolist())]
                context, pooled = host.encode_text(base.clip, captions)
                y = host.adm_vector(base, pooled, args.resolution, args.resolution)
                vectors = encode_quality_vector(batch.vectors, args.use_flag, args.pos_encode_L)
                vectors = torch.where(draws.drop_quality[:, None], torch.zeros_like(vectors), vectors).to(device)
                with accelerator.autocast():
                    loss = eps_loss(
                        unet,
                        ms,
                        dtype,
                        adapter,
                        live,
                        patches,
                        vectors,
                        latents,
                        context.to(device),
                        None if y is None else y.to(device),
                        draws,
                    )
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                total += loss.detach() / args.grad_accum
        step += 1
        mean = accelerator.reduce(total, reduction="mean").item()
        log.add(step, mean, args.lr, step * per_rank_step * world, time.time() - started)
        if step % args.log_every == 0 and accelerator.is_main_process:
            print(f"step {step}/{args.steps} loss {mean:.5f}", flush=True)
        if step % args.checkpoint_every == 0 or step == args.steps:
            log.flush()
            write_checkpoint(accelerator, adapter, out, step, settings, args.keep_checkpoints)
    log.close()
    if args.export and accelerator.is_main_process:
        from training.iqa_adapter.export import export_checkpoint

        export_checkpoint(latest_checkpoint(out), Path(args.export))
    accelerator.wait_for_everyone()
