"""Keep the pack's attn2 patches working when another pack patches the same layers after it.

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
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

LIVE_ATTN2_KEY = "iqa_adapter_live_attn2"  # transformer_options entry: the attn2 replace table of this call


class Attn2Watch:
    """Input-block patch: publish the live attn2 table, and warn once per foreign patch that replaced the pack's."""

    is_iqa_adapter_watch = True

    def __init__(self, site_keys: tuple[tuple, ...]):
        self.site_keys = site_keys
        self._warned: set[str] = set()

    def __deepcopy__(self, memo: dict) -> "Attn2Watch":
        return self  # host clones share it: immutable keys, and one warning per foreign patch is enough

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
        return h


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
    """Add the watch to a (cloned) ModelPatcher once; later conditions on the same clone reuse it."""
    patches = model.model_options.get("transformer_options", {}).get("patches", {}).get("input_block_patch", [])
    if not any(getattr(p, "is_iqa_adapter_watch", False) for p in patches):
        model.set_model_input_block_patch(Attn2Watch(site_keys))
