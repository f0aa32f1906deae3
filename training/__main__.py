"""`python -m training ...`: the command line (training/cli.py)."""

from training.cli import main

raise SystemExit(main())
