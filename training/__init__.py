"""Make IQA-Adapters: score a dataset with pyiqa metrics, train the adapter, export it, convert the official
script's output.

Plain torch plus the pack's core (adapter/); the host (ComfyUI) is reached only through training/host.py.
Run from the pack's folder: `python -m training {score,train,export,convert} --help`. Every subcommand also
runs under `accelerate launch` (score and train shard their work across the processes).
"""
