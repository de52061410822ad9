"""zoo.tasks.figures: what the PNGs of a run say, checked on the matplotlib figures (headings,
axis labels, titles, size) rather than on pixels, plus that the files are written."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import torch
from PIL import Image

from zoo.tasks.figures import metrics_figure, overlay_figure, plot_metrics, save_overlays


def _batch(n: int = 2, size: int = 16):
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(n, 3, size, size, generator=gen)
    preds = torch.randint(0, 3, (n, size, size), generator=gen)
    return images, preds, preds.roll(1, dims=-1)


def test_overlays_head_their_columns_at_a_legible_size(tmp_path: Path) -> None:
    images, preds, targets = _batch()
    fig = overlay_figure(images, preds, targets, num_classes=3, title="mk_unet_t: epoch 2")
    grid = list(fig.axes)
    assert len(grid) == 6  # 2 images x 3 columns
    assert [ax.get_title() for ax in grid[:3]] == ["input", "prediction", "ground truth"]
    assert all(ax.get_title() == "" for ax in grid[3:])  # headings once, on the first row
    assert fig.get_suptitle() == "mk_unet_t: epoch 2"
    width, height = fig.get_size_inches()
    assert width / 3 >= 2.5 and height / 2 >= 2.5  # a 16x16 crop still fills 2.5 inches
    plt.close(fig)
    # without ground truth (predict): two headed columns
    fig = overlay_figure(images, preds, None, num_classes=3)
    assert [ax.get_title() for ax in fig.axes[:2]] == ["input", "prediction"]
    assert len(fig.axes) == 4
    plt.close(fig)
    path = tmp_path / "overlays" / "epoch_000.png"
    save_overlays(images, preds, targets, path, num_classes=3)
    with Image.open(path) as png:
        assert png.size[0] >= 750 and png.size[1] >= 500


def test_metric_plots_label_their_axes_and_name_model_and_data(tmp_path: Path) -> None:
    history = [
        {"train/loss": 1.0, "val/loss": 1.2, "train/acc1": 0.4, "val/acc1": 0.5, "val/acc5": 0.9},
        {"train/loss": 0.5, "train/acc1": 0.6},  # an epoch that did not validate
    ]
    fig = metrics_figure(history, title="inceptionnext_atto on scikit-learn digits")
    loss_ax, metric_ax = fig.axes
    assert fig.get_suptitle() == "inceptionnext_atto on scikit-learn digits"
    assert loss_ax.get_ylabel() == "loss" and loss_ax.get_xlabel() == "epoch"
    assert metric_ax.get_ylabel() == "acc1, acc5"
    points = {line.get_label(): list(line.get_xdata()) for line in loss_ax.get_lines()}
    assert points == {"train/loss": [1, 2], "val/loss": [1]}  # no stale value at epoch 2
    plt.close(fig)
    plot_metrics(history, tmp_path / "metrics.png", title="x")
    assert (tmp_path / "metrics.png").stat().st_size > 0
