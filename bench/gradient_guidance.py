"""Benchmark: cost of IQA Gradient Guidance per sampling step, where the time goes, and peak memory.

A real-size SD1.5 UNet (host classes, random weights), cfg batch of 2 (one image), 64x64 latent (512 px),
on this machine's CPU. Decoders are the host's own classes with random weights, loaded through
comfy.sd.VAE as the VAE Loader does: TAESD and the SD1.x KL VAE (AutoencoderKL). Metrics are pyiqa
0.1.16 networks built offline with random weights (topiq_nr, and musiq as the cheaper one). Timing does
not depend on the weights' values.

Each variant is one sampler-like call, the host's own comfy.samplers.sampling_function: the batched
cond+uncond UNet forward, CFG, then the post-CFG hooks. The guided variants carry the real hook, attached
by the IQAGradientGuidance node (scale 0.1, every step, rms normalization); the unguided variant is the
same call on the model without it. Variants are interleaved round by round (median per variant) so that
drift and other processes on the machine hit all of them alike, and each timed call first waits (a few
seconds at most) for a quiet moment; the share of the cores that other processes used during the calls is
printed with the results. Every ratio is against the unguided call measured in the same run, both in
wall-clock time and in this process's CPU time.

Where the time goes is read from the same guided calls: the node's decoder and metric sources are wrapped
so that their copies (made once per run: every timed call repeats the same sigma, so they all belong to the
run that the warm-up call started, and the copy time is read from that call), the decode and the metric
forward are timed, and gradient hooks on the decoded
image and on the decoder's input time the two halves of the backward. The wrappers add only clock reads.

    OMP_NUM_THREADS=2 .venv/bin/python bench/gradient_guidance.py [--rounds 3] [--latent 64]
        [--configs taesd:256 taesd:512 vae:384 vae:512 vae:512:bfloat16] [--cheap-configs taesd:512] [--quiet-wait 15] [--mem-wait 180]
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import statistics
import tempfile
import threading
import time
from typing import Callable

import common

METRIC = "topiq_nr"
CHEAP_METRIC = "musiq"
SCALE = 0.1
SIGMA = 1.0  # the sigma of the timed call; inside the node's default window (the whole schedule)
CFG = 7.0
DECODER_NAMES = {"taesd": "TAESD", "vae": "full VAE"}
# The SD1.x KL VAE (AutoencoderKL, 83.7M parameters), as the host's comfy.sd.VAE configures it for SD1.x files.
SD_VAE_DDCONFIG = dict(
    double_z=True,
    z_channels=4,
    resolution=256,
    in_channels=3,
    out_ch=3,
    ch=128,
    ch_mult=[1, 2, 4, 4],
    num_res_blocks=2,
    attn_resolutions=[],
    dropout=0.0,
)
# The guided-step budgets (docs/performance.md), by (decoder, decode cap).
GOALS = {("taesd", 512): 1.5, ("vae", 512): 3.0}


def _tiny_models():
    """The tests' tiny_models module (deterministic weight fill), imported by path: benchmarks reuse it."""
    name = "iqa_bench_tiny_models"
    spec = importlib.util.spec_from_file_location(name, common.REPO / "tests" / "fixture_nodes" / "tiny_models.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def random_vaes(seed: int = 5) -> dict:
    """{"taesd": VAE, "vae": VAE}: host VAE objects around random TAESD and SD1.x KL weights.

    As in the tests, TAESD's last bias is raised by 0.5 (mid-grey images, few clamped pixels). Both are loaded
    through comfy.sd.VAE under inference mode, as the VAE Loader node does inside a prompt, so the pack's
    re-materialization does its real work.
    """
    import comfy.sd
    import comfy.taesd.taesd as taesd_mod
    import torch
    from comfy.ldm.models.autoencoder import AutoencoderKL

    fill_ = _tiny_models().fill_
    with torch.inference_mode(False):
        taesd = taesd_mod.TAESD()
        fill_(taesd, seed)
        with torch.no_grad():
            taesd.taesd_decoder[-1].bias += 0.5
        sd_taesd = {k: v.clone() for k, v in taesd.state_dict().items()}
        sd_taesd["vae_scale"] = torch.tensor(0.18215)  # what the VAE Loader adds for "taesd"
        kl = AutoencoderKL(ddconfig=SD_VAE_DDCONFIG, embed_dim=4)
        fill_(kl, seed + 1)
        sd_kl = {k: v.clone() for k, v in kl.state_dict().items()}
    del taesd, kl
    with torch.inference_mode():
        return {"taesd": comfy.sd.VAE(sd=sd_taesd), "vae": comfy.sd.VAE(sd=sd_kl)}


def random_metric(name: str):
    """A pyiqa metric with random weights, built offline."""
    import pyiqa
    import torch

    kw = dict(pretrained=False, backbone_pretrain=False) if name == "topiq_nr" else dict(pretrained=False)
    return pyiqa.create_metric(name, device=torch.device("cpu"), **kw)


class Clock:
    """Named marks of one guided call, set by the wrappers below: (wall-clock, process CPU) seconds each."""

    PARTS = ("copies", "decode fwd", "IQA fwd", "IQA bwd", "decode bwd", "rest of hook", "hook total")

    def __init__(self):
        self.marks: dict[str, tuple[float, float]] = {}

    def mark(self, name: str) -> None:
        self.marks[name] = (time.perf_counter(), time.process_time())

    def parts(self) -> dict[str, tuple[float, float]]:
        """Each part as (wall, cpu) seconds; "rest of hook" is the hook total less the named parts."""

        def span(a: str, b: str) -> tuple[float, float]:
            if a not in self.marks or b not in self.marks:  # copies are made at a run's first guided step only
                return (0.0, 0.0)
            return (self.marks[b][0] - self.marks[a][0], self.marks[b][1] - self.marks[a][1])

        def add(*spans):
            return tuple(sum(x) for x in zip(*spans))

        p = {
            "copies": add(span("hook_start", "decoder_copied"), span("metric_copy_start", "metric_copied")),
            "decode fwd": span("decode_start", "decode_end"),
            "IQA fwd": span("iqa_start", "iqa_end"),
            "IQA bwd": span("iqa_end", "iqa_bwd_end"),
            "decode bwd": span("iqa_bwd_end", "decode_bwd_end"),
            "hook total": span("hook_start", "hook_end"),
        }
        named = add(*(v for k, v in p.items() if k != "hook total"))
        p["rest of hook"] = (p["hook total"][0] - named[0], p["hook total"][1] - named[1])
        return p


def _busy_seconds() -> float:
    """CPU seconds that all processes have used since boot (all cores; /proc/stat, Linux)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class OthersCPU:
    """Share of the machine's cores that other processes used during the block (0 = quiet, 1 = all cores)."""

    def __enter__(self):
        self._w, self._c, self._b = time.perf_counter(), time.process_time(), _busy_seconds()
        return self

    def __exit__(self, *exc):
        wall = time.perf_counter() - self._w
        others = (_busy_seconds() - self._b) - (time.process_time() - self._c)
        self.share = max(0.0, others) / (wall * (os.cpu_count() or 1))


def wait_quiet(max_wait: float) -> float:
    """Wait (up to max_wait s) for a second in which other processes leave this process's threads their
    cores (they may use the cores it does not, plus a quarter of one); returns the share seen last.

    Why: with torch's OpenMP threads, one thread descheduled by another process stalls the others at every
    op's barrier, and a step then takes 3-5x longer in wall-clock and in CPU time alike (seen here with one
    other busy process on this 2-core machine). Other engineers' tests share the machine: this keeps most
    calls out of their busiest moments without ever blocking the benchmark.
    """
    import torch

    cores = os.cpu_count() or 1
    threshold = max(0.05, (cores - min(cores, torch.get_num_threads()) + 0.25) / cores)
    deadline = time.perf_counter() + max_wait
    while True:
        with OthersCPU() as o:
            time.sleep(1.0)
        if o.share < threshold or time.perf_counter() >= deadline:
            return o.share


def wait_for_memory(need: float, max_wait: float) -> None:
    """Wait (up to max_wait s) until the system has `need` bytes available: the full VAE's backward needs
    several GiB, and an out-of-memory kill on this shared machine would lose the whole run."""
    import psutil

    deadline = time.perf_counter() + max_wait
    while psutil.virtual_memory().available < need and time.perf_counter() < deadline:
        time.sleep(2.0)


def interleaved_times(
    variants: dict[str, Callable[[], None]], rounds: int, needs: dict[str, float], quiet_wait: float, mem_wait: float
) -> tuple[dict[str, list[tuple[float, float, float]]], dict[str, "PeakRSS"]]:
    """common.interleaved_medians' protocol: one warm-up call each, then the variants interleaved round by
    round. Keeps each timed call's (wall-clock s, process CPU s, other processes' share of the cores), and
    the peak RSS of each warm-up call (the first variant is primed by one extra call before, so that no
    variant's warm-up carries the process's first-call allocations). Before every call the system must have
    the variant's memory need available (guessed from `needs` for warm-ups, measured after), and timed calls
    wait up to quiet_wait s for a quiet second."""
    times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in variants}
    peaks: dict[str, PeakRSS] = {}
    next(iter(variants.values()))()  # prime
    for name, fn in variants.items():
        wait_for_memory(needs[name], mem_wait)
        with PeakRSS() as peaks[name]:
            fn()  # warm-up
        needs[name] = peaks[name].peak - peaks[name].before + 2**30
    for _ in range(rounds):
        for name, fn in variants.items():
            wait_for_memory(needs[name], mem_wait)
            if quiet_wait > 0:
                wait_quiet(quiet_wait)
            with OthersCPU() as o:
                w, c = time.perf_counter(), time.process_time()
                fn()
                w, c = time.perf_counter() - w, time.process_time() - c
            times[name].append((w, c, o.share))
    return times, peaks


