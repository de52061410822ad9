"""PNG figures of a run: metric curves, a confusion matrix, segmentation overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD  # noqa: E402


def metrics_figure(history: list[dict[str, float]], title: str = "") -> Figure:
    """Loss curves (left) and every other metric (right) per epoch; `history[i]` holds the
    scalars logged at the end of epoch i (validation ones only where that epoch validated)."""
    keys = sorted({k for row in history for k in row})
    loss_keys = [k for k in keys if "loss" in k]
    other = [k for k in keys if k not in loss_keys and not k.startswith("lr")]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for ax, group, name in ((axes[0], loss_keys, "loss"), (axes[1], other, "metrics")):
        for key in group:
            pts = [(i + 1, row[key]) for i, row in enumerate(history) if key in row]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, marker="o", ms=3, label=key)
        ax.set_xlabel("epoch")
        # the metric names without their train/ and val/ prefixes: "acc1, acc5" or "dice, miou"
        ax.set_ylabel(", ".join(dict.fromkeys(k.split("/")[-1] for k in group)) or name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        if group:
            ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_metrics(history: list[dict[str, float]], path: Path, title: str = "") -> None:
    """`metrics_figure` saved as a PNG at `path`."""
    _save(metrics_figure(history, title), path)


def _save(fig: Figure, path: Path) -> None:
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
    _save(fig, path)


def _palette(num_classes: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    colors = rng.integers(40, 256, (max(num_classes, 2), 3))
    colors[1] = (255, 60, 60)  # the foreground of binary tasks is red
    colors[0] = 0
    return colors.astype(np.uint8)


OVERLAY_COLUMNS = ("input", "prediction", "ground truth")


def overlay_figure(
    images: torch.Tensor,
    preds: torch.Tensor,
    targets: torch.Tensor | None,
    num_classes: int,
    ignore_index: int = 255,
    mean: Sequence[float] = IMAGENET_DEFAULT_MEAN,
    std: Sequence[float] = IMAGENET_DEFAULT_STD,
    title: str = "",
) -> Figure:
    """One row per image, headed columns: input | prediction overlay | ground-truth overlay
    (when `targets` are given). `images` are normalised (N, 3, H, W); `preds`/`targets` are
    class-index maps (N, H, W). Each panel is 2.5 inches at any image size, so that small
    crops stay legible."""
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

    columns = OVERLAY_COLUMNS if targets is not None else OVERLAY_COLUMNS[:2]
    rows = len(rgb)
    fig, axes = plt.subplots(
        rows, len(columns), figsize=(2.5 * len(columns), 2.5 * rows + 0.4), squeeze=False
    )
    for i in range(rows):
        panels = [rgb[i], blend(rgb[i], preds[i])]
        if targets is not None:
            panels.append(blend(rgb[i], targets[i]))
        for ax, panel in zip(axes[i], panels, strict=True):
            ax.imshow(panel, interpolation="nearest")
            ax.set_axis_off()
    for ax, heading in zip(axes[0], columns, strict=True):
        ax.set_title(heading)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def save_overlays(
    images: torch.Tensor,
    preds: torch.Tensor,
    targets: torch.Tensor | None,
    path: Path,
    num_classes: int,
    **kwargs,
) -> None:
    """`overlay_figure` saved as a PNG at `path` (keyword arguments as there)."""
    _save(overlay_figure(images, preds, targets, num_classes, **kwargs), path)


RESTORATION_COLUMNS = ("blurry", "restored", "sharp")


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.float() - b.float()) ** 2).mean())
    return 10 * np.log10(1.0 / max(mse, 1e-12))


def restoration_figure(
    blurry: torch.Tensor, restored: torch.Tensor, sharp: torch.Tensor, title: str = ""
) -> Figure:
    """One row per image, headed columns blurry | restored | sharp ((N, 3, H, W) in [0, 1]),
    each panel titled with its PSNR against the sharp image."""
    rows = len(blurry)
    fig, axes = plt.subplots(rows, 3, figsize=(3.2 * 3, 3.0 * rows + 0.5), squeeze=False)
    for i in range(rows):
        images = (blurry[i], restored[i].clamp(0, 1), sharp[i])
        for j, (ax, img) in enumerate(zip(axes[i], images, strict=True)):
            ax.imshow(img.float().cpu().clamp(0, 1).permute(1, 2, 0).numpy())
            ax.set_axis_off()
            label = RESTORATION_COLUMNS[j]
            if j < 2:
                label += f" ({_psnr(img.clamp(0, 1), sharp[i]):.2f} dB)"
            ax.set_title(label, fontsize=9)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def kernel_grid_figure(kernels: torch.Tensor, title: str = "", max_kernels: int = 16) -> Figure:
    """The first `max_kernels` kernels of one image ((K, h, w) in [0, 1]) as a grid."""
    kernels = kernels[:max_kernels].float().cpu()
    cols = min(8, len(kernels))
    rows = -(-len(kernels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows + 0.5), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, k in zip(axes.flat, kernels, strict=False):
        ax.imshow(k.numpy(), cmap="inferno", interpolation="nearest")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def save_figure(fig: Figure, path: Path) -> None:
    """Any figure of this module saved as a PNG at `path` (folders created)."""
    _save(fig, path)
