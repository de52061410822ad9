"""Shape arithmetic shared by every op and backend (stride 1 unless a function says otherwise).

One convention everywhere: along an axis, output position `o` of a correlation with kernel
`k`, padding `pad` and dilation `dil` reads input `o - pad + dil * i` for tap `i`; tap ranges
are half-open `[lo, hi)`.
"""

from __future__ import annotations

from collections.abc import Sequence


def pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    """`value` as an (h, w) pair of ints; a ValueError naming `name` otherwise."""
    if isinstance(value, int):
        return (value, value)
    try:
        result = tuple(int(v) for v in value)
    except TypeError:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}") from None
    if len(result) != 2:
        raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
    return result  # type: ignore[return-value]


def extent(kernel: int, dilation: int) -> int:
    """Input span of one output position: the dilated kernel's size."""
    return dilation * (kernel - 1) + 1


def output_size(size: int, kernel: int, padding: int, dilation: int) -> int:
    """Output length of a stride-1 correlation padded by `padding` on both sides."""
    return size + 2 * padding - extent(kernel, dilation) + 1


def output_hw(in_hw, kernel_hw, padding, dilation) -> tuple[int, int]:
    return (
        output_size(in_hw[0], kernel_hw[0], padding[0], dilation[0]),
        output_size(in_hw[1], kernel_hw[1], padding[1], dilation[1]),
    )


def live_taps(size: int, out: int, kernel: int, pad: int, dil: int) -> tuple[int, int]:
    """Taps `[lo, hi)` that read at least one real input element for some output in [0, out).

    The others only ever read padding: they contribute nothing to the output and their
    weight-gradient is zero. The range is empty (lo == hi) when no tap reaches the map.
    """
    lo = -(-max(pad - (out - 1), 0) // dil)  # ceil: first tap reaching index >= 0
    hi = min((max(size - 1 + pad, -1) + dil) // dil, kernel)  # past the last reaching < size
    return lo, max(hi, lo)


def live_window(kernel_hw, in_hw, out_hw, padding, dilation):
    """The live taps as (rows, cols) slices of the kernel, and the (top, bottom, left, right)
    padding the cropped kernel needs to give the same output (asymmetric in general; negative
    values crop the input). A map that no tap reaches keeps the whole kernel."""
    slices, pads = [], []
    for axis in (0, 1):
        pad, dil, size, out = padding[axis], dilation[axis], in_hw[axis], out_hw[axis]
        lo, hi = live_taps(size, out, kernel_hw[axis], pad, dil)
        if lo == hi:
            lo, hi = 0, kernel_hw[axis]
        pads += [pad - dil * lo, (out - 1) - pad + dil * (hi - 1) - (size - 1)]
        slices.append(slice(lo, hi))
    return tuple(slices), tuple(pads)


def rotated_padding(kernel_hw, padding, dilation) -> tuple[int, int]:
    """Padding of the input-gradient phrased as a forward correlation of grad_out with the kernel
    rotated by 180 degrees: the kernel's reach minus the forward padding (negative crops)."""
    return (
        dilation[0] * (kernel_hw[0] - 1) - padding[0],
        dilation[1] * (kernel_hw[1] - 1) - padding[1],
    )


def embed_live_taps(grad, kernel_hw, live):
    """A weight-gradient computed for the live taps only, placed in the full (C, 1, kh, kw)
    kernel; the taps that only read padding get zero."""
    if tuple(grad.shape[2:]) == tuple(kernel_hw):
        return grad
    full = grad.new_zeros((grad.shape[0], 1, *kernel_hw))
    full[:, :, live[0], live[1]] = grad
    return full