def instrument(patched, clock: Clock) -> None:
    """Wrap the node's hook (one metric term) so that one call leaves its part times in `clock`.

    The hook object stays the node's GradientGuidance; only its decoder and metric sources and the list
    entry that the sampler calls are wrapped.
    """
    hooks = patched.model_options["sampler_post_cfg_function"]
    hook = hooks[-1]
    assert len(hook.terms) == 1, "the part clock handles one metric term"
    src, term = hook.decoder, hook.terms[0]

    def build_decoder(device):
        real = src.build(device)
        clock.mark("decoder_copied")

        def decode(z):
            clock.mark("decode_start")
            if z.requires_grad:
                z.register_hook(lambda g: clock.mark("decode_bwd_end"))
            images = real(z)
            images.register_hook(lambda g: clock.mark("iqa_bwd_end"))
            clock.mark("decode_end")
            return images

        return decode

    def build_term(device):
        clock.mark("metric_copy_start")
        real = term.build(device)
        clock.mark("metric_copied")

        def score(images):
            clock.mark("iqa_start")
            out = real(images)
            clock.mark("iqa_end")
            return out

        return score

    hook.decoder = dataclasses.replace(src, build=build_decoder)
    hook.terms = (dataclasses.replace(term, build=build_term),)

    def timed(args):
        clock.mark("hook_start")
        out = hook(args)
        clock.mark("hook_end")
        return out

    hooks[-1] = timed


