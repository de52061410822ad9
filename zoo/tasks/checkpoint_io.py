"""Checkpoint files that are never torn and never unpickle arbitrary objects.

Lightning's `TorchCheckpointIO` writes through an fsspec transaction: the bytes go to a file made
by `tempfile.mkstemp()` in the system temp folder and are then `shutil.move`d. When that folder
is on another filesystem than the run (a tmpfs /tmp, a network drive) the move is a copy into
the final path, so a kill during it leaves a torn `last.ckpt`; nothing is fsync'ed either. Here
the temp file sits next to the target and `os.replace` (atomic on POSIX and Windows) publishes
it. Loading always uses `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO


class AtomicCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` with same-directory temp file + fsync + `os.replace`, and weights-only
    loading (tensors, containers of primitives; a pickled class or callable is refused)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(
                f"{type(self).__name__} takes no storage_options, got {storage_options!r}"
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        # make the rename itself durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def load_checkpoint(
        self,
        path: str | Path,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        # `weights_only` is ignored on purpose: user checkpoints are never fully unpickled
        if not Path(path).is_file():
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        return torch.load(path, map_location=map_location, weights_only=True)
