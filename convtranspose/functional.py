"""The transposed convolution as pure JAX functions, with MindSpore's semantics.

One N-dimensional `conv_transpose` does the work; `conv1d_transpose`, `conv2d_transpose` and
`conv3d_transpose` only fix the rank. Three algorithms compute the same numbers:

* ``'dilated'``, the reference formulation: a stride-1 convolution of the ``stride``-dilated input
  (``lhs_dilation``) with the spatially flipped kernel, padded by ``dk - 1 - pad`` on each side (negative
  values crop);
* ``'phase'``, the sub-pixel decomposition: one stride-1 convolution of the undilated input with
  ``prod(stride)`` times the output channels, one block per output phase, interleaved (depth-to-space) and
  cropped. It never multiplies the inserted zeros and never builds the dilated input; on CPU its stride-1
  convolution is one matrix product of the input's patches, so that it and both gradients run on XLA's
  fast matrix-multiply path (see `_valid_convolution`);
* ``'hybrid'``: ``'dilated'`` for the value alone, ``'phase'`` wherever JAX differentiates it (the
  value and its derivatives both, in `jax.grad`, `jax.vjp`, `jax.jvp`), for layers whose forward pass
  XLA computes faster from the dilated input while the phase derivatives stay fast.

``'auto'`` picks one per layer and per platform XLA compiles for (CPU or not; `lax.platform_dependent`
decides at lowering, so `jax.export` for a GPU gets the GPU's choice); see `_choose_algorithm`.
"""

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.custom_derivatives import SymbolicZero

from convtranspose import _arguments, _shapes

Array = jax.Array
IntOrTuple = int | tuple[int, ...]


def conv_transpose_output_shape(input_shape: Sequence[int], kernel_size: IntOrTuple, stride: IntOrTuple = 1,
                                pad_mode: str = "same", padding: IntOrTuple = 0, dilation: IntOrTuple = 1, *,
                                output_padding: IntOrTuple = 0) -> tuple[int, ...]:
  """Spatial output shape of a MindSpore transposed convolution.

  Per spatial dimension, with ``dk = dilation * (kernel_size - 1) + 1`` and input length ``L``:

  * ``same``: ``L * stride``;
  * ``valid``: ``L * stride + max(dk - stride, 0)``;
  * ``pad``: ``L * stride + dk - stride - (pad_lo + pad_hi) + output_padding``.

  Args:
    input_shape: the *spatial* input shape, e.g. ``(H, W)``; its length sets the number of dimensions.
    kernel_size: int or tuple, one per spatial dimension.
    stride: int or tuple.
    pad_mode: ``'same'``, ``'valid'`` or ``'pad'``.
    padding: int or a tuple of two per dimension, MindSpore's order (``(top, bottom, left, right)``).
    dilation: int or tuple.
    output_padding: int or tuple, each in ``[0, max(stride, dilation))``; only with ``pad_mode='pad'``.

  Returns:
    The spatial output shape; a zero means an empty output.

  Raises:
    TypeError, ValueError: for invalid arguments (as MindSpore), or a negative output length.

  >>> conv_transpose_output_shape((16, 50), 4, pad_mode='pad')
  (19, 53)
  >>> conv_transpose_output_shape((5,), 3, stride=4, pad_mode='valid')
  (20,)
  >>> conv_transpose_output_shape((8, 8, 8), 3, stride=2, pad_mode='pad', padding=1, output_padding=1)
  (16, 16, 16)
  """
  geometry = _arguments.geometry(len(input_shape), kernel_size, stride, pad_mode, padding, dilation, 1,
                                 output_padding)
  return geometry.output_shape(tuple(input_shape))


