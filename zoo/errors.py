"""User-facing error types: each message names the wrong value and what was expected.

`train.py` prints these as one `error:` line (exit 2) instead of a traceback, since the
message alone says what to fix.
"""

from __future__ import annotations

from collections.abc import Iterable


class ConfigError(ValueError):
    """Wrong user input: a data folder, labels, a model name, a config value."""


class CheckpointError(ConfigError):
    """A checkpoint file that is missing, not a checkpoint, or does not fit the model."""


def first_few(items: Iterable[object], n: int = 5) -> str:
    """Up to `n` items joined for an error message, with a count of the rest."""
    items = [str(i) for i in items]
    more = f" ... and {len(items) - n} more" if len(items) > n else ""
    return ", ".join(items[:n]) + more
