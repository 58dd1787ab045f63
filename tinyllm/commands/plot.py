"""``python -m tinyllm plot``: a run's TensorBoard logs as PNG loss and learning-rate curves.

    python -m tinyllm plot --logdir logs/quick --out results/quick.png
"""

from __future__ import annotations

import os
from pathlib import Path

from matplotlib.figure import Figure
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tinyllm.errors import TinyLLMError
from tinyllm.files import check_writable_folder, user_path
from tinyllm.training.metrics import TRAIN_LOSS, VAL_LOSS


def read_scalars(logdir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar series of a TensorBoard run directory, as TensorBoard shows it (purged steps removed)."""
    path = user_path(logdir)
    if not any(path.glob("events.out.tfevents.*")):
        raise TinyLLMError(f"no TensorBoard event files in {path}: pass a run directory such as logs/quick")
    acc = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0 = keep every point
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def plot_run(logdir: str | Path, out: str | Path, title: str | None = None) -> Path:
    """Loss (train and val) on the left, learning rate on the right; returns the PNG's path."""
    series = {tag: points for tag, points in read_scalars(logdir).items() if points}  # a purged series can be empty
    if TRAIN_LOSS not in series and VAL_LOSS not in series:
        raise TinyLLMError(f"{logdir} has no train_loss or val_loss curves to plot")
    fig = Figure(figsize=(11, 4))  # no pyplot: no GUI backend, no global figure state
    ax_loss, ax_lr = fig.subplots(1, 2)
    for tag, style in ((TRAIN_LOSS, dict(alpha=0.5, lw=1)), (VAL_LOSS, dict(marker="o", lw=2))):
        if tag in series:
            steps, values = zip(*series[tag])
            ax_loss.plot(steps, values, label=tag, **style)
    ax_loss.set(xlabel="step", ylabel="cross-entropy (nats/token)", title="loss")
    ax_loss.legend()
    ax_loss.grid(alpha=0.3)
    for tag in sorted(t for t in series if t.startswith("lr-")):
        steps, values = zip(*series[tag])
        ax_lr.plot(steps, values, label=tag.removeprefix("lr-"))
    ax_lr.set(xlabel="step", ylabel="learning rate", title="learning rate")
    if ax_lr.has_data():
        ax_lr.legend()
    ax_lr.grid(alpha=0.3)
    fig.suptitle(title or str(logdir))
    fig.tight_layout()
    out = user_path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return out


def plot(logdir: str, out: str | None = None, title: str | None = None) -> None:
    """Plot a run's loss and learning-rate curves from its TensorBoard logs, as a PNG.

    Args:
        logdir: a run's log folder, e.g. logs/quick.
        out: the PNG to write, or a folder to write curves.png in (default: <logdir>/curves.png).
        title: the figure's title (default: the log folder).
    """
    out_path = user_path(out) if out else user_path(logdir) / "curves.png"
    if out_path.is_dir() or (out or "").endswith(("/", os.sep)):  # a folder, or one to make ("figures/")
        out_path = out_path / "curves.png"
    if out_path.suffix.lower() != ".png":
        raise TinyLLMError(f"--out {out} is not a .png file: name the picture to write, e.g. --out curves.png")
    check_writable_folder(out_path.parent, "--out")
    written = plot_run(logdir, out_path, title)
    print(f"wrote {written}")
