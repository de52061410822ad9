"""Chunked selective scan in plain PyTorch ops: the fallback for devices and machines without
one of our kernels (no C compiler, CUDA without Triton, other devices).

The same forward and backward as reference.py, with its recurrence solver replaced: the sequence
is cut into K chunks of S ~ sqrt(L) steps; every chunk is first solved from a zero state, all
chunks at once (S vectorised steps); then the K chunk-entry states are carried across (K small
steps); each step's state is the chunk-local one plus the entry state decayed by
exp(sum of log decays since the chunk began). About 2 sqrt(L) Python steps instead of L; memory
is that of the reference, O(batch dim L N).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from .reference import backward_with, scan_with


def solve(log_decay: Tensor, drive: Tensor) -> Tensor:
    """x_l = exp(log_decay_l) x_{l-1} + drive_l along dim 2 of (batch, dim, L, N), x_{-1} = 0."""
    batch, dim, length, n = drive.shape
    steps = max(1, math.isqrt(length))
    chunks = -(-length // steps)
    # padded steps decay by exp(0) = 1 and add nothing: the state passes through unchanged;
    # (S, batch, dim, K, N): every step's slice contiguous (strided slices with N innermost
    # ran the elementwise ops ~10x slower)
    pad = (0, 0, 0, chunks * steps - length)

    def by_step(t: Tensor) -> Tensor:
        return F.pad(t, pad).unflatten(2, (chunks, steps)).movedim(3, 0).contiguous()

    log_decay, drive = by_step(log_decay), by_step(drive)
    decay = torch.exp(log_decay)
    x = drive.new_zeros((batch, dim, chunks, n))
    local = []
    for step in range(steps):
        x = decay[step] * x + drive[step]
        local.append(x)
    local = torch.stack(local)
    # Floored where the cumulative decay underflows: subnormal floats make every op on them
    # ~20x slower on x86 (exp, mul and add took 85% of the time); the floor's exp (~1e-35
    # in float32) times a state is far below the result's rounding.
    floor = math.log(torch.finfo(log_decay.dtype).tiny) + 8
    since_start = torch.exp(torch.cumsum(log_decay, dim=0).clamp(min=floor))
    carry = drive.new_zeros((batch, dim, n))
    entry = []
    for k in range(chunks):
        entry.append(carry)
        carry = since_start[-1, :, :, k] * carry + local[-1, :, :, k]
    history = local + since_start * torch.stack(entry, dim=2)
    return history.movedim(0, 3).flatten(2, 3)[:, :, :length]


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, chunk: int):
    return scan_with(solve, u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk)


def backward(grad_out, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, chunk,
             output_mask):  # fmt: skip
    return backward_with(solve, grad_out, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                         output_mask)  # fmt: skip
