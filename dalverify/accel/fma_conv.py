"""Float64 convolution by fused multiply-add chains, from the package's compiled extension.

Every output is the chain ``acc = fma(w, x, acc)`` from ``acc = +0.0`` over
the group's input channels, then kernel rows, then kernel columns, each step
rounded once to nearest even. A fused multiply-add is correctly rounded, so
the result is defined to the bit by that order alone: the scalar, AVX2 and
AVX-512 paths of the extension agree bit for bit, and a test rebuilds it with
exact rational arithmetic. The sum differs from the reference convolution's
(BLAS order, separate roundings) in the last bits. The rounding-error bounds
used downstream hold for any summation order, and one fused step rounds no
more than a product followed by a sum.

The extension ``dalverify.accel._fmaconv`` is built when the package is
installed with a C compiler present. Without it :func:`available` is False
and callers use the numba or numpy kernels.
"""

from __future__ import annotations

import numpy as np

from dalverify.errors import InputError

try:
    from dalverify.accel import _fmaconv
except ImportError:  # built without a C compiler
    _fmaconv = None

#: Instruction-set names accepted by :func:`conv2d_fma`, and their codes in the extension.
ISA_CODES = {"auto": 0, "scalar": 1, "avx2": 2, "avx512": 3}


def available() -> bool:
    """Return whether the compiled extension was built and imports."""
    return _fmaconv is not None


def preferred() -> bool:
    """Return whether the walk should convolve with this kernel: built, with a vector path on this processor.

    The scalar path gives the same bits but is slower than the numba kernels,
    so a processor without AVX2 keeps those.
    """
    return _fmaconv is not None and any(name != "scalar" for name in instruction_sets())


def instruction_sets() -> list[str]:
    """Return the paths this processor can run (``"scalar"`` always), or [] without the extension."""
    return [] if _fmaconv is None else list(_fmaconv.instruction_sets())


#: Rows that receive the constant term: every row, or the even rows only
#: (the ``alpha`` rows of ``(alpha, beta)`` pairs). With ``"even"`` the odd
#: rows get ``+ 0.0 * bias``, which is what
#: :func:`dalverify.graph.reference.apply_linear` adds under a
#: ``[True, False]`` mask.
BIAS_ROWS = {"all": 1, "even": 2}


def conv2d_fma(x: np.ndarray, weight: np.ndarray, stride, padding, dilation, groups: int,
               isa: str = "auto", bias: np.ndarray | None = None, bias_rows: str = "all") -> np.ndarray:
    """Compute a 2-D cross-correlation with torch ``conv2d`` semantics by fma chains, plus an optional bias.

    Same arguments and shapes as :func:`dalverify.graph.reference.conv2d`;
    ``isa`` picks a path (``"auto"``: the fastest this processor runs), which
    changes the speed, never the result. Stride-1 layers are vectorized;
    other strides run the scalar chain. ``bias`` (one value per output
    channel) is added to each finished chain with one rounding, on the rows
    that ``bias_rows`` names (see :data:`BIAS_ROWS`): the same bits as adding
    it to the result afterwards.

    Raises
    ------
    RuntimeError
        When the extension is not built (check :func:`available`).
    InputError
        For arrays that are not 4-D, channels that do not match ``groups``, a
        kernel larger than the padded input, a bias of the wrong size, or an
        ``isa`` that is unknown or that this processor cannot run.
    """
    x = np.asarray(x)
    if x.ndim != 4 or np.ndim(weight) != 4:
        raise InputError(f"conv2d_fma needs 4-D input and weight, got shapes {x.shape} and {np.shape(weight)}")
    return conv2d_fma_parts([(x, None)], weight, stride, padding, dilation, groups, isa=isa, bias=bias,
                            bias_rows=bias_rows)


