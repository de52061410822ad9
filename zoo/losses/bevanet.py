"""BEVANet's training losses (the official recipe, inherited from PIDNet), reusable on their own.

With the heads of `BEVANet.forward_heads` resized to the label size (bilinear,
align_corners=True):

    L = 0.4 * CE(aux_seg, y)                              auxiliary head, plain (weighted) CE
      + 1.0 * OHEM-CE(seg, y)                             main head, online hard example mining
      + 20  * weighted-BCE(boundary, edges(y))            boundary head
      + 1.0 * OHEM-CE(seg, y where sigmoid(boundary) > 0.8, else ignore)   boundary-aware CE

OHEM keeps the valid pixels whose softmax probability of the true class is below
max(0.9, the `min_kept`-th smallest such probability) (min_kept 131072 in every released config)
and averages their (class-weighted) CE. The weighted BCE weighs positives by #neg / #all and
negatives by #pos / #all, counted over the whole batch.

Edges are made as the official data pipeline makes them (`datasets/base_dataset.py`): OpenCV's
Canny on the label map (thresholds 0.1/0.2, aperture 3), a 6-pixel image border zeroed, dilation
with a 4x4 kernel. `boundary_targets` reimplements that in torch (it matches cv2.Canny pixel for
pixel on label maps, where every label change is a strong edge). The official pipeline computes
edges on the full-size label map BEFORE random scaling/cropping and transforms them with it;
a data pipeline that wants exactly that calls `boundary_targets` itself and passes the result to
the loss. Without one, the loss derives edges from the labels it is given (so the border
trimming applies to the crop border instead).

The auxiliary CE is averaged over all pixels, ignored ones counting as 0 (not over the valid
pixels): that is what the official training step computes (its criterion returns the per-pixel
CE map and the loop takes the mean). Deviation, for degenerate batches only: an OHEM term with no
valid (or no kept) pixel returns 0 instead of NaN.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .cross_entropy import CITYSCAPES_CLASS_WEIGHTS, class_weights_tensor

__all__ = [
    "BEVANetLoss",
    "CITYSCAPES_CLASS_WEIGHTS",
    "boundary_targets",
    "ohem_cross_entropy",
    "weighted_bce_with_logits",
]

# OpenCV's fixed-point tan(22.5 deg) for Canny's gradient-direction quantisation
_CANNY_SHIFT = 15
_CANNY_TG22 = int(0.4142135623730950488016887242097 * (1 << _CANNY_SHIFT) + 0.5)


def _zero_like_loss(x: Tensor) -> Tensor:
    return x.sum() * 0.0  # keeps the graph (DDP needs every head to receive a gradient)


def ohem_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    thresh: float = 0.9,
    min_kept: int = 131072,
    ignore_index: int = 255,
    weight: Tensor | None = None,
) -> Tensor:
    """Mean CE over the hard pixels: prob(true class) < max(thresh, min_kept-th smallest prob)."""
    pixel_losses = F.cross_entropy(
        logits, labels, weight=weight, ignore_index=ignore_index, reduction="none"
    ).flatten()
    valid = labels.flatten() != ignore_index
    if not bool(valid.any()):
        return _zero_like_loss(logits)
    with torch.no_grad():
        target = labels.masked_fill(labels == ignore_index, 0)
        prob = logits.softmax(dim=1).gather(1, target.unsqueeze(1)).flatten()[valid]
        k = min(max(1, min_kept), prob.numel() - 1)  # 0-based rank, as the official sort index
        kth = prob.kthvalue(k + 1).values
        threshold = torch.clamp(kth, min=thresh)
        kept = prob < threshold
    if not bool(kept.any()):
        return _zero_like_loss(logits)
    return pixel_losses[valid][kept].mean()


def weighted_bce_with_logits(logits: Tensor, targets: Tensor) -> Tensor:
    """Class-balanced BCE: positives weighted by #neg / #all, negatives by #pos / #all."""
    logits = logits.flatten()
    targets = targets.flatten().to(logits.dtype)
    pos = targets >= 0.5
    num_pos = pos.sum()
    num_all = targets.numel()
    weight = torch.where(pos, (num_all - num_pos) / num_all, num_pos / num_all).to(logits.dtype)
    return F.binary_cross_entropy_with_logits(logits, targets, weight, reduction="mean")


