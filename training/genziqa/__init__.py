"""The GenzIQA trainer (`genziqa-train`): train.py (arguments and the loop), its labels, prompts, trainable
context and LoRA, and the trained file's percentile table. Uses training.common only."""
