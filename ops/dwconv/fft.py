"""Depthwise convolution by FFT, for large kernels on CPU.

oneDNN computes the depthwise weight-gradient by im2col + GEMM once the kernel is 15 or more
wide (and the NCHW forward too), which is 5-25x slower than these FFT formulations
(measured with tools/benchmark_ops.py); the dispatcher uses the FFT weight-gradient where our own
kernels do not apply. All three directions are exact cross-correlations with
stride 1; circular wrap-around is avoided by transform sizes >= the padded map.

Notation: x (N, C, H, W), weight (C, 1, kh, kw), padding (ph, pw), dilation (dh, dw),
effective kernel extent Kh = dh * (kh - 1) + 1, output (N, C, Ho, Wo) with Ho = H + 2 ph - Kh + 1.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor


@functools.cache
def fast_fft_size(n: int) -> int:
    """Smallest 5-smooth integer >= n (pocketfft is fastest on 2^a 3^b 5^c sizes)."""
    m = max(n, 1)
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


def _compute(t: Tensor) -> Tensor:
    """float64 stays float64 (gradcheck); everything else is transformed in float32.

    Planes are made contiguous: pocketfft on channels_last strides is ~1.5x slower."""
    return (t if t.dtype == torch.float64 else t.float()).contiguous()


def _dilated_kernel(weight: Tensor, dilation: tuple[int, int]) -> Tensor:
    """(C, kh, kw) kernel spread out with dilation-1 zeros between taps: (C, Kh, Kw)."""
    w = weight[:, 0]
    dh, dw = dilation
    if dh == 1 and dw == 1:
        return w
    c, kh, kw = w.shape
    out = w.new_zeros(c, dh * (kh - 1) + 1, dw * (kw - 1) + 1)
    out[:, ::dh, ::dw] = w
    return out


def _pad_map(x: Tensor, padding: tuple[int, int]) -> Tensor:
    ph, pw = padding
    return F.pad(x, (pw, pw, ph, ph)) if ph or pw else x


def forward(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """y[n,c,o,p] = sum_ij xpad[n,c,o+i*dh,p+j*dw] * w[c,i,j]  (+ bias)."""
    xp = _pad_map(_compute(x), padding)
    k = _dilated_kernel(_compute(weight), dilation)
    hp, wp = xp.shape[-2:]
    ho, wo = hp - k.shape[-2] + 1, wp - k.shape[-1] + 1
    s = (fast_fft_size(hp), fast_fft_size(wp))
    # correlation = product with the conjugate spectrum of the kernel. conj_physical, not the
    # lazy conj() view: under torch.compile's AOT dispatch the view's conjugate bit was lost and
    # the op returned the convolution instead of the correlation (max error ~50 at 13x13).
    spec = torch.fft.rfft2(xp, s=s) * torch.fft.rfft2(k, s=s).conj_physical()
    y = torch.fft.irfft2(spec, s=s)[..., :ho, :wo]
    if bias is not None:
        y = y + _compute(bias).view(1, -1, 1, 1)
    return y.to(x.dtype)


def backward_input(
    grad_out: Tensor,
    weight: Tensor,
    input_hw: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """dx = full convolution of dy with the kernel, cropped by the padding."""
    k = _dilated_kernel(_compute(weight), dilation)
    ho, wo = grad_out.shape[-2:]
    full_h, full_w = ho + k.shape[-2] - 1, wo + k.shape[-1] - 1
    s = (fast_fft_size(full_h), fast_fft_size(full_w))
    spec = torch.fft.rfft2(_compute(grad_out), s=s) * torch.fft.rfft2(k, s=s)
    full = torch.fft.irfft2(spec, s=s)
    ph, pw = padding
    h, w = input_hw
    return full[..., ph : ph + h, pw : pw + w].to(grad_out.dtype)


def backward_weight(
    grad_out: Tensor,
    x: Tensor,
    kernel_hw: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> Tensor:
    """dW[c,i,j] = sum_{n,o,p} xpad[n,c,o+i*dh,p+j*dw] * dy[n,c,o,p].

    The batch sum is taken in the frequency domain, so only C inverse transforms are needed.
    """
    xp = _pad_map(_compute(x), padding)
    hp, wp = xp.shape[-2:]
    s = (fast_fft_size(hp), fast_fft_size(wp))
    spec = (
        torch.fft.rfft2(xp, s=s) * torch.fft.rfft2(_compute(grad_out), s=s).conj_physical()
    ).sum(0)
    corr = torch.fft.irfft2(spec, s=s)  # (C, s_h, s_w): correlation at every non-negative lag
    kh, kw = kernel_hw
    dh, dw = dilation
    dweight = corr[:, : dh * (kh - 1) + 1 : dh, : dw * (kw - 1) + 1 : dw]
    return dweight.unsqueeze(1).to(x.dtype)
