"""Folder checks shared by the datamodules: every problem names the path and the expected layout."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, first_few

__all__ = ["IMAGE_EXTENSIONS", "ConfigError", "first_few", "list_images", "require_dir",
           "require_images"]  # fmt: skip

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


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
