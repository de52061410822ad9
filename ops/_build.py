"""Compile-on-first-use of our C sources, cached by hash, loaded with ctypes.

A source is compiled with the machine's C compiler (`$CC`, default gcc) for `-march=native`
(`$ZOO_MARCH` picks another target, e.g. x86-64-v3 for AVX2), cached under `$ZOO_CACHE_DIR`
(default `~/.cache/lkzoo`) by a hash of the source, the compiler and its version, the flags and
the CPU's feature flags, and loaded once per process. No compiler, a failed build or the op's
own off switch leaves the library unavailable: the op warns once and uses its other CPU path.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

FLAGS = ("-O3", "-fopenmp", "-std=gnu11", "-shared", "-fPIC")


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def cache_dir() -> Path:
    return Path(os.environ.get("ZOO_CACHE_DIR", Path.home() / ".cache" / "lkzoo"))


def build(source: Path) -> Path:
    """The shared library compiled from `source` (built now unless the cache has it)."""
    compiler = os.environ.get("CC", "gcc")
    flags = [*FLAGS, f"-march={os.environ.get('ZOO_MARCH', 'native')}"]
    version = subprocess.run(
        [compiler, "--version"], capture_output=True, text=True, check=True
    ).stdout
    key = hashlib.sha256(
        source.read_bytes() + " ".join([compiler, version, *flags, _cpu_signature()]).encode()
    ).hexdigest()[:16]
    target = cache_dir() / f"{source.stem}-{key}.so"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        # Build beside the target, then rename: concurrent processes never load a partial file.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
        os.close(fd)
        try:
            subprocess.run(
                [compiler, *flags, "-o", tmp, str(source)],
                capture_output=True,
                text=True,
                check=True,
            )
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return target


class CompiledLibrary:
    """One C source, built and loaded on first use; `declare(library)` sets its ctypes
    signatures. `switch` names the environment variable that turns it off with "0"."""

    def __init__(self, source: Path, switch: str, declare: Callable[[ctypes.CDLL], None]):
        self.source, self.switch, self._declare = source, switch, declare
        self._lock = threading.Lock()
        self._library: ctypes.CDLL | None = None
        self._failed = False

    def get(self) -> ctypes.CDLL | None:
        if self._library is not None or self._failed:
            return self._library
        with self._lock:
            if self._library is None and not self._failed:
                if os.environ.get(self.switch, "1") == "0":
                    self._failed = True
                    return None
                try:
                    library = ctypes.CDLL(str(build(self.source)))
                    self._declare(library)
                    self._library = library
                except (OSError, subprocess.CalledProcessError) as error:
                    self._failed = True
                    detail = getattr(error, "stderr", "") or error
                    warnings.warn(
                        f"ops: could not build {self.source.name} ({detail}); "
                        "using the other CPU path instead",
                        RuntimeWarning,
                        stacklevel=3,
                    )
        return self._library

    def available(self) -> bool:
        return self.get() is not None

    def require(self) -> ctypes.CDLL:
        library = self.get()
        if library is None:
            raise RuntimeError(f"ops: {self.source.name} is not available (see available())")
        return library
