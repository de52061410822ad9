"""PNG figures of a run: metric curves, a confusion matrix, segmentation overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # noqa: E402


def plot_metrics(history: list[dict[str, float]], path: Path) -> None:
    """Loss curves (left) and every other metric (right) per epoch; `history[i]` holds the
    scalars logged at the end of epoch i."""
    keys = sorted({k for row in history for k in row})
    loss_keys = [k for k in keys if "loss" in k]
    other = [k for k in keys if k not in loss_keys and not k.startswith("lr")]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, group, title in ((axes[0], loss_keys, "loss"), (axes[1], other, "metrics")):
        for key in group:
            pts = [(i + 1, row[key]) for i, row in enumerate(history) if key in row]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", ms=3, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_confusion(confusion: torch.Tensor, class_names: Sequence[str], path: Path) -> None:
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts printed."""
    cm = confusion.double().numpy()
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    n = len(cm)
    fig, ax = plt.subplots(figsize=(1 + 0.5 * n, 1 + 0.5 * n))
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 30:
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    int(cm[i, j]),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
        ax.set_xticks(range(n), class_names, rotation=90, fontsize=7)
        ax.set_yticks(range(n), class_names, fontsize=7)
    acc = np.trace(cm) / max(cm.sum(), 1)
    ax.set_title(f"confusion (accuracy {acc:.3f})")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _palette(num_classes: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    colors = rng.integers(40, 256, (max(num_classes, 2), 3))
    colors[1] = (255, 60, 60)  # the foreground of binary tasks is red
    colors[0] = 0
    return colors.astype(np.uint8)


def save_overlays(
    images: torch.Tensor,
    preds: torch.Tensor,
    targets: torch.Tensor | None,
    path: Path,
    num_classes: int,
    ignore_index: int = 255,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
) -> None:
    """One row per image: input | prediction overlay | ground-truth overlay (when given).
    `images` are normalised (N, 3, H, W); `preds`/`targets` are class-index maps (N, H, W)."""
    mean_t = torch.tensor(mean).view(1, 3, 1, 1)
    std_t = torch.tensor(std).view(1, 3, 1, 1)
    rgb = ((images.float().cpu() * std_t + mean_t).clamp(0, 1) * 255).byte()
    rgb = rgb.permute(0, 2, 3, 1).numpy()
    colors = _palette(num_classes)

    def blend(img: np.ndarray, labels: torch.Tensor) -> np.ndarray:
        lab = labels.cpu().numpy()
        valid = (lab != ignore_index) & (lab > 0)
        out = img.copy()
        col = colors[np.clip(lab, 0, len(colors) - 1)]
        out[valid] = (0.45 * img[valid] + 0.55 * col[valid]).astype(np.uint8)
        return out

    rows = []
    for i in range(len(rgb)):
        cols = [rgb[i], blend(rgb[i], preds[i])]
        if targets is not None:
            cols.append(blend(rgb[i], targets[i]))
        rows.append(np.concatenate(cols, axis=1))
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path)
