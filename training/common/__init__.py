"""What the two trainers share: the host binding and its plug-in formats, datasets, draws, run checkpoints,
the loss log, norm tables, autograd safety and errors. Imports nothing from the trainers."""
