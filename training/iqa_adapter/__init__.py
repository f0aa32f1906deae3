"""The IQA-Adapter trainer (`score`, `train`, `export`, `convert`): score.py -> train.py (arguments) and
loop.py (the steps) -> export.py; convert.py reads the official script's output. Uses training.common only."""
