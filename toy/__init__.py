"""The toy world: a tiny pixel-space diffusion model trained from scratch on degraded photo patches that
ship in PyPI wheels, so the IQA-Adapter can be trained and proven end to end on a CPU.

Plain torch plus the host's own model classes (imported lazily); knows nothing of node classes."""
