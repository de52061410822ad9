"""Fetch `tests/test_models.py` from the sdist of the installed timm into a folder.

timm's model test-suite is the contract every timm model meets; we run it, unchanged, on our
externally registered models (tests/test_timm_suite.py). It ships only in timm's sdist, so it
is downloaded from the package registry at install time rather than copied into this repo.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import tempfile
from importlib.metadata import version
from pathlib import Path


def main(dest: str) -> None:
    out = Path(dest)
    out.mkdir(parents=True, exist_ok=True)
    timm_version = version("timm")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                f"timm=={timm_version}",
                "--no-deps",
                "--no-binary",
                ":all:",
                "-d",
                tmp,
            ],
            check=True,
        )
        (sdist,) = Path(tmp).glob("timm-*.tar.gz")
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("/tests/test_models.py"))
            data = tar.extractfile(member).read()
    target = out / "test_models.py"
    target.write_bytes(data)
    (out / "VERSION").write_text(timm_version + "\n")
    print(f"timm {timm_version} tests/test_models.py -> {target}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".venv/timm-tests")
