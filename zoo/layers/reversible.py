"""Reversible columns (RevCol, Cai et al., ICLR 2023): multi-level state updates whose backward
rebuilds the column's inputs from its outputs instead of storing activations.

A column with levels F_0 .. F_{K-1} and per-channel scales alpha_l updates its level states

    c_l <- alpha_l * c_l_prev + F_l(in_l, side_l),   in_0 = x,  in_l = c_{l-1} (the new one)

where side_l is nothing, a tensor given by the caller (`side="given"`), or the previous state
of the next level c_{l+1}_prev (`side="next"`, RevCol's cross-level fusion; the last level
gets none). A first column has no previous states (None): c_l = F_l(in_l, side_l).

With `save_memory=True` (and a gradient needed) the update runs in `_ReversibleColumnFn`: the
forward keeps only x, the new states and the given side inputs; the backward walks the levels
from the last to the first, recomputes F_l with gradients, and rebuilds the previous state as
c_l_prev = (c_l - F_l(in_l, side_l)) / alpha_l ("feature reverse"), which is exactly the side
input level l-1 needs. Activation memory is then that of one level, whatever the depth or the
number of stacked columns. The math is unchanged (forward outputs are bitwise those of the
plain path); gradients agree to rounding, the rebuilt states carrying rounding of order
eps / |alpha|. That is why `forward` clamps |alpha| >= 1e-3 in place on the parameter first,
as the official RevCol code does (an alpha of exactly 0 stays 0: sign(0) * 1e-3 = 0).

The levels must be deterministic (no dropout): the backward recomputes them.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor
from torch.fx._symbolic_trace import is_fx_symbolic_tracing

__all__ = ["ReversibleColumn", "clamp_abs_"]

SIDE_MODES = ("none", "given", "next")


@torch.no_grad()
def clamp_abs_(param: Tensor, value: float) -> None:
    """|param| >= value in place, keeping the sign (0 stays 0), as the official `_clamp_abs`."""
    sign = param.sign()
    param.abs_().clamp_(value)
    param.mul_(sign)


class _ReversibleColumnFn(torch.autograd.Function):
    """Inputs: column, x, K previous states (tensor or None), K given sides (tensor or None),
    then every parameter of the column (so their gradients are returned, not accumulated)."""

    @staticmethod
    def forward(ctx, column: ReversibleColumn, x: Tensor, *rest):  # type: ignore[override]
        k = column.num_levels
        prev, sides = list(rest[:k]), list(rest[k : 2 * k])
        params = rest[2 * k :]
        with torch.no_grad():
            new = column._run(x, prev, sides)
        ctx.column = column
        ctx.num_params = len(params)
        ctx.has_prev = [p is not None for p in prev]
        ctx.has_side = [s is not None for s in sides]
        ctx.save_for_backward(x, *new, *[s for s in sides if s is not None])
        return tuple(new)

    @staticmethod
    def backward(ctx, *grads_new):  # type: ignore[override]
        column: ReversibleColumn = ctx.column
        k = column.num_levels
        saved = ctx.saved_tensors
        x, new = saved[0], list(saved[1 : k + 1])
        given_iter = iter(saved[k + 1 :])
        given = [next(given_iter) if has else None for has in ctx.has_side]
        grads = [
            g if g is not None else torch.zeros_like(c) for g, c in zip(grads_new, new, strict=True)
        ]
        params = list(column.parameters())
        index = {id(p): i for i, p in enumerate(params)}
        grad_params: list[Tensor | None] = [None] * len(params)
        grad_prev: list[Tensor | None] = [None] * k
        grad_sides: list[Tensor | None] = [None] * k
        grad_x = None
        prev_next: Tensor | None = None  # the rebuilt previous state of level l + 1

        def accumulate(store: list, i: int, g: Tensor | None) -> None:
            if g is not None:
                store[i] = g if store[i] is None else store[i] + g

        for lvl in reversed(range(k)):
            level, alpha = column.level(lvl), column.alpha(lvl)
            with torch.enable_grad():
                inp = (x if lvl == 0 else new[lvl - 1]).detach().requires_grad_()
                if column.side == "given":
                    side = given[lvl]
                elif column.side == "next" and lvl < k - 1:
                    side = prev_next
                else:
                    side = None
                if side is not None:
                    side = side.detach().requires_grad_()
                out = level(inp, side)
                level_params = [p for p in level.parameters() if p.requires_grad]
                wrt = [inp] + ([side] if side is not None else []) + level_params
                got = torch.autograd.grad(out, wrt, grads[lvl], allow_unused=True)
            if lvl > 0:
                grads[lvl - 1] = grads[lvl - 1] + got[0]
            else:
                grad_x = got[0]
            rest = got[1:]
            if side is not None:
                if column.side == "given":
                    grad_sides[lvl] = rest[0]
                else:
                    accumulate(grad_prev, lvl + 1, rest[0])
                rest = rest[1:]
            for p, g in zip(level_params, rest, strict=True):
                accumulate(grad_params, index[id(p)], g)
            if ctx.has_prev[lvl]:
                with torch.no_grad():
                    prev_l = (new[lvl] - out.detach()) / alpha  # feature reverse
                accumulate(grad_prev, lvl, grads[lvl] * alpha)
                g_alpha = (grads[lvl] * prev_l).sum_to_size(alpha.shape)
                accumulate(grad_params, index[id(alpha)], g_alpha)
                prev_next = prev_l
            else:
                accumulate(grad_params, index[id(alpha)], torch.zeros_like(alpha))
                prev_next = None
        return (None, grad_x, *grad_prev, *grad_sides, *grad_params)


class ReversibleColumn(nn.Module):
    """Base of a column: subclasses create `alpha{l}` parameters (1, C_l, 1, 1) and `level{l}`
    modules called as `level(input, side)` (the official attribute names, so official
    checkpoints keep their keys), for l < num_levels."""

    def __init__(self, num_levels: int, side: str, save_memory: bool) -> None:
        super().__init__()
        if side not in SIDE_MODES:
            raise ValueError(f"side={side!r}: expected one of {SIDE_MODES}")
        self.num_levels = num_levels
        self.side = side
        self.save_memory = save_memory

    def truncate(self, num_levels: int) -> None:
        """Keep the first `num_levels` levels (their outputs do not depend on later ones)."""
        for i in range(num_levels, self.num_levels):
            delattr(self, f"level{i}")
            delattr(self, f"alpha{i}")
        self.num_levels = min(num_levels, self.num_levels)

    def level(self, i: int) -> nn.Module:
        return getattr(self, f"level{i}")

    def alpha(self, i: int) -> Tensor:
        return getattr(self, f"alpha{i}")

    def _run(self, x: Tensor, prev: list, sides: list) -> list[Tensor]:
        new: list[Tensor] = []
        inp = x
        for lvl in range(self.num_levels):
            if self.side == "given":
                side = sides[lvl]
            elif self.side == "next" and lvl < self.num_levels - 1:
                side = prev[lvl + 1]
            else:
                side = None
            out = self.level(lvl)(inp, side)
            alpha = self.alpha(lvl)
            if prev[lvl] is not None:
                out = alpha * prev[lvl] + out
            elif alpha.requires_grad and torch.is_grad_enabled():
                # the official `alpha * 0 + F(...)`: alpha gets a zero gradient (so AdamW still
                # decays it), the values are unchanged
                out = alpha * 0.0 + out
            new.append(out)
            inp = out
        return new

    def forward(
        self, x: Tensor, prev: list[Tensor | None], sides: list[Tensor | None] | None = None
    ) -> list[Tensor]:
        """New level states from x, the previous states (None: first column) and the sides."""
        k = self.num_levels
        sides = list(sides) if sides is not None else [None] * k
        if len(prev) != k or len(sides) != k:
            raise ValueError(f"{type(self).__name__} has {k} levels: got {len(prev)} states")
        for i in range(k):
            clamp_abs_(self.alpha(i), 1e-3)
        # tracers (jit for fvcore, fx) and torch.compile (dynamo cannot trace the backward's
        # autograd.grad) take the plain path: the same math, visible ops, no memory saving
        tracing = (
            torch.jit.is_tracing() or is_fx_symbolic_tracing() or torch.compiler.is_compiling()
        )
        if self.save_memory and torch.is_grad_enabled() and not tracing:
            params = tuple(self.parameters())
            return list(_ReversibleColumnFn.apply(self, x, *prev, *sides, *params))
        return self._run(x, list(prev), sides)
