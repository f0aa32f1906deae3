"""The training tools: two trainers and what they share. `python -m training {score,train,export,convert,
genziqa-train} --help`; run from the pack's folder, each also under `accelerate launch`.

- common/       what both trainers use: the host binding (host.py: import it, read a base checkpoint) and
                the checkpoint formats that plug-ins register for it (base_formats.py), datasets, per-sample
                draws, run checkpoints, the loss log, norm tables, autograd safety, errors.
- iqa_adapter/  the IQA-Adapter trainer: score a dataset, train, export, convert the official script's output.
- genziqa/      the GenzIQA trainer: genziqa-train.
- cli.py        the command line: subcommand -> the module that runs it.

Imports go one way, trainer -> common (never back, never between the trainers), and nothing here imports
the toy world: toy/ registers its checkpoint format with common/base_formats.py (`--plugin toy`).
"""