def conv_transpose(x: Array, weight: Array, bias: Array | None = None, stride: IntOrTuple = 1,
                   pad_mode: str = "same", padding: IntOrTuple = 0, dilation: IntOrTuple = 1, group: int = 1,
                   *, output_padding: IntOrTuple = 0, output_size: IntOrTuple | None = None,
                   padding_mode: str = "zeros", data_format: str | None = None, precision: lax.PrecisionLike = None,
                   algorithm: str = "auto") -> Array:
  """N-dimensional transposed convolution with MindSpore's semantics (``nn.Conv{1,2,3}dTranspose``).

  The number of spatial dimensions ``n`` is ``weight.ndim - 2``. The result is the adjoint (the VJP with
  respect to the input) of the forward convolution with the same ``weight``, ``stride``, ``dilation``,
  ``group`` and padding, whose output has the shape below. Per spatial dimension, with
  ``dk = dilation * (k - 1) + 1`` and input length ``L``:

  ==========  ==============================================  =========================================
  pad_mode    output length                                   forward padding ``(lo, hi)``
  ==========  ==============================================  =========================================
  ``same``    ``L * stride``                                  ``lo = max(dk - stride, 0) // 2``, rest hi
  ``valid``   ``L * stride + max(dk - stride, 0)``            ``(0, 0)``
  ``pad``     ``L * stride + dk - stride - (lo + hi) + op``   ``(lo, hi - op)``, ``op = output_padding``
  ==========  ==============================================  =========================================

  When ``dk < stride`` in ``same`` and ``valid`` mode, the last ``stride - dk`` rows receive no input and
  hold zeros (plus bias). An output length of zero gives an empty array. ``output_padding`` rows hold
  convolution values, as in PyTorch and MindSpore's 3-D layer (MindSpore 2.x's 2-D layer zero-fills them
  after adding the bias).

  Args:
    x: input, ``(N, C_in, *spatial)`` (``NCHW`` in 2-D), or ``(N, *spatial, C_in)`` with a channels-last
      ``data_format``; without the ``N`` axis for one unbatched example (the output has none either).
    weight: ``(C_in, C_out // group, *kernel_size)``, MindSpore's layout (the ``IOHW`` kernel spec in 2-D).
    bias: ``(C_out,)`` or None.
    stride: int or tuple of ``n`` ints ``>= 1``.
    pad_mode: ``'same'``, ``'valid'`` or ``'pad'``.
    padding: int or tuple of ``2 * n`` ints ``>= 0``, MindSpore's order (``(top, bottom, left, right)``
      in 2-D); must be zero unless ``pad_mode == 'pad'``. Values above ``dk - 1`` crop.
    dilation: int or tuple of ``n`` ints ``>= 1``.
    group: splits channels: input channels of group ``g`` (rows ``g`` of ``weight``) feed output channels
      of group ``g``. ``group == C_in == C_out`` is depthwise.
    output_padding: int or tuple of ``n`` ints, each in ``[0, max(stride, dilation))``: rows added at the
      high end of each spatial dimension; only with ``pad_mode='pad'``.
    output_size: the spatial output shape to produce (an int, ``n`` ints, or a whole output shape such as
      ``skip.shape``): picks the ``output_padding`` that gives it, as PyTorch's ``forward(x, output_size)``;
      a size out of reach raises ValueError naming the reachable range.
    padding_mode: ``'zeros'`` (default, MindSpore's), ``'circular'``, ``'reflect'`` or ``'replicate'``. The
      result is the adjoint of the forward convolution whose input is padded by
      ``jnp.pad(mode='wrap' | 'reflect' | 'edge')`` instead of zeros: the padded rows' contributions fold
      back onto the rows they copy (for ``'circular'``, wrap-around accumulation on a periodic domain).
    data_format: ``'NCL'``/``'NLC'``, ``'NCHW'``/``'NHWC'`` or ``'NCDHW'``/``'NDHWC'`` for 1, 2, 3
      spatial dimensions; None (default) is channels-first. ``weight`` keeps its layout either way.
    precision: passed to `jax.lax.conv_general_dilated`.
    algorithm: ``'auto'`` (default), ``'dilated'``, ``'phase'`` or ``'hybrid'``: how XLA is asked to compute
      it (see the module docstring); every choice gives the same result up to float rounding.

  Returns:
    ``(N, C_out, *out_spatial)`` (channels-last: ``(N, *out_spatial, C_out)``; unbatched: no ``N``), in the
    promoted dtype of ``x``, ``weight`` and ``bias``.

  Raises:
    TypeError, ValueError: for invalid arguments (MindSpore's types), inputs whose rank or channel count
      does not match ``weight``, or a negative output length.

  >>> x = jnp.ones((1, 1, 2, 2))
  >>> conv_transpose(x, jnp.ones((1, 1, 2, 2)), stride=2, pad_mode='valid').shape
  (1, 1, 4, 4)
  >>> conv_transpose(x, jnp.ones((1, 1, 3, 3)), stride=2, pad_mode='same')[0, 0]
  Array([[1., 1., 2., 1.],
         [1., 1., 2., 1.],
         [2., 2., 4., 2.],
         [1., 1., 2., 1.]], dtype=float32)
  >>> conv_transpose(jnp.ones((3, 3, 4)), jnp.ones((4, 2, 3, 3)), stride=2, pad_mode='pad', padding=1,
  ...                output_padding=1, data_format='NHWC').shape
  (6, 6, 2)
  """
  weight_shape = np.shape(weight)
  if len(weight_shape) < 3:
    raise ValueError(f"`weight` must have shape (C_in, C_out // group, *kernel_size) with at least one spatial "
                     f"dimension, but got shape {weight_shape}.")
  geometry = _arguments.geometry(len(weight_shape) - 2, weight_shape[2:], stride, pad_mode, padding, dilation, group,
                                 output_padding, data_format, padding_mode)
  return _conv_transpose(x, weight, bias, geometry, precision, _arguments.checked_algorithm(algorithm), output_size)


