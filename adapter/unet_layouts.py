"""Block layouts of the SD1.5 and SDXL UNets (and the toy model's), in the host's UNetModel config terms: the one table of them.

Which blocks of a UNet hold cross-attention (attn2) layers, and how many transformer blocks each has,
decides how IP-Adapter layers map onto the host model. The checkpoint family check, GenzIQA's layer
selection, the benchmarks' real-size UNets and the tests' tiny ones all rest on these layouts, so they
read them here rather than restating them. SD2.x has the SD1.5 block layout (with a wider context).

Plain data and pure functions, no imports: the benchmarks and test fixtures load this file by path.
"""

from __future__ import annotations

# Host terms: transformer_depth per input block after the first (taken front to back),
# transformer_depth_output per output block (taken back to front), transformer_depth_middle.
BLOCK_LAYOUTS: dict[str, dict] = {
    # SD1.5: attention at input 1,2,4,5,7,8, output 3..11, middle; depth 1 each (16 attn2 layers).
    "sd15": dict(
        channel_mult=(1, 2, 4, 4),
        num_res_blocks=(2, 2, 2, 2),
        transformer_depth=(1, 1, 1, 1, 1, 1, 0, 0),
        transformer_depth_output=(1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0),
        transformer_depth_middle=1,
        use_linear_in_transformer=False,
    ),
    # SDXL: input 4,5 (depth 2), 7,8 (10); output 0,1,2 (10), 3,4,5 (2); middle (10) (70 attn2 layers).
    "sdxl": dict(
        channel_mult=(1, 2, 4),
        num_res_blocks=(2, 2, 2),
        transformer_depth=(0, 0, 2, 2, 10, 10),
        transformer_depth_output=(0, 0, 0, 2, 2, 2, 10, 10, 10),
        transformer_depth_middle=10,
        use_linear_in_transformer=True,
    ),
    # The toy model (weights/toy, toy/model.py): input 3, output 2,3, middle; depth 1 each (4 attn2 layers in
    # its UNet; its pixel refiner adds a fifth, ("output", 4, 0), through extra_attn2_blocks, adapter/layers.py).
    "toy": dict(
        channel_mult=(1, 1),
        num_res_blocks=(1, 1),
        transformer_depth=(0, 1),
        transformer_depth_output=(1, 1, 0, 0),
        transformer_depth_middle=1,
        use_linear_in_transformer=True,
    ),
}

# The host UNetModel options every SD1.5/SDXL UNet shares (4 latent channels, spatial transformers, no
# temporal layers, no gradient checkpointing), beside the block layout.
SD_UNET_OPTIONS: dict = dict(
    in_channels=4,
    out_channels=4,
    use_spatial_transformer=True,
    legacy=False,
    use_checkpoint=False,
    use_temporal_attention=False,
    use_temporal_resblock=False,
)

# Text-encoder context width of the real models (SD2.x: the SD1.5 layout with a wider context).
CONTEXT_DIMS: dict[str, int] = {"sd15": 768, "sd2": 1024, "sdxl": 2048}


def unet_config(layout: str) -> dict:
    """The layout as host UNetModel keyword arguments, with fresh lists (the host takes lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in BLOCK_LAYOUTS[layout].items()}


def attn2_sites(layout: str) -> tuple[tuple[str, int, int], ...]:
    """Every attn2 layer of the layout as (block, index, depth): input blocks, the middle block, output blocks.

    The block index is the host's (input_blocks[0] is the input conv, each level but the last ends in a
    downsample block; the middle block is index 0).
    """
    lay = BLOCK_LAYOUTS[layout]
    depths = list(lay["transformer_depth"])
    sites: list[tuple[str, int, int]] = []
    index = 0
    for level, res_blocks in enumerate(lay["num_res_blocks"]):
        for _ in range(res_blocks):
            index += 1
            sites += [("input", index, d) for d in range(depths.pop(0))]
        if level < len(lay["num_res_blocks"]) - 1:
            index += 1  # downsample
    sites += [("middle", 0, d) for d in range(lay["transformer_depth_middle"])]
    out_depths = list(lay["transformer_depth_output"])
    for index in range(len(out_depths)):
        sites += [("output", index, d) for d in range(out_depths.pop())]
    return tuple(sites)


def attn2_layer_count(layout: str) -> int:
    """How many cross-attention layers a UNet of the layout has (SD1.5 16, SDXL 70)."""
    return len(attn2_sites(layout))


def attn2_checkpoint_mults(layout: str) -> tuple[int, ...]:
    """The channel multiplier of every attn2 layer in checkpoint order (input blocks, output blocks, middle).

    A layer's width is the model's base width times its multiplier, so the widths of a file's layers tell
    which layout it was made for even when some layers are missing.
    """
    lay = BLOCK_LAYOUTS[layout]
    mult, res = lay["channel_mult"], lay["num_res_blocks"]
    depths = list(lay["transformer_depth"])
    out: list[int] = []
    for level, blocks in enumerate(res):
        for _ in range(blocks):
            out += [mult[level]] * depths.pop(0)
    out_depths = list(lay["transformer_depth_output"])
    for level in reversed(range(len(mult))):
        for _ in range(res[level] + 1):
            out += [mult[level]] * out_depths.pop()
    out += [mult[-1]] * lay["transformer_depth_middle"]
    return tuple(out)
