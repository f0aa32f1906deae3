"""The one error type of the training tools: its message names the file or row at fault and says what to do."""

from __future__ import annotations


class TrainingError(Exception):
    """Bad input to score/train/export/convert/genziqa-train. The CLI prints the message alone, without a traceback."""
