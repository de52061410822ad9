"""Helpers of the mm tests: tiny ADE20K / COCO folders, running tools/ like a user, random
weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def run_tool(tool: str, *args: str, timeout: int = 3000) -> subprocess.CompletedProcess:
    """tools/<tool> in a fresh interpreter (as a user runs it), one thread, output captured."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / tool), *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def make_ade20k(root: Path, n_train: int = 2, n_val: int = 2, size=(96, 128)) -> Path:
    """A tiny ADE20K-layout folder: images/{training,validation}/*.jpg and
    annotations/{training,validation}/*.png (labels 0..150, 0 = other) with blocky classes."""
    rng = np.random.default_rng(0)
    h, w = size
    for split, count in (("training", n_train), ("validation", n_val)):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "annotations" / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            label = np.zeros((h, w), np.uint8)
            for _ in range(4):
                y, x = rng.integers(0, h - 16), rng.integers(0, w - 16)
                label[y : y + 32, x : x + 32] = rng.integers(1, 151)
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            image[label > 0] //= 2
            name = f"ADE_{split[:5]}_{i:08d}"
            Image.fromarray(image).save(root / "images" / split / f"{name}.jpg")
            Image.fromarray(label).save(root / "annotations" / split / f"{name}.png")
    return root


def make_coco(root: Path, n_train: int = 2, n_val: int = 2, size=(96, 128)) -> Path:
    """A tiny COCO-layout folder: {train,val}2017/*.jpg and annotations/instances_*.json with
    the 80 COCO categories and two boxes + polygon masks (person, car) per image."""
    from mmdet.datasets import CocoDataset

    rng = np.random.default_rng(1)
    h, w = size
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    names = CocoDataset.METAINFO["classes"]
    categories = [{"id": i + 1, "name": name} for i, name in enumerate(names)]
    person, car = names.index("person") + 1, names.index("car") + 1
    for split, count in (("train2017", n_train), ("val2017", n_val)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
            image_id = i + 1
            for j, category in enumerate((person, car)):
                x, y = int(rng.integers(0, w - 48)), int(rng.integers(0, h - 48))
                bw, bh = 40, 36
                image[y : y + bh, x : x + bw] = 60 + 120 * j
                polygon = [x, y, x + bw, y, x + bw, y + bh, x, y + bh]
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": image_id,
                        "category_id": category,
                        "bbox": [x, y, bw, bh],
                        "area": bw * bh,
                        "segmentation": [polygon],
                        "iscrowd": 0,
                    }
                )
            file_name = f"{image_id:012d}.jpg"
            Image.fromarray(image).save(root / split / file_name)
            images.append({"id": image_id, "file_name": file_name, "height": h, "width": w})
        with open(root / "annotations" / f"instances_{split}.json", "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    return root


def randomize(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights and BN statistics (GRN, layer scale and norms included)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            base = 1.0 if name.endswith("weight") and p.dim() == 1 and "grn" not in name else 0.0
            p.copy_(base + 0.1 * torch.randn(p.shape, generator=g))
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
    return module
