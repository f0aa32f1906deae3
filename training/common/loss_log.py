"""The loss log of a run: loss.csv (always), TensorBoard events (when tensorboard is installed) and loss.png.

Only the main process writes. On resume the CSV is cut back to the checkpoint's step, so a resumed run's
log reads as the uninterrupted run's would.
"""

from __future__ import annotations

import csv
from pathlib import Path

COLUMNS = ("step", "loss", "lr", "images", "seconds")


class LossLog:
    def __init__(self, out: Path, main: bool, resume_step: int = 0, ylabel: str = "diffusion loss (MSE)"):
        self.path, self.main, self.rows, self.ylabel = Path(out) / "loss.csv", main, [], ylabel
        self.writer = None
        if not main:
            return
        kept = []
        if resume_step and self.path.is_file():
            with self.path.open() as f:
                kept = [r for r in csv.DictReader(f) if int(r["step"]) <= resume_step]
        elif not resume_step and self.path.is_file():
            self.path.unlink()
        Path(out).mkdir(parents=True, exist_ok=True)
        with self.path.open("w", newline="") as f:
            w = csv.DictWriter(f, COLUMNS)
            w.writeheader()
            w.writerows(kept)
        self.tb = self._tensorboard(Path(out))

    @staticmethod
    def _tensorboard(out: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return None
        return SummaryWriter(str(out / "tensorboard"))

    def add(self, step: int, loss: float, lr: float, images: int, seconds: float) -> None:
        if not self.main:
            return
        self.rows.append({"step": step, "loss": f"{loss:.6g}", "lr": lr, "images": images, "seconds": f"{seconds:.1f}"})
        if self.tb is not None:
            self.tb.add_scalar("loss", loss, step)

    def flush(self) -> None:
        if not self.main:
            return
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, COLUMNS).writerows(self.rows)
        self.rows = []
        plot_loss(self.path, self.path.with_suffix(".png"), self.ylabel)

    def close(self) -> None:
        self.flush()
        if self.main and self.tb is not None:
            self.tb.close()


def plot_loss(csv_path: Path, png_path: Path, ylabel: str = "diffusion loss (MSE)") -> None:
    """The loss curve (and its running mean, since per-step diffusion losses are noisy) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with Path(csv_path).open() as f:
        rows = list(csv.DictReader(f))
    if not rows:
        return
    steps = [int(r["step"]) for r in rows]
    loss = [float(r["loss"]) for r in rows]
    k = max(1, len(loss) // 20)
    smooth = [sum(loss[max(0, i - k + 1) : i + 1]) / len(loss[max(0, i - k + 1) : i + 1]) for i in range(len(loss))]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(steps, loss, lw=0.6, alpha=0.5, label="loss")
    ax.plot(steps, smooth, lw=1.5, label=f"mean of {k}")
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(png_path)
    plt.close(fig)
