"""Keep the pack's attn2 patches working when another pack patches the same layers after it, and check that
every patched layer runs.

The host looks an attn2 replace patch up by the full site key (block, id, depth) first and by (block, id)
second, and calls only the one it finds. The pack registers full keys, so:
  * a patch another node registers later under (block, id) would never be called: the pack's full key
    shadows it. The watch below hands the live attn2 table to the pack's patch, which then calls that
    later patch for its base term, as the host would have without the pack;
  * a patch registered later under the full key replaces the pack's: nothing the pack can do keeps its
    term on that layer. The watch sees it on the model call and logs a warning that names the other
    patch and the order that works.
The watch is an input-block patch: the host keeps those in a list (so later nodes cannot displace it) and
calls each with the per-call transformer_options after every input block. Input block 0 of an SD-family
UNet is the input convolution, so the table is in place before the first cross-attention runs.

Layer coverage: until the first sampling step has been checked, the watch also hands a set to the pack's
patches, and each adds the site key it was called for. Its post-CFG method (the end of a step, after every
model call of it) compares that set with the sites the adapters patched and logs one warning for sites that
never ran: the host asked for another key there (a renamed block) or never ran their attention. After that
check the set is no longer handed on, so later steps pay nothing.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

LIVE_ATTN2_KEY = "iqa_adapter_live_attn2"  # transformer_options entry: the attn2 replace table of this call
SITES_RUN_KEY = "iqa_adapter_sites_run"  # transformer_options entry: the set of site keys whose patch ran


class Attn2Watch:
    """Input-block patch: publish the live attn2 table, warn once per foreign patch that replaced the pack's,
    and (as a post-CFG function, after_step) check once that every patched site ran."""

    is_iqa_adapter_watch = True

    def __init__(self, site_keys: tuple[tuple, ...]):
        self.site_keys = site_keys
        self._warned: set[str] = set()
        self._sites_run: set[tuple] = set()
        self._replaced: set[tuple] = set()
        self._labels: tuple[str, ...] = ()
        self._armed = False  # the set was handed to a model call since the last step's end
        self._checked = False

    def __deepcopy__(self, memo: dict) -> "Attn2Watch":
        return self  # one watch for every clone, as the newest host's clone() shares it anyway

    def __call__(self, h: Any, transformer_options: dict) -> Any:
        if transformer_options.get("block") != ("input", 0):
            return h
        table = transformer_options.get("patches_replace", {}).get("attn2", {})
        transformer_options[LIVE_ATTN2_KEY] = table
        replaced: dict[str, int] = {}
        for key in self.site_keys:
            patch = table.get(key)
            if patch is not None and not getattr(patch, "is_iqa_adapter_patch", False):
                name = _describe(patch)
                replaced[name] = replaced.get(name, 0) + 1
                self._replaced.add(key)
        for name, count in replaced.items():
            if name not in self._warned:
                self._warned.add(name)
                log.warning(
                    "IQA-Adapter: %s replaced the IQA-Adapter patch on %d of %d cross-attention layers. It was applied "
                    "after Quality Condition or Reference Quality Transfer, so the quality term is lost there unless it "
                    "calls the patch it replaced. Apply that node first and connect its MODEL output to the IQA-Adapter "
                    "node's model input: then both run.",
                    name,
                    count,
                    len(self.site_keys),
                )
        if not self._checked:
            transformer_options[SITES_RUN_KEY] = self._sites_run
            self._labels = _labels(table, self.site_keys)
            self._armed = True
        return h

    def after_step(self, args: dict) -> Any:
        """Post-CFG function: at the end of the first step that ran the UNet, warn once about patched sites
        whose patch was never called. Returns the denoised latent unchanged."""
        if self._armed and not self._checked:
            self._checked = True
            missing = [k for k in self.site_keys if k not in self._sites_run and k not in self._replaced]
            if missing:
                log.warning(
                    "IQA-Adapter: %d of %d cross-attention sites patched by %s never ran in the first sampling step: "
                    "%s. The quality term is missing there. The host did not look these keys up: it likely names "
                    "these blocks differently (a host that renamed a block, e.g. the middle block's id), or another "
                    "node replaced these layers' attention without the host's attn2 patch table.",
                    len(missing),
                    len(self.site_keys),
                    ", ".join(self._labels) or "IQA-Adapter",
                    ", ".join(str(k) for k in missing),
                )
            self._sites_run = set()
        return args["denoised"]


def record_site_run(extra_options: dict) -> None:
    """Called by the pack's attn2 patch: add the site the host called it for to the watch's set, if handed one."""
    run = extra_options.get(SITES_RUN_KEY)
    if run is not None:
        run.add((*extra_options.get("block", ()), extra_options.get("block_index", 0)))


def _labels(table: dict, site_keys: tuple[tuple, ...]) -> tuple[str, ...]:
    """The names of the conditions (one per adapter node) on the pack's patches at these sites."""
    names = {t.label for k in site_keys for t, _ in getattr(table.get(k), "contributions", ())}
    return tuple(sorted(names))


def later_block_patch(extra_options: dict, current: Any) -> Any:
    """The (block, id) patch that another node registered after the pack's, or None.

    `current` is what the pack's patch already calls for its base term (a foreign patch it wrapped when it
    was applied, or None); that one, and the pack's own patches, are not "later"."""
    table = extra_options.get(LIVE_ATTN2_KEY)
    if not table:
        return None
    patch = table.get(extra_options.get("block"))
    if patch is None or patch is current or getattr(patch, "is_iqa_adapter_patch", False):
        return None
    return patch


def _describe(patch: Any) -> str:
    """'the attn2 patch module.Name' for a function or a patch object (instances have no __qualname__)."""
    module = getattr(patch, "__module__", None) or type(patch).__module__
    name = getattr(patch, "__qualname__", None) or type(patch).__qualname__
    return f"the attn2 patch {module}.{name}"


def install_watch(model: Any, site_keys: tuple[tuple, ...]) -> None:
    """Add the watch to a (cloned) ModelPatcher once, as input-block patch and post-CFG function; later
    conditions on the same clone reuse it."""
    patches = model.model_options.get("transformer_options", {}).get("patches", {}).get("input_block_patch", [])
    if not any(getattr(p, "is_iqa_adapter_watch", False) for p in patches):
        watch = Attn2Watch(site_keys)
        model.set_model_input_block_patch(watch)
        model.set_model_sampler_post_cfg_function(watch.after_step)
