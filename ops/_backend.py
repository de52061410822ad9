"""The process-wide backend choice of an op: an environment variable read at import, then
`set`; `check` validates a per-call choice."""

from __future__ import annotations

import os


class BackendChoice:
    def __init__(self, op: str, backends: tuple[str, ...], variable: str) -> None:
        self.op, self.backends = op, backends
        self.current = os.environ.get(variable, "auto")
        if self.current not in backends:
            raise ValueError(f"{variable}={self.current!r} is not one of {backends}")

    def check(self, name: str) -> None:
        if name not in self.backends:
            raise ValueError(f"unknown {self.op} backend {name!r}; expected one of {self.backends}")

    def set(self, name: str) -> None:
        self.check(name)
        self.current = name