def conv2d_fma_parts(parts, weight: np.ndarray, stride, padding, dilation, groups: int, isa: str = "auto",
                     bias: np.ndarray | None = None, bias_rows: str = "all",
                     addend: np.ndarray | None = None) -> np.ndarray:
    """Convolve the channel concatenation of ``parts`` without building it: :func:`conv2d_fma` bit for bit.

    ``parts`` is a list of ``(array, index)``: ``array`` is ``(rows, C_k, H,
    W)`` float64 and ``index`` is None (batch element ``b`` reads row ``b``)
    or an integer array naming, per batch element, the row to read. The
    input of the convolution is then
    ``concatenate([array[index] for array, index in parts], axis=1)``; the
    kernel copies each row straight into its padded buffer, so the
    concatenation and the gathers cost no extra pass over memory.

    ``addend``, when given, is an array broadcastable to one batch element's
    output ``(O, out_h, out_w)``. It is added after the bias, with one more
    rounding, on the rows that ``bias_rows`` names (``+ 0.0 * addend`` on the
    others), which gives the bits of a constant-add node that follows the
    convolution.
    """
    if _fmaconv is None:
        raise RuntimeError("the compiled convolution is not built; reinstall dalverify with a C compiler "
                           "(gcc or clang) on the PATH, or use the numba kernels")
    if isa not in ISA_CODES:
        raise InputError(f"isa={isa!r} is unknown; use one of {sorted(ISA_CODES)}")
    if bias_rows not in BIAS_ROWS:
        raise InputError(f"bias_rows={bias_rows!r} is unknown; use one of {sorted(BIAS_ROWS)}")
    if not parts:
        raise InputError("parts is empty; give at least one (array, index) pair")
    weight = np.ascontiguousarray(weight, dtype=np.float64)
    if weight.ndim != 4:
        raise InputError(f"the weight must be 4-D (out, in / groups, kh, kw), got shape {weight.shape}")
    arrays = [np.ascontiguousarray(array, dtype=np.float64) for array, _ in parts]
    indices = [None if index is None else np.ascontiguousarray(index, dtype=np.int64) for _, index in parts]
    first, first_index = arrays[0], indices[0]
    batch = first.shape[0] if first_index is None else first_index.size
    height, width = first.shape[2:]
    for array, index in zip(arrays, indices):
        if array.ndim != 4 or array.shape[2:] != (height, width):
            raise InputError(f"every part must be (rows, C, {height}, {width}); got {array.shape}")
        if (array.shape[0] if index is None else index.size) != batch:
            raise InputError(f"every part must give {batch} batch elements; one gives "
                             f"{array.shape[0] if index is None else index.size}")
    channels = sum(array.shape[1] for array in arrays)
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    out_channels, group_channels, kh, kw = weight.shape
    if channels != groups * group_channels or out_channels % groups:
        raise InputError(f"input channels {channels} and weight shape {weight.shape} do not match groups={groups}")
    out_h = (height + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    out_w = (width + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    if out_h < 1 or out_w < 1:
        raise InputError(f"the kernel {kh}x{kw} (dilation {dh}x{dw}) does not fit the padded input of "
                         f"{height + 2 * ph}x{width + 2 * pw}")
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=np.float64).reshape(-1)
        if bias.size != out_channels:
            raise InputError(f"bias has {bias.size} values; the weight has {out_channels} output channels")
    if addend is not None:
        try:
            addend = np.ascontiguousarray(np.broadcast_to(np.asarray(addend, dtype=np.float64),
                                                          (out_channels, out_h, out_w)))
        except ValueError:
            raise InputError(f"addend of shape {np.shape(addend)} does not broadcast to one output "
                             f"{(out_channels, out_h, out_w)}") from None
    out = np.empty((batch, out_channels, out_h, out_w))
    if batch == 0:
        return out
    dims = (batch, channels, height, width, out_channels, group_channels, kh, kw, groups, sh, sw, ph, pw, dh, dw,
            out_h, out_w)
    described = [(array, array.shape[1], index) for array, index in zip(arrays, indices)]
    try:
        mode = BIAS_ROWS[bias_rows] if bias is not None or addend is not None else 0
        _fmaconv.conv2d_parts(described, weight, out, dims, ISA_CODES[isa], bias, mode, addend)
    except ValueError as error:
        raise InputError(f"conv2d_fma_parts: {error} (isa={isa!r}, available: {instruction_sets()})") from None
    return out


__all__ = ["BIAS_ROWS", "ISA_CODES", "available", "conv2d_fma", "conv2d_fma_parts", "instruction_sets", "preferred"]
