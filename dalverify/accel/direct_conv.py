"""Direct float64 convolution compiled with numba, for large low-channel layers.

The reference convolution (:func:`dalverify.graph.reference.conv2d`) copies
the ``kh * kw`` shifted inputs into a column buffer and calls BLAS. On the
full-resolution layers of a U-Net (64 x 64 pixels, 1 to 16 channels) that
buffer leaves the caches and BLAS multiplies very thin matrices. Measured on
a 2-core x86_64 machine with one BLAS thread and 16 batch rows, it reached
0.4 to 4 GFLOP/s there, while the loop below, which accumulates one output
row at a time in place, reached 7 to 14 GFLOP/s. On small maps with many
channels BLAS is faster, so :func:`prefers_direct` picks per layer shape.

Each output is the sum, in the fixed order (input channel, kernel row,
kernel column), of float64 products added to a zero start. numba is used
without ``fastmath``, so no sum is reordered or contracted, and every batch
element gets the same result whatever the batch. The value differs from the
reference convolution only by the rounding of a different summation order.

numba is a dependency of the package, but the code runs without it:
:func:`available` is then False and callers use the reference convolution.
"""

from __future__ import annotations

import importlib.util

import numpy as np

from dalverify.accel import fma_conv

#: Output maps of at least this many pixels use the direct kernel: at 64 x 64
#: it beat the column-buffer product on every channel count measured, at
#: 16 x 16 with 32 channels it lost by up to 2x.
DIRECT_MIN_PIXELS = 2048


def available() -> bool:
    """Return whether numba is importable, so that the direct kernel can run."""
    return importlib.util.find_spec("numba") is not None


def prefers_direct(weight_shape: tuple[int, ...], out_pixels: int) -> bool:
    """Return whether the direct kernel is the faster choice for one layer shape."""
    out_channels, group_channels = weight_shape[0], weight_shape[1]
    return out_pixels >= DIRECT_MIN_PIXELS or out_channels == 1 or group_channels == 1


_KERNEL = None
_COLUMNS = None
_AVAILABLE = available()


def _compiled():
    """Compile the kernel on first use (numba is imported only then)."""
    global _KERNEL
    if _KERNEL is None:
        import numba

        @numba.njit(cache=True, nogil=True)
        def kernel(padded, weight, groups, sh, sw, dh, dw, out_h, out_w):  # pragma: no cover - compiled
            batch = padded.shape[0]
            out_channels, group_channels, kh, kw = weight.shape
            per_group = out_channels // groups
            out = np.zeros((batch, out_channels, out_h, out_w))
            for b in range(batch):
                for o in range(out_channels):
                    first = (o // per_group) * group_channels
                    for y in range(out_h):
                        acc = out[b, o, y]
                        for c in range(group_channels):
                            for i in range(kh):
                                row = padded[b, first + c, y * sh + i * dh]
                                for j in range(kw):
                                    w = weight[o, c, i, j]
                                    offset = j * dw
                                    if sw == 1:
                                        # Unit stride: the loop vectorizes.
                                        shifted = row[offset : offset + out_w]
                                        for x in range(out_w):
                                            acc[x] += w * shifted[x]
                                    else:
                                        for x in range(out_w):
                                            acc[x] += w * row[x * sw + offset]
            return out

        _KERNEL = kernel
    return _KERNEL


def _compiled_columns():
    """Compile the column-buffer builder on first use."""
    global _COLUMNS
    if _COLUMNS is None:
        import numba

        @numba.njit(cache=True, nogil=True)
        def columns(x, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w):  # pragma: no cover - compiled
            batch, channels, height, width = x.shape
            out = np.empty((batch, channels, kh, kw, out_h, out_w))
            for b in range(batch):
                for c in range(channels):
                    for i in range(kh):
                        for j in range(kw):
                            for y in range(out_h):
                                source_y = y * sh + i * dh - ph
                                row = out[b, c, i, j, y]
                                if source_y < 0 or source_y >= height:
                                    row[:] = 0.0
                                    continue
                                for t in range(out_w):
                                    source_x = t * sw + j * dw - pw
                                    if 0 <= source_x < width:
                                        row[t] = x[b, c, source_y, source_x]
                                    else:
                                        row[t] = 0.0
            return out

        _COLUMNS = columns
    return _COLUMNS


def conv2d_columns(x: np.ndarray, weight: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    """Compute the reference convolution with its column buffer built by a compiled loop.

    Bit for bit :func:`dalverify.graph.reference.conv2d`: the buffer contains
    the same values (copies and zeros), and the product is the same call.
    The compiled loop fills it in one pass without the padded copy, which on
    32 x 32 maps took as long as the product itself.
    """
    from dalverify.graph.reference import columns_product

    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    _, _, height, width = x.shape
    _, _, kh, kw = weight.shape
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    columns = _compiled_columns()(np.ascontiguousarray(x), kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w)
    return columns_product(columns, weight, groups)


def conv2d_direct(x: np.ndarray, weight: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    """2-D cross-correlation with torch ``conv2d`` semantics, without bias, by the direct kernel.

    Same arguments and shapes as :func:`dalverify.graph.reference.conv2d`.
    Raises RuntimeError when numba is missing (check :func:`available`).
    """
    if not available():
        raise RuntimeError("the direct convolution needs numba, which is not importable; install it with pip install numba")
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    _, _, height, width = x.shape
    _, _, kh, kw = weight.shape
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    padded = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else np.ascontiguousarray(x)
    return _compiled()(padded, np.ascontiguousarray(weight), groups, sh, sw, dh, dw, out_h, out_w)


def conv2d_fast(x: np.ndarray, weight: np.ndarray, stride, padding, dilation, groups: int) -> np.ndarray:
    """Compute a 2-D cross-correlation by the fastest kernel this install has.

    The compiled fma-chain convolution (:mod:`dalverify.accel.fma_conv`) runs
    when the extension is built and this processor has its AVX2 or AVX-512
    path. Otherwise the faster of the numba direct kernel and the
    column-buffer product runs, chosen by layer shape, and without numba the
    reference convolution. The choice depends on the install and the layer's
    shapes only, never on the batch, so a batch element gets the same bits in
    any batch.
    """
    from dalverify.graph.reference import conv2d

    if fma_conv.preferred():
        return fma_conv.conv2d_fma(x, weight, stride, padding, dilation, groups)
    if not _AVAILABLE:
        return conv2d(x, weight, stride, padding, dilation, groups)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    _, _, height, width = x.shape
    _, _, kh, kw = weight.shape
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if prefers_direct(weight.shape, out_h * out_w):
        return conv2d_direct(x, weight, stride, padding, dilation, groups)
    return conv2d_columns(x, weight, stride, padding, dilation, groups)


#: Kernel sets accepted by the numpy engines: "reference" is the numpy
#: reference semantics; "fast" uses :func:`conv2d_fast` for convolutions.
KERNELS = ("reference", "fast")


def conv_for(kernels: str):
    """Return the convolution of a kernel set (None for the reference one)."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels={kernels!r} is unknown; use one of {KERNELS}")
    return conv2d_fast if kernels == "fast" else None


def default_kernels() -> str:
    """Return ``"fast"`` when numba is importable or the compiled convolution is built, else ``"reference"``."""
    return "fast" if _AVAILABLE or fma_conv.available() else "reference"


__all__ = ["DIRECT_MIN_PIXELS", "KERNELS", "available", "conv2d_columns", "conv2d_direct", "conv2d_fast", "conv_for",
           "default_kernels", "prefers_direct"]