@torch.no_grad()
def boundary_targets(labels: Tensor, border: int = 6, dilation: int = 4) -> Tensor:
    """Binary edge map of a label map, as the official pipeline makes it with OpenCV.

    labels: (N, H, W) or (H, W) integer class map (the ignore value counts as a class, as it
    does for cv2.Canny on the uint8 label image). Returns float 0/1 of the same shape.
    border: width of the image border cleared after edge detection (official 6; 0 keeps it).
    dilation: side of the square dilation kernel (official 4, anchored at its centre (2, 2)).
    """
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got {labels.dtype}")
    squeeze = labels.ndim == 2
    if squeeze:
        labels = labels[None]
    if labels.ndim != 3:
        raise ValueError(f"labels must be (N, H, W) or (H, W), got shape {tuple(labels.shape)}")
    n, h, w = labels.shape
    x = labels.to(torch.int64)[:, None]
    # Sobel 3x3 with a replicated border (OpenCV Canny's Sobel), exact in int64
    xp = F.pad(x.double(), (1, 1, 1, 1), mode="replicate").to(torch.int64)
    rows = xp[:, :, :-2] + 2 * xp[:, :, 1:-1] + xp[:, :, 2:]  # vertical [1, 2, 1] smoothing
    cols = xp[..., :-2] + 2 * xp[..., 1:-1] + xp[..., 2:]  # horizontal [1, 2, 1] smoothing
    dx = rows[..., 2:] - rows[..., :-2]
    dy = cols[:, :, 2:] - cols[:, :, :-2]
    mag = dx.abs() + dy.abs()  # L1 gradient magnitude (cv2 default L2gradient=False)

    # non-maximum suppression along the quantised gradient direction; outside the image the
    # magnitude is 0. The strict/non-strict comparisons are OpenCV's.
    mp = F.pad(mag, (1, 1, 1, 1))
    left, right = mp[:, :, 1:-1, :-2], mp[:, :, 1:-1, 2:]
    up, down = mp[:, :, :-2, 1:-1], mp[:, :, 2:, 1:-1]
    up_left, up_right = mp[:, :, :-2, :-2], mp[:, :, :-2, 2:]
    down_left, down_right = mp[:, :, 2:, :-2], mp[:, :, 2:, 2:]
    ax = dx.abs()
    ay = dy.abs() << _CANNY_SHIFT
    tg22x = ax * _CANNY_TG22
    tg67x = tg22x + (ax << (_CANNY_SHIFT + 1))
    same_sign = (dx ^ dy) >= 0
    keep_h = (mag > left) & (mag >= right)
    keep_v = (mag > up) & (mag >= down)
    keep_d = torch.where(
        same_sign, (mag > up_left) & (mag > down_right), (mag > up_right) & (mag > down_left)
    )
    keep = torch.where(ay < tg22x, keep_h, torch.where(ay > tg67x, keep_v, keep_d))
    # thresholds 0.1/0.2 floor to 0: every surviving non-zero gradient is a strong edge, so the
    # hysteresis step keeps all of them
    edge = ((mag > 0) & keep).to(torch.float32)

    if border > 0:
        inner = torch.zeros_like(edge)
        inner[:, :, border : h - border, border : w - border] = 1.0
        edge = edge * inner
    if dilation > 1:
        before = dilation // 2  # OpenCV's default anchor for an even kernel
        edge = F.pad(edge, (before, dilation - 1 - before, before, dilation - 1 - before))
        edge = F.max_pool2d(edge, dilation, stride=1)
    edge = edge[:, 0]
    return edge[0] if squeeze else edge