def conv1d_transpose(x: Array, weight: Array, bias: Array | None = None, stride: IntOrTuple = 1,
                     pad_mode: str = "same", padding: IntOrTuple = 0, dilation: IntOrTuple = 1, group: int = 1,
                     *, output_padding: IntOrTuple = 0, output_size: IntOrTuple | None = None,
                     padding_mode: str = "zeros", data_format: str | None = None,
                     precision: lax.PrecisionLike = None, algorithm: str = "auto") -> Array:
  """`conv_transpose` for ``x`` of shape ``(N, C_in, L)``, ``weight`` ``(C_in, C_out // group, k)``.

  ``padding`` is an int or ``(left, right)``.
  """
  _check_rank(weight, 1)
  return conv_transpose(x, weight, bias, stride, pad_mode, padding, dilation, group, output_padding=output_padding,
                        output_size=output_size, padding_mode=padding_mode, data_format=data_format,
                        precision=precision, algorithm=algorithm)


def conv2d_transpose(x: Array, weight: Array, bias: Array | None = None, stride: IntOrTuple = 1,
                     pad_mode: str = "same", padding: IntOrTuple = 0, dilation: IntOrTuple = 1, group: int = 1,
                     *, output_padding: IntOrTuple = 0, output_size: IntOrTuple | None = None,
                     padding_mode: str = "zeros", data_format: str | None = None,
                     precision: lax.PrecisionLike = None, algorithm: str = "auto") -> Array:
  """`conv_transpose` for ``x`` of shape ``(N, C_in, H, W)``, ``weight`` ``(C_in, C_out // group, kH, kW)``.

  ``padding`` is an int or ``(top, bottom, left, right)``.

  >>> x = jnp.ones((1, 3, 16, 50))
  >>> conv2d_transpose(x, jnp.ones((3, 64, 4, 4)), pad_mode='pad').shape
  (1, 64, 19, 53)
  """
  _check_rank(weight, 2)
  return conv_transpose(x, weight, bias, stride, pad_mode, padding, dilation, group, output_padding=output_padding,
                        output_size=output_size, padding_mode=padding_mode, data_format=data_format,
                        precision=precision, algorithm=algorithm)


def conv3d_transpose(x: Array, weight: Array, bias: Array | None = None, stride: IntOrTuple = 1,
                     pad_mode: str = "same", padding: IntOrTuple = 0, dilation: IntOrTuple = 1, group: int = 1,
                     *, output_padding: IntOrTuple = 0, output_size: IntOrTuple | None = None,
                     padding_mode: str = "zeros", data_format: str | None = None,
                     precision: lax.PrecisionLike = None, algorithm: str = "auto") -> Array:
  """`conv_transpose` for ``x`` of shape ``(N, C_in, D, H, W)``, ``weight`` ``(C_in, C_out // group, kD, kH, kW)``.

  ``padding`` is an int or ``(head, tail, top, bottom, left, right)``.
  """
  _check_rank(weight, 3)
  return conv_transpose(x, weight, bias, stride, pad_mode, padding, dilation, group, output_padding=output_padding,
                        output_size=output_size, padding_mode=padding_mode, data_format=data_format,
                        precision=precision, algorithm=algorithm)


def _check_rank(weight: Any, n: int) -> None:
  if np.ndim(weight) != n + 2:
    raise ValueError(f"`weight` must have {n + 2} dimensions (C_in, C_out // group, {n} kernel sizes) for a "
                     f"{n}-D transposed convolution, but got shape {np.shape(weight)}.")


