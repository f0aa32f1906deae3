#!/usr/bin/env bash
# Prepare the test data that must not be committed (idempotent; a second run costs nothing).
# NIQE's pristine-image parameters ship in PyPI packages (iqa-torch 1.2.1 wheel, or basicsr 1.4.2 sdist;
# both Apache-2.0) as niqe_pris_params.npz. They are fetched with pip into a cache dir outside the
# tracked tree and re-saved as the .mat file pyiqa's NIQE reads (mu_prisparam, cov_prisparam).
# Prints the data directory. Usage: scripts/prepare_test_data.sh   (IQA_TEST_DATA=/dir to move it)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${VENV:-$root/.venv}"
py="$venv/bin/python"
data="${IQA_TEST_DATA:-$venv/test-data}"
mat="$data/niqe_modelparameters.mat"
npz_sha=2a7c182a68c9e7f1b2e2e5ec723279d6f65d912b6fcaf37eb2bf03d7367c4296
if [[ -f "$mat" && -f "$mat.ok" ]]; then echo "$data"; exit 0; fi
mkdir -p "$data/pkgs"
fetch() {  # fetch <pip spec> <extra pip args...>: download one package, no dependencies
  "$py" -m pip download -q --disable-pip-version-check --no-deps -d "$data/pkgs" "$@" >&2
}
fetch iqa-torch==1.2.1 --only-binary=:all: || fetch basicsr==1.4.2 --no-binary=:all: || {
  echo "prepare_test_data: could not download iqa-torch 1.2.1 or basicsr 1.4.2 from PyPI" >&2; exit 1; }
"$py" - "$data/pkgs" "$mat" "$npz_sha" <<'PY'
import hashlib, io, sys, tarfile, zipfile
from pathlib import Path
import numpy as np, scipy.io

pkgs, mat, want = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
blob = None
for f in sorted(pkgs.iterdir()):
    if f.suffix == ".whl":
        with zipfile.ZipFile(f) as z:
            names = [n for n in z.namelist() if n.endswith("niqe_pris_params.npz")]
            blob = z.read(names[0]) if names else None
    elif f.name.endswith(".tar.gz"):
        with tarfile.open(f) as t:
            names = [m for m in t.getmembers() if m.name.endswith("niqe_pris_params.npz")]
            blob = t.extractfile(names[0]).read() if names else None
    if blob:
        break
if not blob:
    sys.exit("prepare_test_data: no niqe_pris_params.npz in " + ", ".join(p.name for p in pkgs.iterdir()))
if hashlib.sha256(blob).hexdigest() != want:
    sys.exit("prepare_test_data: niqe_pris_params.npz does not have the expected sha256")
p = np.load(io.BytesIO(blob))
scipy.io.savemat(mat, {"mu_prisparam": p["mu_pris_param"], "cov_prisparam": p["cov_pris_param"]})
print(f"prepare_test_data: wrote {mat}", file=sys.stderr)
PY
touch "$mat.ok"
echo "$data"
