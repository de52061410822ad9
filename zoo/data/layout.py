"""Folder checks shared by the datamodules: every problem names the path and the expected layout."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ConfigError(ValueError):
    """Wrong user input (data folder, labels, model name, ...): `train.py` prints it without a
    traceback, since the message alone says what to fix."""


def require_dir(path: str | Path, what: str, layout: str) -> Path:
    """Return `path` as a Path, or raise naming the missing folder and the expected layout."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ConfigError(f"{what} not found: '{path}' does not exist.\nExpected layout:\n{layout}")
    if not path.is_dir():
        raise ConfigError(
            f"{what} '{path}' is a file, expected a folder.\nExpected layout:\n{layout}"
        )
    return path


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """Image files in `folder` (sorted), by extension."""
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.suffix.lower() in IMAGE_EXTENSIONS)


def require_images(folder: Path, what: str, layout: str, recursive: bool = False) -> list[Path]:
    """Images in `folder`, or raise when there are none."""
    files = list_images(folder, recursive)
    if not files:
        exts = ", ".join(IMAGE_EXTENSIONS)
        raise ConfigError(
            f"{what} '{folder}' contains no images ({exts}).\nExpected layout:\n{layout}"
        )
    return files


def first_few(items: Iterable[object], n: int = 5) -> str:
    """Up to `n` items joined for an error message, with a count of the rest."""
    items = [str(i) for i in items]
    more = f" ... and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more