def _check_operands(x: Array, weight: Array, bias: Array | None, geometry: _arguments.Geometry) -> int:
  """Checks a batched ``x`` and ``bias`` against ``weight``; returns ``C_out``."""
  in_channels = weight.shape[0]
  channel_axis = _data_axes(weight.ndim - 2, geometry.channels_last)[1]
  if x.shape[channel_axis] != in_channels:
    raise ValueError(f"`x` has {x.shape[channel_axis]} channels (axis {channel_axis} of the batched shape "
                     f"{x.shape}), but `weight` of shape {weight.shape} expects C_in = {in_channels}.")
  if in_channels % geometry.group:
    raise ValueError(f"`group` (={geometry.group}) must divide C_in = weight.shape[0] (={in_channels}).")
  out_channels = weight.shape[1] * geometry.group
  if bias is not None and bias.shape != (out_channels,):
    raise ValueError(f"`bias` must have shape (C_out,) = ({out_channels},), but got {bias.shape}.")
  return out_channels


def _data_axes(n: int, channels_last: bool) -> tuple[int, ...]:
  """The batch, channel and spatial axes of a batched input or output: ``(0, 1, 2, ..., n + 1)``, or
  ``(0, n + 1, 1, ..., n)`` when ``channels_last`` (the order of a `jax.lax.ConvDimensionNumbers` spec)."""
  return (0, n + 1, *range(1, n + 1)) if channels_last else tuple(range(n + 2))


def _batch_shape(batch: int, channels: int, spatial: tuple[int, ...], channels_last: bool) -> tuple[int, ...]:
  """``(N, C, *spatial)``, or ``(N, *spatial, C)`` when ``channels_last``."""
  return (batch, *spatial, channels) if channels_last else (batch, channels, *spatial)


def _conv_transpose(x: Array, weight: Array, bias: Array | None, geometry: _arguments.Geometry,
                    precision: lax.PrecisionLike, algorithm: str = "auto",
                    output_size: IntOrTuple | None = None) -> Array:
  """The core: canonical arguments only, never re-validated beyond the operands' shapes (and
  ``output_size``, which needs the input's)."""
  x, weight = jnp.asarray(x), jnp.asarray(weight)
  bias = None if bias is None else jnp.asarray(bias)
  n = weight.ndim - 2
  if x.ndim not in (n + 1, n + 2):
    layout = "(N, *spatial, C_in)" if geometry.channels_last else "(N, C_in, *spatial)"
    raise ValueError(f"`x` must have {n + 2} dimensions {layout} with {n} spatial, or {n + 1} without N (one "
                     f"unbatched example), to match a weight of shape {weight.shape}, but got shape {x.shape}.")
  unbatched = x.ndim == n + 1
  if unbatched:
    x = x[None]
  out_channels = _check_operands(x, weight, bias, geometry)
  dtype = jnp.result_type(*(a for a in (x, weight, bias) if a is not None))
  x, weight = x.astype(dtype), weight.astype(dtype)
  in_spatial = tuple(x.shape[axis] for axis in _data_axes(n, geometry.channels_last)[2:])
  if output_size is not None:
    geometry = _arguments.with_output_size(geometry, in_spatial, output_size)
  out_spatial = geometry.output_shape(in_spatial)
  out_shape = _batch_shape(x.shape[0], out_channels, out_spatial, geometry.channels_last)

  def compute(x: Array, weight: Array, *, on_cpu: bool) -> Array:
    method = _COMPUTE[_choose_algorithm(algorithm, geometry, weight.shape[0], out_channels, dtype, on_cpu)]
    if geometry.padding_mode == "zeros":
      return method(x, weight, geometry, out_spatial, precision, on_cpu)
    # The zero-padded adjoint of the unpadded convolution, then the padding's adjoint.
    unpadded = dataclasses.replace(geometry, padding=((0, 0),) * n)
    y = method(x, weight, unpadded, unpadded.output_shape(in_spatial), precision, on_cpu)
    return _fold_padding(y, geometry, out_spatial)

  if 0 in out_shape or x.size == 0:
    y = jnp.zeros(out_shape, dtype)  # nothing to convolve: no input reaches any output
  else:
    # The platform is the one XLA compiles for, known at lowering: a CPU device on a GPU host, or
    # `jax.export` for another platform (or several), gets that platform's algorithm and layout.
    y = lax.platform_dependent(x, weight, cpu=functools.partial(compute, on_cpu=True),
                               default=functools.partial(compute, on_cpu=False))
  if bias is not None:
    y = y + bias.astype(dtype).reshape(_batch_shape(1, out_channels, (1,) * n, geometry.channels_last))
  return y[0] if unbatched else y