def clocked(patched, clock: Clock, make_call: Callable) -> tuple[Callable[[], None], list]:
    """(a call of the instrumented model, the list that each call appends its part times to)."""
    instrument(patched, clock)
    call, records = make_call(patched), []

    def run() -> None:
        clock.marks.clear()
        call()
        records.append(clock.parts())

    return run, records


def guided_model(pack, model, metric, vae, cap: int, precision: str = "auto"):
    """The node's output model: IQA Gradient Guidance with its defaults except the decode cap and precision."""
    node = pack.nodes.gradient_guidance.IQAGradientGuidance()
    return node.apply(
        model=model,
        iqa_model=metric,
        vae=vae,
        scale=SCALE,
        start_percent=0.0,
        end_percent=1.0,
        every_n_steps=1,
        direction="maximize",
        target_z=2.0,
        max_decode_size=cap,
        precision=precision,
    )[0]


class PeakRSS:
    """Peak resident memory while the block runs (a thread reads RSS every 2 ms), after freed heap has been
    returned to the OS, so earlier variants' allocator slack does not count."""

    def __enter__(self):
        import psutil
        from quality_condition import rss  # gc + malloc_trim + RSS

        self._proc = psutil.Process(os.getpid())
        self.before = rss()
        self.peak = self.before
        self._stop = threading.Event()

        def poll():
            while not self._stop.is_set():
                self.peak = max(self.peak, self._proc.memory_info().rss)
                self._stop.wait(0.002)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def parse_config(text: str) -> tuple[str, int, str]:
    """decoder:cap[:precision] -> (decoder, cap, precision)."""
    decoder, cap, precision = (text.split(":") + ["auto"])[:3]
    if decoder not in DECODER_NAMES:
        raise SystemExit(f"unknown decoder {decoder!r} in {text!r}; use taesd:CAP[:PRECISION] or vae:CAP[:PRECISION]")
    return decoder, int(cap), precision


