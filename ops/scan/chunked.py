"""Chunked selective scan in plain PyTorch ops: the fallback for devices and machines without
one of our kernels (no C compiler, CUDA without Triton, other devices).

The sequence is cut into K chunks of S ~ sqrt(L) steps. Every chunk is first scanned from a
zero state, all chunks at once (S vectorised steps); then the K chunk-entry states are carried
across (K small steps); each step's state is the chunk-local one plus the entry state decayed
by the chunk's cumulative decay, exp(sum of delta' A since the chunk began). About 2 sqrt(L)
Python steps instead of L; memory is that of the reference, O(batch dim L N). Arithmetic and
the backward (autograd) are as in reference.py.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .reference import (
    autograd_backward,
    chunk_states,
    compute_dtype,
    discretised_delta,
    finish,
    per_step,
)


def _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk):
    dtype = compute_dtype(u.dtype)
    batch, dim, length = u.shape
    steps = max(1, math.isqrt(length))
    chunks = -(-length // steps)
    dt = discretised_delta(delta, delta_bias, delta_softplus, dtype)
    log_decay = dt[..., None] * A.to(dtype)[:, None, :]  # (batch, dim, L, N)
    drive = (dt * u.to(dtype))[..., None] * per_step(B, dim, dtype)
    # padded steps decay by exp(0) = 1 and add nothing: the state passes through unchanged
    pad = (0, 0, 0, chunks * steps - length)
    log_decay = F.pad(log_decay, pad).unflatten(2, (chunks, steps))  # (batch, dim, K, S, N)
    drive = F.pad(drive, pad).unflatten(2, (chunks, steps))
    decay = torch.exp(log_decay)
    x = drive.new_zeros((batch, dim, chunks, A.shape[1]))
    local = []
    for step in range(steps):
        x = decay[:, :, :, step] * x + drive[:, :, :, step]
        local.append(x)
    local = torch.stack(local, dim=3)
    since_start = torch.exp(torch.cumsum(log_decay, dim=3))
    carry = drive.new_zeros((batch, dim, A.shape[1]))
    entry = []
    for k in range(chunks):
        entry.append(carry)
        carry = since_start[:, :, k, -1] * carry + local[:, :, k, -1]
    history = local + since_start * torch.stack(entry, dim=2)[:, :, :, None]
    history = history.flatten(2, 3)[:, :, :length]  # (batch, dim, L, N)
    y = (history * per_step(C, dim, dtype)).sum(-1)
    return finish(y, u, D, z), chunk_states(history, chunk)


def forward(u, delta, A, B, C, D, z, delta_bias, delta_softplus: bool, chunk: int):
    with torch.no_grad():
        return _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, chunk)


def backward(grad_out, u, delta, A, B, C, D, z, delta_bias, states, delta_softplus, chunk,
             output_mask):  # fmt: skip
    """Autograd through the chunked forward (the saved states are not needed)."""
    inputs = (u, delta, A, B, C, D, z, delta_bias)
    return autograd_backward(_scan, grad_out, inputs, delta_softplus, chunk, output_mask)