def _fold_padding(y: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...]) -> Array:
  """The adjoint of padding by `jnp.pad` with ``geometry.padding_mode``, one spatial axis at a time.

  The forward convolution's input ``z`` (``out`` rows, ``output_padding`` included) is padded by the layer's
  ``(lo, hi)`` (before ``output_padding``; cropped where negative) to ``out + lo + hi`` rows, row ``i`` a copy
  of row ``source[i]`` (the padded ``arange``). ``y`` is the transposed convolution of that padded input
  (``(L - 1) * s + dk`` rows, then zeros for the rows no window reaches); its adjoint adds each padded row
  onto the row it copies, and puts zeros in the cropped rows.
  """
  mode = _arguments.PADDING_MODES[geometry.padding_mode]
  layer_padding = [(lo, hi + op) for (lo, hi), op in zip(geometry.padding, geometry.output_padding)]
  for axis, (out, (lo, hi)) in zip(_data_axes(len(out_spatial), geometry.channels_last)[2:],
                                   zip(out_spatial, layer_padding)):
    # Only 'same' with dk < s crops (hi = dk - s), leaving (L - 1) * s + dk >= 1 rows to pad from.
    before, after, kept = max(lo, 0), max(hi, 0), out - max(-lo, 0) - max(-hi, 0)
    y = lax.pad(y, jnp.zeros((), y.dtype), [(0, 0, 0)] * axis + [(0, out + lo + hi - y.shape[axis], 0)]
                + [(0, 0, 0)] * (y.ndim - axis - 1))
    source = np.pad(np.arange(kept), (before, after), mode=mode)
    folded = lax.slice_in_dim(y, before, before + kept, axis=axis)
    border = np.r_[0:before, before + kept:len(source)]
    if border.size:
      index = (slice(None),) * axis + (source[border],)
      folded = folded.at[index].add(jnp.take(y, border, axis=axis))
    y = lax.pad(folded, jnp.zeros((), y.dtype), [(0, 0, 0)] * axis + [(max(-lo, 0), max(-hi, 0), 0)]
                + [(0, 0, 0)] * (y.ndim - axis - 1))
  return y


def _lhs_dilated(x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
                 precision: lax.PrecisionLike, on_cpu: bool) -> Array:
  """``conv(dilate(x, stride), flip(W))``: the reference formulation, guarded against an XLA abort.

  On CPU it is computed channels-last, the layout XLA's CPU convolutions run fastest (forward, fp32,
  channels-first input: 4x128->128 32x32 k3 s2 7.4 ms through NHWC vs 8.8 ms in NCHW, 8x128->64 32x32
  k2 s2 3.9 vs 4.5 ms): a channels-first caller pays one transpose each way.
  """
  if not geometry.channels_last and on_cpu:
    inside = dataclasses.replace(geometry, channels_last=True)
    return jnp.moveaxis(_lhs_dilated(jnp.moveaxis(x, 1, -1), weight, inside, out_spatial, precision, on_cpu), -1, 1)
  n = weight.ndim - 2
  conv_padding = [
      _shapes.lhs_dilated_padding(k, d, pad)
      for k, d, pad in zip(geometry.kernel_size, geometry.dilation, geometry.padding)
  ]
  extra = [
      _operand_swap_guard(k, s, d, pad, out)
      for k, s, d, pad, out in zip(geometry.kernel_size, geometry.stride, geometry.dilation, conv_padding, out_spatial)
  ]
  conv_padding = [(lo, hi + e) for (lo, hi), e in zip(conv_padding, extra)]
  spatial = tuple(range(2, n + 2))
  data_spec = _data_axes(n, geometry.channels_last)
  y = lax.conv_general_dilated(
      x,
      lax.rev(_group_kernel(weight, geometry.group), spatial),
      window_strides=(1,) * n,
      padding=conv_padding,
      lhs_dilation=geometry.stride,
      rhs_dilation=geometry.dilation,
      # Kernel (C_in // group, C_out, *k): axis 1 is the output feature, axis 0 the input feature.
      dimension_numbers=lax.ConvDimensionNumbers(lhs_spec=data_spec, rhs_spec=(1, 0, *spatial), out_spec=data_spec),
      feature_group_count=geometry.group,
      precision=precision,
  )
  if any(extra):
    y = lax.slice(y, (0,) * y.ndim, _batch_shape(y.shape[0], y.shape[data_spec[1]], out_spatial,
                                                 geometry.channels_last))
  return y