def label(decoder: str, cap: int, metric: str, precision: str = "auto") -> str:
    return f"{DECODER_NAMES[decoder]} @{cap}, {metric}" + ("" if precision == "auto" else f", {precision}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--latent", type=int, default=64)
    ap.add_argument(
        "--configs",
        nargs="+",
        default=["taesd:256", "taesd:512", "vae:384", "vae:512", "vae:512:bfloat16"],
        help=f"decoder:cap[:precision] guided with {METRIC}",
    )
    ap.add_argument(
        "--cheap-configs", nargs="*", default=["taesd:512"], help=f"decoder:cap pairs also guided with {CHEAP_METRIC}"
    )
    ap.add_argument(
        "--quiet-wait",
        type=float,
        default=15.0,
        help="seconds each timed call may wait for other processes to go quiet (0 = never wait)",
    )
    ap.add_argument(
        "--mem-wait",
        type=float,
        default=180.0,
        help="seconds a call may wait for enough free memory (the full VAE at 512 px needs several GiB)",
    )
    args = ap.parse_args()
    os.environ.setdefault("TORCH_HOME", tempfile.mkdtemp(prefix="iqa-bench-torch-"))  # pyiqa's cache, read at import
    os.environ["HF_HUB_OFFLINE"] = "1"
    wall0, load0 = time.perf_counter(), os.getloadavg()[0]
    pack = common.start_host()
    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    model = common.real_size_model("sd15")
    vaes = random_vaes()
    metrics = {METRIC: random_metric(METRIC)}
    if args.cheap_configs:
        metrics[CHEAP_METRIC] = random_metric(CHEAP_METRIC)

    runs = [(parse_config(c), METRIC) for c in args.configs] + [
        (parse_config(c), CHEAP_METRIC) for c in args.cheap_configs
    ]
    variants: dict[str, Callable[[], None]] = {"unguided": common.sampler_call(model, "sd15", args.latent, SIGMA, CFG)}
    needs = {"unguided": 2.0 * 2**30}  # bytes available before a call; replaced by the warm-up's measured peak
    records: dict[str, list[dict[str, float]]] = {}
    for (decoder, cap, precision), metric in runs:
        name = label(decoder, cap, metric, precision)
        patched = guided_model(pack, model, metrics[metric], vaes[decoder], cap, precision)
        variants[name], records[name] = clocked(
            patched, Clock(), lambda p: common.sampler_call(p, "sd15", args.latent, SIGMA, CFG)
        )
        # a first guess for the warm-up: the full VAE's backward at 512 px took ~7.5 GiB here, TAESD's < 1 GiB
        needs[name] = (1.0 + (7.5 if decoder == "vae" else 1.0) * (cap / 512) ** 2) * 2**30

    times, peaks = interleaved_times(variants, args.rounds, needs, args.quiet_wait, args.mem_wait)
    wall = {k: statistics.median(t[0] for t in v) for k, v in times.items()}
    cpu = {k: statistics.median(t[1] for t in v) for k, v in times.items()}
    per_round = {k: ", ".join(f"{t[0]:.1f} ({t[2]:.0%})" for t in v) for k, v in times.items()}
    pw, pc = wall["unguided"], cpu["unguided"]
    # medians per part over the timed rounds (record 0 is the warm-up), so parts need not add up exactly
    parts = {
        k: {p: tuple(statistics.median(r[p][i] for r in rec[1:]) for i in (0, 1)) for p in Clock.PARTS}
        for k, rec in records.items()
    }
    for k, rec in records.items():  # the copies are made once per run: at the warm-up call, the run's first guided step
        parts[k]["copies"] = rec[0]["copies"]

    threads = torch.get_num_threads()
    where = f"CPU, {threads} threads, SD1.5 UNet, {args.latent}x{args.latent} latent, cfg batch 2"
    how = f"medians of {args.rounds} interleaved rounds"
    cols = [label(d, c, METRIC, pr) for (d, c, pr), m in runs if m == METRIC]

    def cell(w: float, c: float) -> str:
        return f"{w:.2f} s ({w / pw:.2f}x; CPU {c / pc:.2f}x)"

    rows = [["plain step (unguided call)"] + [cell(pw, pc) for _ in cols]]
    rows += [
        [p if p != "copies" else "copies of decoder + metric (once per run)"] + [cell(*parts[c][p]) for c in cols]
        for p in Clock.PARTS
    ]
    rows.append(["guided step"] + [cell(wall[c], cpu[c]) for c in cols])
    common.print_table(
        f"Where the time goes in one guided step: wall seconds (ratio to the plain step; CPU: the same "
        f"ratio in process CPU time) ({where}; {how})",
        ["part"] + cols,
        rows,
    )

    def verdict(ratio: float, goal: float) -> str:
        return "met" if ratio <= goal else f"missed by {ratio / goal:.2f}x"

    rows = []
    for (decoder, cap, precision), metric in runs:
        name = label(decoder, cap, metric, precision)
        goal = GOALS.get((decoder, cap)) if metric == METRIC else None
        rows.append(
            [
                name,
                f"{wall[name]:.2f} s",
                f"{wall[name] / pw:.2f}",
                f"{cpu[name] / pc:.2f}",
                per_round[name],
                ""
                if goal is None
                else f"<= {goal}: wall {verdict(wall[name] / pw, goal)}, CPU {verdict(cpu[name] / pc, goal)}",
            ]
        )
    common.print_table(
        f"Guided step / unguided step (unguided: {pw:.2f} s wall, {pc:.2f} s CPU, rounds {per_round['unguided']}; "
        f"{where}; {how})",
        [
            "decoder @ cap, metric",
            "guided step (wall)",
            "ratio (wall)",
            "ratio (CPU time)",
            "wall s per round (other processes' share of the cores)",
            "goal",
        ],
        rows,
    )

    base = peaks["unguided"]
    rows = [
        [
            name,
            f"{m.before / 2**30:.2f} GiB",
            f"{m.peak / 2**30:.2f} GiB",
            f"{(m.peak - m.before) / 2**30:.2f} GiB",
            f"{m.peak / base.peak:.2f}",
        ]
        for name, m in peaks.items()
    ]
    common.print_table(
        "Peak resident memory during one step (each variant's warm-up call, after freed heap was returned "
        "to the OS; RSS includes the UNet, both decoders and the metrics)",
        ["variant", "RSS before", "peak RSS", "peak - before", "peak / unguided peak"],
        rows,
    )
    print(
        f"\nwhole run: {time.perf_counter() - wall0:.0f} s; 1-min load average {load0:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end, on {os.cpu_count()} CPUs (other processes share them)"
    )


if __name__ == "__main__":
    main()
