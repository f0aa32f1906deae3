"""The toy world: a tiny pixel-space diffusion model trained from scratch on degraded photo patches that
ship in PyPI wheels, so the IQA-Adapter can be trained and proven end to end on a CPU.

Plain torch plus the host's own model classes (imported lazily); knows nothing of node classes."""


def _register_with_training() -> None:
    """Plug the toy checkpoint format into training's base loader (training/common/base_formats.py), so that
    `python -m training train --plugin toy --base weights/toy/toy_base.safetensors` reads it while training
    never imports the toy; and the toy quality net into `embed` as the network of metric toy_quality. The host imports toy/ by path (toy/nodes), where the pack's training/ may not be
    importable: then there is nothing to plug into."""
    try:
        from training.common.base_formats import register_checkpoint_format
    except ModuleNotFoundError as exc:
        if exc.name and exc.name.split(".")[0] == "training":
            return
        raise

    def is_format(path):
        from .model import is_toy_checkpoint

        return is_toy_checkpoint(path)

    def load(path):
        from .model import load_toy_checkpoint

        return load_toy_checkpoint(path)

    register_checkpoint_format("toy", is_format, load)

    from training.iqa_adapter.embed import register_embedding_model

    def build_quality_net(_iqa_dirs, device):
        from training.common.core import guidance

        from .quality_iqa import load_iqa_model

        return load_iqa_model(guidance("iqa_models"), guidance("metric_specs"), device=device)

    register_embedding_model("toy_quality", build_quality_net)


_register_with_training()