def _choose_algorithm(algorithm: str, geometry: _arguments.Geometry, in_channels: int, out_channels: int,
                      dtype: Any, on_cpu: bool) -> str:
  """``algorithm``, with ``'auto'`` resolved for the platform (CPU or not) and the layer.

  Measured on 2 CPU cores (``benchmarks/results/cpu-fp32.json`` and ``cpu-bf16.json``): with a stride above 1,
  ``'auto'`` takes 0.53x the reference's forward time (geometric mean over ten layers; 0.01x-1.31x) and
  0.05x its training step, where the lhs-dilated weight gradient falls off XLA's fast path (32x256->128 8x8
  k4 s2: 590 ms vs 30 ms). In bfloat16 0.38x and 0.05x.
  Its forward pass loses in two dimensions where the kernel's taps leave holes in the phase kernel
  (``k % s != 0`` without dilation) and the input has at least as many channels as the output; there
  ``'hybrid'`` keeps the dilated forward pass and the phase derivatives. ``python benchmarks/algorithms.py``
  (NCHW input, fp32, forward, hybrid vs phase): 32x512->256 4x4 k3 s2 7.5 vs 21.4 ms, 8x128->128 16x16 k3
  s2 4.5 vs 6.8, 4x128->128 32x32 k3 s2 8.8 vs 11.4, 8x128->64 16x16 k5 s2 4.4 vs 6.9, 8x96->96 16x16 k6
  s4 9.9 vs 12.8; training steps equal. Not with more output channels (8x64->256 32x32 k3 s2: 89 vs 70
  ms), nor where the taps tile (8x64->64 32x32 k4 s2: 25 vs 6.8 ms), nor in one dimension (split: 1.08 vs
  0.99 ms, 0.83 vs 0.98 ms), nor in three, where XLA's CPU lhs-dilated convolution is a naive loop
  (2x32->16 8^3 k4 s2: 95 vs 0.92 ms). In bfloat16 and float16 the phases' matrix product runs on the
  CPU's matrix units (`_valid_convolution`) and wins these layers too (bf16 forward, phase vs hybrid:
  4x128->128 32x32 k3 s2 7.0 vs 7.8 ms, 8x128->128 16x16 k3 s2 2.9 vs 3.5 ms). At stride 1 there are no
  phases and no inserted zeros; the reference is as fast (bf16 stride 1 8x64->64 16x16 k3: 1.1 vs 1.6 ms
  forward, 2.6 vs 5.5 ms per training step). On GPU the lhs-dilated form with the kernel reversed in-graph
  reaches cuDNN's backward-data kernel; that backend keeps the reference until the H100 measurements of the
  benchmark suite decide otherwise.
  """
  if algorithm != "auto":
    return algorithm
  if not on_cpu or all(s == 1 for s in geometry.stride):
    return "dilated"
  # The phase kernel has s * ((k - 1) * d // s + 1) slots per dimension for k taps (`_shapes.phase_plan`).
  holes = any(s * ((k - 1) * d // s + 1) > k for k, s, d in zip(geometry.kernel_size, geometry.stride,
                                                                geometry.dilation))
  narrow = _accumulation_type(dtype) is not None
  if holes and len(geometry.stride) == 2 and geometry.group == 1 and in_channels >= out_channels and not narrow:
    return "hybrid"
  return "phase"