class BEVANetLoss(nn.Module):
    """The official BEVANet training loss over the heads of `BEVANet.forward_heads`.

    `loss(heads, labels)` returns the scalar total; `loss.parts(heads, labels)` returns the four
    weighted terms and their sum ("loss") for logging. `edges` (0/1, shaped like `labels`) may be
    passed to use edges made elsewhere (e.g. on full-size labels before augmentation, like the
    official pipeline); otherwise `boundary_targets(labels)` makes them.
    """

    def __init__(
        self,
        num_classes: int | None = None,
        ignore_index: int = 255,
        class_weights: Tensor | tuple[float, ...] | str | None = None,
        aux_weight: float = 0.4,
        seg_weight: float = 1.0,
        boundary_weight: float = 20.0,
        boundary_seg_weight: float = 1.0,
        ohem_thresh: float = 0.9,
        ohem_min_kept: int = 131072,
        boundary_thresh: float = 0.8,
        edge_border: int = 6,
        edge_dilation: int = 4,
        align_corners: bool = True,
    ) -> None:
        """
        Args:
            num_classes: expected classes; None takes them from the seg logits.
            ignore_index: label value excluded from every CE term (official 255).
            class_weights: per-class CE weights, or a name in
                `zoo.losses.cross_entropy.NAMED_CLASS_WEIGHTS` (official: "cityscapes" for
                Cityscapes, none for CamVid/ADE20k).
            aux_weight, seg_weight, boundary_weight, boundary_seg_weight: term weights
                (official 0.4, 1.0, 20, 1.0).
            ohem_thresh, ohem_min_kept: OHEM probability threshold and minimum kept pixels.
            boundary_thresh: sigmoid(boundary) level above which the boundary-aware CE counts a
                pixel (official 0.8).
            edge_border, edge_dilation: see `boundary_targets`.
            align_corners: of the resize of the heads to the label size (official True).
        """
        super().__init__()
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if ohem_min_kept < 1:
            raise ValueError(f"ohem_min_kept must be >= 1, got {ohem_min_kept}")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.aux_weight = aux_weight
        self.seg_weight = seg_weight
        self.boundary_weight = boundary_weight
        self.boundary_seg_weight = boundary_seg_weight
        self.ohem_thresh = ohem_thresh
        self.ohem_min_kept = ohem_min_kept
        self.boundary_thresh = boundary_thresh
        self.edge_border = edge_border
        self.edge_dilation = edge_dilation
        self.align_corners = align_corners
        weights = class_weights_tensor(class_weights, num_classes)
        self.register_buffer("class_weights", weights, persistent=False)

    def _check(self, heads: dict[str, Tensor], labels: Tensor) -> None:
        missing = [k for k in ("aux_seg", "seg", "boundary") if k not in heads]
        if missing:
            raise ValueError(
                f"BEVANetLoss needs the heads 'aux_seg', 'seg' and 'boundary'; missing {missing} "
                f"(build the model with aux_heads=True and call forward_heads)"
            )
        seg = heads["seg"]
        num_classes = seg.shape[1]
        if self.num_classes is not None and num_classes != self.num_classes:
            raise ValueError(f"seg logits have {num_classes} classes, expected {self.num_classes}")
        if self.class_weights is not None and len(self.class_weights) != num_classes:
            raise ValueError(
                f"{len(self.class_weights)} class weights for {num_classes} classes in the logits"
            )
        if labels.dtype.is_floating_point or labels.dtype == torch.bool:
            raise TypeError(f"labels must be an integer class map, got dtype {labels.dtype}")
        if labels.ndim != 3 or labels.shape[0] != seg.shape[0]:
            raise ValueError(
                f"labels must be (N, H, W) with N={seg.shape[0]}, got shape {tuple(labels.shape)}"
            )
        bad = (labels != self.ignore_index) & ((labels < 0) | (labels >= num_classes))
        if bool(bad.any()):
            values = torch.unique(labels[bad])[:8].tolist()
            raise ValueError(
                f"labels contain values {values} outside [0, {num_classes}) that are not the "
                f"ignore index {self.ignore_index}"
            )

    def _resize(self, x: Tensor, size: torch.Size) -> Tensor:
        if x.shape[-2:] == size:
            return x
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.align_corners)

    def parts(
        self, heads: dict[str, Tensor], labels: Tensor, edges: Tensor | None = None
    ) -> dict[str, Tensor]:
        """The weighted terms {"aux_ce", "seg_ohem", "boundary_bce", "boundary_seg_ohem"} and
        their sum "loss"."""
        self._check(heads, labels)
        size = labels.shape[-2:]
        aux = self._resize(heads["aux_seg"], size)
        seg = self._resize(heads["seg"], size)
        boundary = self._resize(heads["boundary"], size)
        if edges is None:
            edges = boundary_targets(labels, border=self.edge_border, dilation=self.edge_dilation)
        elif edges.shape != labels.shape:
            raise ValueError(
                f"edges shape {tuple(edges.shape)} != labels shape {tuple(labels.shape)}"
            )
        ohem = dict(
            thresh=self.ohem_thresh,
            min_kept=self.ohem_min_kept,
            ignore_index=self.ignore_index,
            weight=self.class_weights,
        )

        # The official criterion computes this CE with reduction="none" and its train step
        # takes the mean of the summed loss map, so the aux term is the per-pixel (class-
        # weighted) CE averaged over ALL pixels, ignored ones counting as zero.
        aux_ce = F.cross_entropy(
            aux, labels, weight=self.class_weights, ignore_index=self.ignore_index, reduction="none"
        ).mean()
        with torch.no_grad():
            confident_edge = torch.sigmoid(boundary[:, 0]) > self.boundary_thresh
            edge_labels = torch.where(
                confident_edge, labels, torch.full_like(labels, self.ignore_index)
            )
        parts = {
            "aux_ce": self.aux_weight * aux_ce,
            "seg_ohem": self.seg_weight * ohem_cross_entropy(seg, labels, **ohem),
            "boundary_bce": self.boundary_weight * weighted_bce_with_logits(boundary, edges),
            "boundary_seg_ohem": self.boundary_seg_weight
            * ohem_cross_entropy(seg, edge_labels, **ohem),
        }
        parts["loss"] = sum(parts.values())
        return parts

    def forward(
        self, heads: dict[str, Tensor], labels: Tensor, edges: Tensor | None = None
    ) -> Tensor:
        return self.parts(heads, labels, edges)["loss"]
