"""Where Python finds the NIQE parameters that scripts/prepare_test_data.sh converts: their one spelling.

pyiqa looks the file up by NIQE_FILE in its weights folder. scripts/test.sh exports IQA_TEST_NIQE_MAT (the
file itself); without it, the file is where prepare_test_data.sh puts it by default. Tests, the toy sweep
and the benchmarks read these names rather than spelling the path again.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
NIQE_FILE = "niqe_modelparameters.mat"
NIQE_MAT = Path(os.environ.get("IQA_TEST_NIQE_MAT") or REPO / ".venv" / "test-data" / NIQE_FILE)