def _phase(x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
           precision: lax.PrecisionLike, on_cpu: bool) -> Array:
  """The sub-pixel decomposition (`convtranspose._shapes.phase_plan`), computed channels-last.

  The phase kernel ``(*K, C_in // G, G * prod(s) * C_out // G)`` is gathered from ``weight`` by one einsum
  with 0/1 tap-selection tensors (exact: each entry is one weight or zero; differentiable). The input is
  padded or cropped explicitly and convolved unpadded: folding the padding into the convolution put XLA's
  CPU weight gradient on its slow path (measured 2,000 ms vs 66 ms for the training step of the 32x256->128
  8x8 layer).
  """
  n = weight.ndim - 2
  batched_lengths = [x.shape[axis] for axis in _data_axes(n, geometry.channels_last)[2:]]
  plans = [
      _shapes.phase_plan(length, k, s, d, pad, out)
      for length, k, s, d, pad, out in zip(batched_lengths, geometry.kernel_size, geometry.stride, geometry.dilation,
                                            geometry.padding, out_spatial)
  ]
  group, (in_channels, out_per_group) = geometry.group, weight.shape[:2]
  selections = []
  for plan, k, s in zip(plans, geometry.kernel_size, geometry.stride):
    selection = np.zeros((s, plan.kernel_size, k), np.float32)
    for j, (phase, position) in enumerate(plan.taps):
      selection[phase, position, j] = 1
    selections.append(jnp.asarray(selection, weight.dtype))
  taps, phases, positions = "jklmnopq"[:n], "rstuvwxy"[:n], "ABCDEFGH"[:n]  # any rank up to 8
  gather = (f"gic{taps}," + ",".join(f"{phases[a]}{positions[a]}{taps[a]}" for a in range(n)) +
            f"->{positions}ig{phases}c")
  kernel = jnp.einsum(gather, weight.reshape(group, in_channels // group, out_per_group, *weight.shape[2:]),
                      *selections, precision=lax.Precision.HIGHEST)
  num_phases = int(np.prod(geometry.stride))
  kernel = kernel.reshape(*kernel.shape[:n], in_channels // group, group * num_phases * out_per_group)

  if not geometry.channels_last:
    x = jnp.moveaxis(x, 1, -1)
  x = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((*plan.padding, 0) for plan in plans), (0, 0, 0)])
  y = _valid_convolution(x, kernel, group, precision, on_cpu)
  # Depth-to-space: (N, *Q, G, *s, C // G) -> (N, Q_1, s_1, ..., Q_n, s_n, G, C // G) -> (N, *(Q * s), C).
  batch, lengths = y.shape[0], [plan.length for plan in plans]
  y = y.reshape(batch, *lengths, group, *geometry.stride, out_per_group)
  interleave = [0, *(a for axis in range(n) for a in (1 + axis, 2 + n + axis)), 1 + n, 2 + 2 * n]
  y = y.transpose(interleave).reshape(batch, *(q * s for q, s in zip(lengths, geometry.stride)),
                                      group * out_per_group)
  y = lax.slice(y, (0, *(plan.crop for plan in plans), 0),
                (batch, *(plan.crop + out for plan, out in zip(plans, out_spatial)), group * out_per_group))
  return y if geometry.channels_last else jnp.moveaxis(y, -1, 1)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _hybrid(x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
            precision: lax.PrecisionLike, on_cpu: bool) -> Array:
  """`_lhs_dilated` as a value; differentiated, `_phase` (see `_phase_jvp`)."""
  return _lhs_dilated(x, weight, geometry, out_spatial, precision, on_cpu)


@functools.partial(_hybrid.defjvp, symbolic_zeros=True)
def _phase_jvp(geometry, out_spatial, precision, on_cpu, primals, tangents):
  """``f(x, W)`` is bilinear: ``df = f(dx, W) + f(x, dW)``, every term by the phase decomposition.

  The value is recomputed by the phases too, so that reverse mode shares their patches between the value
  and the weight gradient, as `_phase` alone would; the dilated value is only for undifferentiated calls.
  A tangent JAX knows to be zero (an argument not differentiated) costs nothing.
  """
  (x, weight), (x_dot, weight_dot) = primals, tangents
  compute = functools.partial(_phase, geometry=geometry, out_spatial=out_spatial, precision=precision,
                              on_cpu=on_cpu)
  y = compute(x, weight)
  terms = []
  if not isinstance(x_dot, SymbolicZero):
    terms.append(compute(x_dot, weight))
  if not isinstance(weight_dot, SymbolicZero):
    terms.append(compute(x, weight_dot))
  return y, functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)


def _valid_convolution(x: Array, kernel: Array, group: int, precision: lax.PrecisionLike, on_cpu: bool) -> Array:
  """Stride-1 unpadded convolution, channels-last: ``x`` ``(N, *L, C)``, ``kernel`` ``(*K, C // G, M)``.

  On CPU, with one group and two or more spatial dimensions, it is one matrix product of the patches,
  ``y[p, m] = sum_{t, c} x[p + t, c] * kernel[t, c, m]``, the ``prod(K)`` shifted windows of ``x``
  concatenated along the channels (im2col). XLA's CPU convolution computes the forward pass as fast, but not
  its weight gradient; the plain 2-D dot and the dots of its gradients stay on the fast matrix-multiply path.
  Measured on 2 cores, training step (gradients of input and weight) with the convolution vs with the
  product, fp32: 32x256->128 8x8 k4 s2 57 vs 39 ms, 8x128->64 32x32 k2 s2 42 vs 11 ms, 4x128->128 32x32 k3 s2
  90 vs 30 ms, 2x32->16 8^3 k4 s2 7.9 vs 3.0 ms, forward passes equal; bfloat16 alike. The 1-D audio layers of
  ``benchmarks/bench.py`` train faster with the convolution in float32 (4.2 vs 4.9 ms, 5.2 vs 5.7 ms), so
  they keep it there. In bfloat16 and float16 every rank takes the product, accumulated in float32
  (`_accumulation_type`) and rounded once: XLA runs ``bf16 x bf16 -> f32`` products on the CPU's matrix units
  (AMX on the benchmark machine) but not products with a bf16 result, which it also accumulates in float32
  (the same error against float64). A 2592x1024x512 bf16 product: 1.8 ms vs 9.4 ms.
  The product holds ``prod(K)`` copies of the input. Elsewhere it is XLA's convolution (cuDNN on GPU).
  """
  n = kernel.ndim - 2
  lengths = [length - k + 1 for length, k in zip(x.shape[1:-1], kernel.shape[:n])]
  accumulation = _accumulation_type(x.dtype)
  if group == 1 and (n >= 2 or accumulation) and on_cpu:
    windows = [lax.slice(x, (0, *start, 0), (x.shape[0], *(s + q for s, q in zip(start, lengths)), x.shape[-1]))
               for start in np.ndindex(*kernel.shape[:n])]  # tap-major, as the kernel's (*K, C) rows
    patches = jnp.concatenate(windows, axis=-1)
    y = jnp.dot(patches.reshape(-1, patches.shape[-1]), kernel.reshape(-1, kernel.shape[-1]), precision=precision,
                preferred_element_type=accumulation)
    return y.astype(x.dtype).reshape(x.shape[0], *lengths, kernel.shape[-1])
  data_spec = _data_axes(n, channels_last=True)
  return lax.conv_general_dilated(
      x, kernel, window_strides=(1,) * n, padding=[(0, 0)] * n,
      dimension_numbers=lax.ConvDimensionNumbers(lhs_spec=data_spec, rhs_spec=(n + 1, n, *range(n)),
                                                 out_spec=data_spec),
      feature_group_count=group, precision=precision)


