"""IQA gradient guidance in x0 space: nudge the sampler's denoised latent up the gradient of an IQA score.

Plain torch; the host is reached only through the post-CFG hook's `args` dict and duck-typed objects.

One guided model evaluation:
  x0 = denoised (detached copy, requires grad)
  img = decode(downscale(x0))                 differentiable decoder, optional latent downscale
  J = sum_items sum_terms w_k * f_k(score_k(img))
  g = dJ/dx0                                  per item (J is a sum over items, so items do not mix)
  g = g / rms(g) per item, then clamp(g, -clip, clip)
  denoised' = denoised + scale * w(sigma) * g
The whole thing runs under inference_mode(False) + enable_grad on networks re-materialized outside
inference mode (the prompt runs under torch.inference_mode). The copies are made at the first guided step
of a run and kept for its later steps: on a GPU, copying topiq_nr took longer than decoding and scoring
(bench/gpu.py). They are dropped after the run's last call (the schedule's last sigma where the host
passes the schedule, else the model's smallest sigma), when the sigma window is left, when a new run
starts, on any error in the hook, and when the run ends however it ends: an interrupt or a failure is
raised outside the hook (in the sampler's progress callback), so the node also asks the host to call
end_run() after sampling (nodes/host.py), and where the host has no such wrapper the run's own
conditioning objects, held weakly, say when it is over (run_anchor).
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

DIRECTIONS = ("maximize", "target z-score")
NORMALIZATIONS = ("rms", "none")
SIGMA_WEIGHTINGS = ("constant", "snr")

ImageFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ScoreTerm:
    """One IQA metric in the objective.

    build(device) returns a differentiable raw-score function images [B,3,H,W] in [0,1] -> [B]; it is
    called once per sampling run, outside inference mode, so it may (and should) re-materialize weights.
    """

    name: str
    build: Callable[[torch.device], ImageFn]
    lower_better: bool = False
    weight: float = 1.0
    stats: Optional[tuple[float, float]] = None  # (mean, std) of the raw score on the training set


@dataclass(frozen=True)
class DecoderSource:
    """A differentiable latent -> image map (images in [0,1]); build(device) is called once per sampling run."""

    build: Callable[[torch.device], ImageFn]
    latent_channels: int
    upscale_ratio: int = 8
    name: str = "decoder"


@dataclass(frozen=True)
class GuidanceConfig:
    scale: float = 0.1
    sigma_start: float = float("inf")  # guidance runs while sigma_end <= sigma <= sigma_start
    sigma_end: float = 0.0
    every_n_steps: int = 1
    direction: str = "maximize"
    target_z: float = 2.0
    max_decode_size: int = 512  # long side of the decoded image in px; 0 = decode at full size
    normalization: str = "rms"
    clip: float = 0.0  # elementwise clip of the normalized gradient; 0 = off
    sigma_weighting: str = "constant"
    final_sigma: float = 0.0  # the model's smallest sigma: a call at or below it ends the run and drops the copies


def objective(
    raw_scores: Sequence[torch.Tensor], terms: Sequence[ScoreTerm], direction: str, target_z: float
) -> torch.Tensor:
    """Per-item objective [B], higher is better, from each term's raw scores [B].

    maximize: sum_k w_k * s_k * raw_k / std_k (s_k = -1 for lower-better metrics; std_k = 1 without stats),
    so metrics with different units weigh by their spread, not their units.
    target z-score: -sum_k w_k * ((raw_k - mean_k) / std_k - target)^2, on the table's raw z-scores.
    """
    total = 0.0
    for raw, term in zip(raw_scores, terms):
        if direction == "maximize":
            spread = term.stats[1] if term.stats else 1.0
            f = (-raw if term.lower_better else raw) / spread
        else:
            mean, std = term.stats  # checked at node execution
            f = -(((raw - mean) / std - target_z) ** 2)
        total = total + term.weight * f
    return total


def normalize_gradient(g: torch.Tensor, normalization: str, clip: float) -> torch.Tensor:
    """Per-item RMS normalization (so `scale` is in latent RMS units per step), then elementwise clip."""
    if normalization == "rms":
        rms = g.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
        g = g / rms.view(-1, *([1] * (g.ndim - 1)))
    if clip > 0:
        g = g.clamp(-clip, clip)
    return g


def sigma_weight(sigma: float, weighting: str) -> float:
    """constant: 1. snr: 1/(1+sigma^2), the share of x_t's variance that is signal (VP view of an EPS
    model), so early steps, whose x0 estimate is a blurry mean, are pushed less."""
    return 1.0 if weighting == "constant" else 1.0 / (1.0 + sigma * sigma)


def decode_size_factor(latent_hw: tuple[int, int], upscale: int, max_decode_size: int) -> float:
    """Latent scale factor so that the decoded long side is at most max_decode_size (1.0 if it fits)."""
    long_side = max(latent_hw) * upscale
    if max_decode_size <= 0 or long_side <= max_decode_size:
        return 1.0
    return max_decode_size / long_side


def guidance_gradient(
    x0: torch.Tensor,
    decoder: ImageFn,
    scorers: Sequence[ImageFn],
    terms: Sequence[ScoreTerm],
    cfg: GuidanceConfig,
    upscale: int,
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """(gradient of the objective w.r.t. x0 [B,...], per-item objective [B], raw scores per term).

    Must be called with grad enabled and inference mode off; x0 is detached and copied here.
    """
    x = x0.detach().clone().float().requires_grad_(True)
    factor = decode_size_factor(tuple(x.shape[-2:]), upscale, cfg.max_decode_size)
    z = x
    if factor < 1.0:
        size = [max(1, round(s * factor)) for s in x.shape[-2:]]
        z = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    images = decoder(z)
    raws = [score(images).reshape(-1).float() for score in scorers]
    for raw, term in zip(raws, terms):
        if raw.shape[0] != x.shape[0]:
            raise RuntimeError(f"IQA metric {term.name} returned {raw.shape[0]} scores for a batch of {x.shape[0]}.")
    per_item = objective(raws, terms, cfg.direction, cfg.target_z)
    (grad,) = torch.autograd.grad(per_item.sum(), x)
    return grad, per_item.detach(), [r.detach() for r in raws]


def run_anchor(args: dict) -> Any:
    """An object that lives as long as the sampling run and no longer, or None.

    The host makes the conditioning objects in each cond's "model_conds" anew for every run (process_conds)
    and drops them with the run's conds, however the run ends. The first one that takes a weak reference
    serves; the conds list itself would too, but a list cannot be referenced weakly.
    """
    for c in args.get("cond") or ():
        for value in (c.get("model_conds") or {}).values() if isinstance(c, dict) else ():
            try:
                weakref.ref(value)
            except TypeError:
                continue
            return value
    return None


@dataclass
class RunState:
    """Per-run bookkeeping of one hook.

    A run starts at the first call, when sigma goes up, or when the run token (run_anchor, else the
    sampler's conditioning list) is another object than on the last call. The host builds both anew for
    every sampling run, so a run that was interrupted, failed or stopped on a partial schedule cannot leak
    its step count into the next one, even when the next run starts at the same sigma. A token that takes
    a weak reference is held weakly, and its end ends the run: the copies go even when no later call comes.
    Any other token is held (not just its id, which Python reuses) until the next run replaces it.
    """

    last_sigma: Optional[float] = None
    run_token: Any = None  # the current run's token, or a weak reference to it
    run_id: int = 0  # counts runs, so that a late end of an old run leaves the current one alone
    calls_in_window: int = 0
    history: list = field(default_factory=list)  # (sigma, per-item objective, raw scores per term) of guided calls
    copies: dict = field(default_factory=dict)  # device -> (decoder fn, scorer fns), kept for the run

    @property
    def guided(self) -> int:
        return len(self.history)

    def _holds(self, token: Any) -> bool:
        held = self.run_token() if isinstance(self.run_token, weakref.ref) else self.run_token
        return held is token

    def observe(self, sigma: float, run_token: Any = None) -> bool:
        """Record a call; True if it starts a new run (state reset)."""
        new_run = (
            self.last_sigma is None
            or sigma > self.last_sigma * (1 + 1e-6) + 1e-12
            or (run_token is not None and not self._holds(run_token))
        )
        if new_run:
            self.run_id += 1
            self.calls_in_window = 0
            self.history = []
            self.copies.clear()
            self._hold(run_token)
        self.last_sigma = sigma
        return new_run

    def _hold(self, token: Any) -> None:
        try:
            self.run_token = weakref.ref(token)
        except TypeError:
            self.run_token = token
        else:
            weakref.finalize(token, self.end_run, self.run_id)

    def end_run(self, run_id: Optional[int] = None) -> None:
        """The run is over: drop its copies (history stays for reports). run_id: only if it is still that run."""
        if run_id is None or run_id == self.run_id:
            self.copies.clear()


class GradientGuidance:
    """The post-CFG hook. Immutable config and shared heavy references; only RunState changes, per run.

    One hook serves every clone of the guided model: the newest host's clone() shares it (it copies only
    the dicts and lists of model_options), and __deepcopy__ returning self makes older hosts' deep copy share
    it too, so both behave alike. Sharing is safe because the state belongs to the current run, not to a
    clone: the host runs one sampler at a time, and each run (a new conditioning list, or sigma going up)
    starts from an empty RunState (RunState.observe).
    """

    def __init__(self, cfg: GuidanceConfig, decoder: DecoderSource, terms: Sequence[ScoreTerm]):
        self.cfg = cfg
        self.decoder = decoder
        self.terms = tuple(terms)
        self.state = RunState()

    def __deepcopy__(self, memo: dict) -> "GradientGuidance":
        return self  # shared by every clone, as on the newest host; no weight or state copies

    def end_run(self) -> None:
        """Called by the host when a sampling run ends, however it ends (nodes/host.py release_after_sampling)."""
        self.state.end_run()

    def in_window(self, sigma: float) -> bool:
        return self.cfg.sigma_end <= sigma <= self.cfg.sigma_start

    def __call__(self, args: dict) -> torch.Tensor:
        denoised: torch.Tensor = args["denoised"]
        sigma = float(torch.as_tensor(args["sigma"]).detach().flatten().max())
        st = self.state
        anchor = run_anchor(args)
        if st.observe(sigma, args.get("cond") if anchor is None else anchor):
            log.debug("IQA gradient guidance: new run at sigma %.4g", sigma)
        try:
            if not self.in_window(sigma):
                return denoised
            index = st.calls_in_window
            st.calls_in_window += 1
            if index % max(1, self.cfg.every_n_steps):
                return denoised
            return self._guide(denoised, sigma)
        finally:
            if sigma < self.cfg.sigma_end or sigma <= self._last_sigma(args) * (1 + 1e-4):
                st.copies.clear()  # past the window, or the run's last step: no more guided steps in this run

    def _last_sigma(self, args: dict) -> float:
        """The run's last sigma: the schedule's last non-zero one where the host passes it
        (transformer_options["sample_sigmas"], upstream ComfyUI), else the model's smallest sigma."""
        sigmas = args.get("model_options", {}).get("transformer_options", {}).get("sample_sigmas")
        if torch.is_tensor(sigmas):
            nonzero = sigmas[sigmas > 0]
            if nonzero.numel():
                return float(nonzero[-1])
        return self.cfg.final_sigma

    def _copies(self, device: torch.device) -> tuple[ImageFn, list[ImageFn]]:
        """The differentiable decoder and scorers for this run on `device`, made at its first guided step."""
        st = self.state
        built = st.copies.get(device)
        if built is None:
            built = st.copies[device] = (self.decoder.build(device), [t.build(device) for t in self.terms])
        return built

    def _guide(self, denoised: torch.Tensor, sigma: float) -> torch.Tensor:
        st, cfg = self.state, self.cfg
        try:
            with torch.inference_mode(False), torch.enable_grad():
                decoder, scorers = self._copies(denoised.device)
                grad, per_item, raws = guidance_gradient(
                    denoised, decoder, scorers, self.terms, cfg, self.decoder.upscale_ratio
                )
                g = normalize_gradient(grad, cfg.normalization, cfg.clip)
            ok = torch.isfinite(g).flatten(1).all(1) & torch.isfinite(per_item)
            if not bool(ok.all()):
                log.warning(
                    "IQA gradient guidance: non-finite gradient or score for batch item(s) %s at sigma %.4g; "
                    "their correction is skipped this step.",
                    (~ok).nonzero().flatten().tolist(),
                    sigma,
                )
                g = torch.where(ok.view(-1, *([1] * (g.ndim - 1))), g, torch.zeros_like(g))
            step = cfg.scale * sigma_weight(sigma, cfg.sigma_weighting)
            st.history.append((sigma, per_item.cpu(), [r.cpu() for r in raws]))
            log.debug(
                "IQA gradient guidance: step %d at sigma %.4g, objective %s",
                st.guided,
                sigma,
                st.history[-1][1].tolist(),
            )
            return denoised + (step * g).to(denoised.dtype)
        except BaseException:
            st.copies.clear()  # a failed step leaves nothing behind
            raise