def _accumulation_type(dtype: Any) -> Any:
  """``float32`` for floats narrower than 32 bits (the product's accumulator), else None (the input's own)."""
  return jnp.float32 if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32 else None


_COMPUTE = {"dilated": _lhs_dilated, "phase": _phase, "hybrid": _hybrid}


def _group_kernel(weight: Array, group: int) -> Array:
  """MindSpore's ``(C_in, C_out // G, *k)`` as ``(C_in // G, C_out, *k)``, output channels group-major.

  XLA's grouped convolution splits the kernel's output-feature axis into ``G`` consecutive blocks, block
  ``g`` seeing input channels ``[g * C_in / G, (g + 1) * C_in / G)``; MindSpore's weight holds group ``g``
  in rows ``[g * C_in / G, (g + 1) * C_in / G)``. With one group this is only a relabelling (no copy).
  """
  if group == 1:
    return weight
  in_channels, out_per_group, *kernel = weight.shape
  grouped = weight.reshape(group, in_channels // group, out_per_group, *kernel)
  return jnp.swapaxes(grouped, 0, 1).reshape(in_channels // group, group * out_per_group, *kernel)


def _operand_swap_guard(kernel_size: int, stride: int, dilation: int, conv_padding: tuple[int, int],
                        out_length: int) -> int:
  """Extra high padding (0 or 1) that keeps one spatial dimension away from an XLA abort.

  XLA's convolution operand swap (``SwapConvolutionOperandsIfBeneficial`` in ``conv_operand_swapper.cc``,
  run by the algebraic simplifier) treats a spatial dimension with zero padding, no window dilation or
  reversal, ``base_dilation == window_size`` and ``stride == window_size - 1`` as a "group" dimension and
  copies its window unchanged into the swapped convolution, whose kernel then no longer fits it: a CHECK
  failure ("Window dimensions do not match RHS shape") kills the process (jaxlib 0.10.2 and 0.11.2, CPU
  and GPU). Two convolutions of ours can match that pattern:

  * the forward pass (window ``k``, base dilation ``stride``, window stride 1): ``k == stride == 2``,
    ``dilation == 1`` and zero padding;
  * JAX's weight gradient of it (window = the output cotangent of length ``out``, base dilation
    ``stride``, window stride ``dilation``, same padding): ``out == stride`` and
    ``dilation == stride - 1`` with zero padding.

  For those dimensions one more row of padding at the high end (sliced off afterwards) breaks the
  pattern in both; the input gradient has no base dilation and cannot match. Grouped convolutions are
  guarded too, since XLA may rewrite them into ungrouped ones before the swap. Verified by
  ``tests/test_xla_abort.py`` over every small configuration.

  Returns:
    1 if the dimension must be padded by one more row (and the result sliced), else 0.
  """
  if conv_padding != (0, 0):
    return 0
  forward_pattern = kernel_size == stride == 2 and dilation == 1
  weight_gradient_pattern = out_length == stride and dilation == stride - 1
  return int(forward_pattern or weight_gradient_pattern)
