"""The transposed convolution as pure JAX functions, with MindSpore's semantics.

One N-dimensional `conv_transpose` does the work; `conv1d_transpose`, `conv2d_transpose` and
`conv3d_transpose` only fix the rank. Three algorithms compute the same numbers, each in its own module:

* ``'dilated'`` (`convtranspose._dilated`), the reference formulation: a stride-1 convolution of the
  ``stride``-dilated input (``lhs_dilation``) with the spatially flipped kernel, padded by ``dk - 1 - pad``
  on each side (negative values crop); on accelerators differentiated as the forward convolution's adjoint,
  so that cuDNN's backward-filter kernel computes the weight gradient (`convtranspose._dilated.lhs_dilated`);
* ``'phase'`` (`convtranspose._phase`), the sub-pixel decomposition: one stride-1 convolution of the
  undilated input with ``prod(stride)`` times the output channels, one block per output phase, interleaved
  (depth-to-space) and cropped. It never multiplies the inserted zeros and never builds the dilated input;
  on CPU its stride-1 convolution is one matrix product, of the input's patches (im2col) or, for layers with
  few output channels, of the input itself followed by a shifted sum (col2im), so that it and both gradients
  run on XLA's fast matrix-multiply path (see `convtranspose._phase.padded_convolution`);
* ``'hybrid'`` (`convtranspose._hybrid`): one formulation's value and the other's derivatives, each the
  platform's faster (on CPU the dilated value with the phase derivatives, or at stride 1 the reverse, as
  elsewhere).

``'auto'`` picks one per layer and per platform XLA compiles for (CPU, GPU or TPU; `lax.platform_dependent`
decides at lowering, so `jax.export` for a GPU gets the GPU's choice): the fastest measured on this device
where a tuning table knows the layer (`convtranspose.tuning`: `autotune`, the tables shipped for this device),
the value and the training step chosen apart, else a rule (`_choose_algorithm`). ``'autotune'`` measures a
layer no table knows when it is traced, and remembers the result for the process.
"""

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from convtranspose import _arguments, _hybrid, _phase, _shapes, _sharding, tuning
from convtranspose._layout import batch_shape, data_axes

Array = jax.Array
IntOrTuple = int | tuple[int, ...]
IntOrSequence = int | tuple[int, ...] | list[int]
OutSharding = _sharding.OutSharding


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
                   algorithm: str = "auto", out_sharding: OutSharding = None,
                   preferred_element_type: Any = None) -> Array:
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
      ``data_format``; without the ``N`` axis for one unbatched example (the output has none either), or with
      several batch axes ``(*batch, ...)``, as Flax's layers take them.
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
    algorithm: ``'auto'`` (default), ``'autotune'``, ``'dilated'``, ``'phase'`` or ``'hybrid'``: how XLA is
      asked to compute it (see the module docstring; ``'auto'`` follows the active tuning, `convtranspose.tuning`);
      every choice gives the same result up to float rounding.
    out_sharding: the output's sharding, a `jax.sharding.PartitionSpec` of the context mesh or a
      `jax.sharding.NamedSharding`, as `jax.lax.conv_general_dilated` takes it. None (default): under a mesh
      with `Explicit` axes, the batch and spatial axes keep the mesh axes of ``x``'s type and the channel axis
      takes those of ``weight``'s output-channel axis (unless ``x`` uses them); elsewhere XLA propagates.
    preferred_element_type: the output's dtype, as `jax.lax.conv_general_dilated` and Flax NNX's layers take
      it: the products are summed in it, or in the operands' dtype if that is wider, then rounded to it once
      (``jnp.float32`` with ``bfloat16`` operands: their exact products summed in float32, a float32 result).
      None (default): the operands' promoted dtype.

  Returns:
    ``(N, C_out, *out_spatial)`` (channels-last: ``(N, *out_spatial, C_out)``; unbatched: no ``N``; several
    batch axes as ``x`` has them), in ``preferred_element_type`` or the promoted dtype of ``x``, ``weight`` and
    ``bias``.

  Raises:
    TypeError, ValueError: for invalid arguments (MindSpore's types), inputs whose rank or channel count
      does not match ``weight``, or a negative output length; TypeError for bool or complex operands, or
      operands that are all integers (an integer one is promoted to the others' floating dtype).

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
  return _conv_transpose(x, weight, bias, geometry, precision, _arguments.checked_algorithm(algorithm), output_size,
                         out_sharding, _arguments.floating_dtype(preferred_element_type, "preferred_element_type"))


def conv1d_transpose(x: Array, weight: Array, bias: Array | None = None, stride: IntOrTuple = 1,
                     pad_mode: str = "same", padding: IntOrTuple = 0, dilation: IntOrTuple = 1, group: int = 1,
                     *, output_padding: IntOrTuple = 0, output_size: IntOrTuple | None = None,
                     padding_mode: str = "zeros", data_format: str | None = None,
                     precision: lax.PrecisionLike = None, algorithm: str = "auto",
                     out_sharding: OutSharding = None, preferred_element_type: Any = None) -> Array:
  """`conv_transpose` for ``x`` of shape ``(N, C_in, L)``, ``weight`` ``(C_in, C_out // group, k)``.

  ``padding`` is an int or ``(left, right)``.
  """
  _check_rank(weight, 1)
  return conv_transpose(x, weight, bias, stride, pad_mode, padding, dilation, group, output_padding=output_padding,
                        output_size=output_size, padding_mode=padding_mode, data_format=data_format,
                        precision=precision, algorithm=algorithm, out_sharding=out_sharding,
                        preferred_element_type=preferred_element_type)


def conv2d_transpose(x: Array, weight: Array, bias: Array | None = None, stride: IntOrTuple = 1,
                     pad_mode: str = "same", padding: IntOrTuple = 0, dilation: IntOrTuple = 1, group: int = 1,
                     *, output_padding: IntOrTuple = 0, output_size: IntOrTuple | None = None,
                     padding_mode: str = "zeros", data_format: str | None = None,
                     precision: lax.PrecisionLike = None, algorithm: str = "auto",
                     out_sharding: OutSharding = None, preferred_element_type: Any = None) -> Array:
  """`conv_transpose` for ``x`` of shape ``(N, C_in, H, W)``, ``weight`` ``(C_in, C_out // group, kH, kW)``.

  ``padding`` is an int or ``(top, bottom, left, right)``.

  >>> x = jnp.ones((1, 3, 16, 50))
  >>> conv2d_transpose(x, jnp.ones((3, 64, 4, 4)), pad_mode='pad').shape
  (1, 64, 19, 53)
  """
  _check_rank(weight, 2)
  return conv_transpose(x, weight, bias, stride, pad_mode, padding, dilation, group, output_padding=output_padding,
                        output_size=output_size, padding_mode=padding_mode, data_format=data_format,
                        precision=precision, algorithm=algorithm, out_sharding=out_sharding,
                        preferred_element_type=preferred_element_type)


def conv3d_transpose(x: Array, weight: Array, bias: Array | None = None, stride: IntOrTuple = 1,
                     pad_mode: str = "same", padding: IntOrTuple = 0, dilation: IntOrTuple = 1, group: int = 1,
                     *, output_padding: IntOrTuple = 0, output_size: IntOrTuple | None = None,
                     padding_mode: str = "zeros", data_format: str | None = None,
                     precision: lax.PrecisionLike = None, algorithm: str = "auto",
                     out_sharding: OutSharding = None, preferred_element_type: Any = None) -> Array:
  """`conv_transpose` for ``x`` of shape ``(N, C_in, D, H, W)``, ``weight`` ``(C_in, C_out // group, kD, kH, kW)``.

  ``padding`` is an int or ``(head, tail, top, bottom, left, right)``.
  """
  _check_rank(weight, 3)
  return conv_transpose(x, weight, bias, stride, pad_mode, padding, dilation, group, output_padding=output_padding,
                        output_size=output_size, padding_mode=padding_mode, data_format=data_format,
                        precision=precision, algorithm=algorithm, out_sharding=out_sharding,
                        preferred_element_type=preferred_element_type)


_MINT_LAYOUTS = {1: ("L", "k"), 2: ("H, W", "kH, kW"), 3: ("D, H, W", "kD, kH, kW")}
_MINT_EXAMPLES = {
    1: """>>> conv_transpose1d(jnp.ones((2, 4, 10)), jnp.ones((4, 3, 4)), stride=2, padding=1).shape
  (2, 3, 20)""",
    2: """>>> x = jnp.ones((1, 16, 6, 6))
  >>> conv_transpose2d(x, jnp.ones((16, 8, 3, 3)), stride=2, padding=1).shape
  (1, 8, 11, 11)
  >>> conv_transpose2d(x, jnp.ones((16, 8, 3, 3)), stride=2, padding=1, output_padding=1).shape
  (1, 8, 12, 12)""",
    3: """>>> conv_transpose3d(jnp.ones((4, 8, 8, 8)), jnp.ones((4, 2, 3, 3, 3)), stride=2, padding=1,
  ...                  output_padding=1).shape  # unbatched
  (2, 16, 16, 16)""",
}


def _mint_function(n: int):
  """``conv_transpose{n}d`` in the ``mint`` vocabulary (``mindspore.ops.conv_transpose2d``, PyTorch's
  ``torch.nn.functional.conv_transpose{n}d``)."""

  def conv_transpose_nd(input: Array, weight: Array, bias: Array | None = None,
                        stride: IntOrSequence = 1, padding: IntOrSequence = 0, output_padding: IntOrSequence = 0,
                        groups: int = 1, dilation: IntOrSequence = 1, *, output_size: IntOrTuple | None = None,
                        padding_mode: str = "zeros", data_format: str | None = None,
                        precision: lax.PrecisionLike = None, algorithm: str = "auto",
                        out_sharding: OutSharding = None, preferred_element_type: Any = None) -> Array:
    _check_rank(weight, n)
    geometry = _arguments.mint_geometry(n, np.shape(weight)[2:], stride, padding, output_padding, groups, dilation,
                                        data_format, padding_mode)
    return _conv_transpose(input, weight, bias, geometry, precision, _arguments.checked_algorithm(algorithm),
                           output_size, out_sharding, _arguments.floating_dtype(preferred_element_type,
                                                                                "preferred_element_type"))

  spatial, kernel = _MINT_LAYOUTS[n]
  conv_transpose_nd.__name__ = conv_transpose_nd.__qualname__ = f"conv_transpose{n}d"
  conv_transpose_nd.__doc__ = f"""{n}-D transposed convolution in the ``mint`` vocabulary: MindSpore's
  ``ops.conv_transpose{n}d`` / ``mint.nn.functional.conv_transpose{n}d`` (2-D in MindSpore 2.10), PyTorch's
  ``torch.nn.functional.conv_transpose{n}d``.

  The output length per spatial dimension is
  ``(L - 1) * stride - 2 * padding + dilation * (kernel_size - 1) + output_padding + 1``.

  Args:
    input: ``(N, C_in, {spatial})``, or ``(C_in, {spatial})`` unbatched (channels-last with ``data_format``).
    weight: ``(C_in, C_out // groups, {kernel})``, the layout of MindSpore and PyTorch.
    bias: ``(C_out,)`` or None.
    stride: int, or tuple or list of {n} ints.
    padding: int, or tuple or list of {n} ints: the forward convolution's padding on both sides of each
      dimension, so ``dilation * (kernel_size - 1) - padding`` zeros border the dilated input.
    output_padding: int, or tuple or list of {n} ints in ``[0, max(stride, dilation))``: rows added at the
      high end of each dimension, computed by the convolution.
    groups: channel groups; ``groups`` must divide ``C_in``.
    dilation: int, or tuple or list of {n} ints.
    output_size: keyword-only; picks the ``output_padding`` (see `conv_transpose`).
    padding_mode: keyword-only; ``'zeros'`` (default), ``'circular'``, ``'reflect'`` or ``'replicate'`` (see
      `conv_transpose`).
    data_format: keyword-only; channels-first (None, the default) or channels-last (see `conv_transpose`).
    precision: keyword-only; passed to `jax.lax.conv_general_dilated`.
    algorithm: keyword-only; ``'auto'`` (default), ``'autotune'``, ``'dilated'``, ``'phase'`` or ``'hybrid'``.
    out_sharding: keyword-only; the output's sharding (see `conv_transpose`).
    preferred_element_type: keyword-only; the output's dtype (see `conv_transpose`).

  Returns:
    ``(N, C_out, *out_spatial)`` in ``input``'s layout, in the promoted dtype of the operands.

  Raises:
    TypeError, ValueError: for invalid arguments (MindSpore mint's types) or operands that do not match.

  {_MINT_EXAMPLES[n]}
  """
  return conv_transpose_nd


conv_transpose1d = _mint_function(1)
conv_transpose2d = _mint_function(2)
conv_transpose3d = _mint_function(3)


def _check_rank(weight: Any, n: int) -> None:
  shape = np.shape(weight)
  if len(shape) != n + 2:
    kernel = _MINT_LAYOUTS[n][1] if n in _MINT_LAYOUTS else f"{n} kernel sizes"
    hint = (" That is the weight a legacy 1-D layer (`Conv1dTranspose`, MindSpore's `nn.Conv1dTranspose`) stores, "
            "with a unit height: pass `weight[:, :, 0]`." if n == 1 and len(shape) == 4 and shape[2] == 1 else "")
    raise ValueError(f"`weight` must have {n + 2} dimensions (C_in, C_out // group, {kernel}) for a {n}-D "
                     f"transposed convolution, but got shape {shape}.{hint}")


def computation_dtype(x: Any, weight: Any, bias: Any = None) -> np.dtype:
  """The dtype a transposed convolution of these operands computes in: their promoted dtype, floating.

  An integer operand is promoted to the floating dtype of the others, as Flax's layers promote it.

  Raises:
    TypeError: an operand is bool or complex (MindSpore and PyTorch refuse them too), or none is floating.
  """
  dtypes = {name: jnp.result_type(a) for name, a in (("x", x), ("weight", weight), ("bias", bias)) if a is not None}
  for name, dtype in dtypes.items():
    if dtype == np.bool_ or jnp.issubdtype(dtype, jnp.complexfloating):
      raise TypeError(f"`{name}` has dtype {dtype}: a transposed convolution takes floating operands (an integer "
                      "one is promoted to the others' floating dtype), not bool or complex.")
  if not any(jnp.issubdtype(dtype, jnp.floating) for dtype in dtypes.values()):
    listed = ", ".join(f"`{name}` {dtype}" for name, dtype in dtypes.items())
    raise TypeError(f"The operands are all integers ({listed}): a transposed convolution computes in a floating "
                    "dtype; cast one of them, e.g. `x.astype(jnp.float32)`.")
  return jnp.result_type(*dtypes.values())


def _check_operands(x: Array, weight: Array, bias: Array | None, geometry: _arguments.Geometry,
                    unbatched: bool = False) -> int:
  """Checks a batched ``x`` (made so from one example if ``unbatched``) and ``bias`` against ``weight``;
  returns ``C_out``."""
  in_channels = weight.shape[0]
  channel_axis = data_axes(weight.ndim - 2, geometry.channels_last)[1]
  if x.shape[channel_axis] != in_channels:
    axis, shape = (channel_axis - 1, x.shape[1:]) if unbatched else (channel_axis, x.shape)
    raise ValueError(f"`x` has {x.shape[channel_axis]} channels (axis {axis} of its shape {shape}), but `weight` "
                     f"of shape {weight.shape} expects C_in = {in_channels}.")
  if in_channels % geometry.group:
    raise ValueError(f"`group` (={geometry.group}) must divide C_in = weight.shape[0] (={in_channels}).")
  out_channels = weight.shape[1] * geometry.group
  if bias is not None and bias.shape != (out_channels,):
    raise ValueError(f"`bias` must have shape (C_out,) = ({out_channels},), but got {bias.shape}.")
  return out_channels


def _conv_transpose(x: Array, weight: Array, bias: Array | None, geometry: _arguments.Geometry,
                    precision: lax.PrecisionLike, algorithm: str = "auto",
                    output_size: IntOrTuple | None = None, out_sharding: _sharding.OutSharding = None,
                    preferred_element_type: Any = None) -> Array:
  """The core: canonical arguments only, never re-validated beyond the operands' shapes (and
  ``output_size``, which needs the input's). The whole layer is one block for the sharding of its output
  (`convtranspose._sharding.sharded`)."""
  x, weight = jnp.asarray(x), jnp.asarray(weight)
  bias = None if bias is None else jnp.asarray(bias)
  n = weight.ndim - 2
  if x.ndim < n + 1:
    layout = "(N, *spatial, C_in)" if geometry.channels_last else "(N, C_in, *spatial)"
    raise ValueError(f"`x` must have {n + 2} dimensions {layout} with {n} spatial, {n + 1} without N (one "
                     f"unbatched example) or more, with several batch axes, to match a weight of shape "
                     f"{weight.shape}, but got shape {x.shape}.")
  if x.ndim > n + 2:  # several leading batch axes, as Flax's layers take them: one batch for the layer
    if out_sharding is not None:
      raise ValueError(f"`out_sharding` needs one batch axis, but `x` of shape {x.shape} has {x.ndim - n - 1}; "
                       f"reshape it to (N, ...) first.")
    batch_axes = x.shape[:x.ndim - n - 1]
    y = _conv_transpose(x.reshape(-1, *x.shape[len(batch_axes):]), weight, bias, geometry, precision, algorithm,
                        output_size, preferred_element_type=preferred_element_type)
    return y.reshape(*batch_axes, *y.shape[1:])
  unbatched = x.ndim == n + 1
  if unbatched:
    x = x[None]
  out_channels = _check_operands(x, weight, bias, geometry, unbatched)
  dtype = result_dtype = computation_dtype(x, weight, bias)
  if preferred_element_type is not None:  # summed in the wider of the two; exact products of narrower operands
    result_dtype = preferred_element_type
    dtype = jnp.promote_types(dtype, preferred_element_type)
  x, weight = x.astype(dtype), weight.astype(dtype)
  in_spatial = tuple(x.shape[axis] for axis in data_axes(n, geometry.channels_last)[2:])
  if output_size is not None:
    geometry = _arguments.with_output_size(geometry, in_spatial, output_size)
  out_spatial = geometry.output_shape(in_spatial)
  out_shape = batch_shape(x.shape[0], out_channels, out_spatial, geometry.channels_last)

  # Sizes the rule may read; a symbolic one (`jax.export.symbolic_shape`) is unknown to it, and to the tables.
  batch = x.shape[0] if _is_constant(x.shape[0]) else None
  known_spatial = in_spatial if all(map(_is_constant, in_spatial)) else None
  call = None
  if algorithm in ("auto", "autotune") and batch is not None and known_spatial is not None:
    # The per-device block under an explicit mesh: what each device computes, and what a tuning measured.
    call = tuning.LayerCall(geometry, _sharding.block_shape(x), _sharding.block_shape(weight), str(dtype),
                            precision)
    tuning.record(call)

  def compute(x: Array, weight: Array, *, platform: str) -> Array:
    choice = call and tuning.choice(call, platform, tune=algorithm == "autotune")
    if choice is None:
      choice = _choose_algorithm(algorithm, geometry, weight.shape[0], out_channels, dtype, platform, batch,
                                 known_spatial)
    method = _hybrid.FORMULATIONS[choice] if isinstance(choice, str) else choice
    if geometry.padding_mode == "zeros":
      return method(x, weight, geometry, out_spatial, precision, platform)
    # The zero-padded adjoint of the unpadded convolution, then the padding's adjoint.
    unpadded = dataclasses.replace(geometry, padding=((0, 0),) * n)
    y = method(x, weight, unpadded, unpadded.output_shape(in_spatial), precision, platform)
    return _fold_padding(y, geometry, out_spatial)

  def layer(x: Array, weight: Array, bias: Array | None) -> Array:
    # Nothing to convolve when no input reaches any output. Otherwise the platform is the one XLA compiles
    # for, known at lowering: a CPU device on a GPU host, or `jax.export` for another platform (or several),
    # gets that platform's algorithm and layout.
    empty = 0 in out_shape or x.size == 0
    y = jnp.zeros(out_shape, dtype) if empty else _by_platform(x, weight, compute)
    if bias is not None:
      # Added in float32 at least (the same sum, rounded once), so that the bias gradient, the cotangent summed
      # over the batch and every position, accumulates in float32 too, not in bfloat16.
      wide = jnp.promote_types(dtype, jnp.float32)
      y = (y.astype(wide) + bias.astype(wide).reshape(batch_shape(1, out_channels, (1,) * n,
                                                                  geometry.channels_last))).astype(dtype)
    return y

  if unbatched and out_sharding is not None:
    out_sharding = _sharding.batched(out_sharding)
  channel_axis = data_axes(n, geometry.channels_last)[1]
  y = _sharding.sharded(layer, x, weight, bias, out_shape=out_shape, channel_axis=channel_axis,
                        out_sharding=out_sharding)
  y = y.astype(result_dtype)
  return y[0] if unbatched else y


def _is_constant(size: Any) -> bool:
  """Whether an array dimension is a number, not a symbolic expression of `jax.export.symbolic_shape`."""
  return isinstance(size, (int, np.integer))


def _by_platform(x: Array, weight: Array, compute) -> Array:
  """``compute(x, weight, platform=...)`` for the platform XLA lowers for: ``'cpu'``, ``'tpu'``, or ``'gpu'``
  for any other (`lax.platform_dependent`; the tests replace it to run the accelerators' formulations here)."""
  return lax.platform_dependent(x, weight, cpu=functools.partial(compute, platform="cpu"),
                                tpu=functools.partial(compute, platform="tpu"),
                                default=functools.partial(compute, platform="gpu"))


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
  for axis, (out, (lo, hi)) in zip(data_axes(len(out_spatial), geometry.channels_last)[2:],
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


def _choose_algorithm(algorithm: str, geometry: _arguments.Geometry, in_channels: int, out_channels: int,
                      dtype: Any, platform: str, batch: int | None = None,
                      in_spatial: tuple[int, ...] | None = None) -> str | _hybrid.Plan:
  """``algorithm``, or for ``'auto'`` (and ``'autotune'``) the rule that serves where no tuning table knows the
  layer (`convtranspose.tuning`): an algorithm's name, or off the CPU a `_hybrid.Plan`. ``batch`` and
  ``in_spatial`` are None where symbolic. The measurements behind each branch: ``docs/speed.md``.

  * Few output channels (CPU): ``'phase'`` where its col2im product moves fewer values per input row than the
    input has channels (`_phase.multiplies_first`); at stride 1 ``'hybrid'`` (its value, the reference's
    derivatives) while that product fits glibc's mmap threshold.
  * Stride 1: ``'dilated'``, a plain convolution.
  * GPU: the phases' value (an H100 timed it at 0.24-0.57x the lhs-dilated program), differentiated as the
    adjoint (cuDNN's backward-data, forward and backward-filter kernels); ``'phase'`` with groups or dilation.
  * TPU: ``'phase'`` with groups; otherwise `_tpu_plan`.
  * CPU: ``'hybrid'`` for 2-D layers whose phases hold holes or extra rows, with at least as many input as
    output channels, float32 and a patch row of at least 256 values; ``'phase'`` otherwise.
  """
  if algorithm not in ("auto", "autotune"):
    return algorithm
  stride_one = all(s == 1 for s in geometry.stride)
  rows = None if batch is None or in_spatial is None else batch * math.prod(in_spatial)
  taps = math.prod(map(_shapes.phase_kernel_size, geometry.kernel_size, geometry.stride, geometry.dilation))
  columns = geometry.phase_count() * out_channels  # the phase kernel's columns per tap
  if _phase.multiplies_first(columns, in_channels, geometry.group, on_cpu=platform == "cpu"):
    if not stride_one or taps * columns < in_channels:  # few output channels: the col2im product
      return "phase"
    product_bytes = (rows or 0) * taps * columns * jnp.dtype(_phase.accumulation_type(dtype) or dtype).itemsize
    if 0 < product_bytes <= _MMAP_THRESHOLD:  # its value, and the reference's derivatives
      return "hybrid"
  if stride_one:
    return "dilated"
  if platform == "gpu":
    plain = geometry.group == 1 and all(d == 1 for d in geometry.dilation)
    return _hybrid.Plan("phase", "dilated", "adjoint") if plain else "phase"
  if platform == "tpu":
    return "phase" if geometry.group > 1 else _tpu_plan(geometry, in_channels, out_channels, batch, in_spatial)
  narrow = _phase.accumulation_type(dtype) is not None
  patch_row = taps * in_channels  # values per row of the phases' patch matrix (im2col)
  wasted = geometry.phase_holes() or geometry.phase_work(in_spatial) >= _PHASE_WORK_FOR_THE_REFERENCE
  if (wasted and len(geometry.stride) == 2 and geometry.group == 1 and in_channels >= out_channels and not narrow
      and patch_row >= 256):
    return "hybrid"
  return "phase"


def _tpu_plan(geometry: _arguments.Geometry, in_channels: int, out_channels: int, batch: int | None,
              in_spatial: tuple[int, ...] | None) -> _hybrid.Plan:
  """`auto` on TPU for one group and a stride: the value and the training step chosen apart (`_hybrid.Plan`).

  One program serves every TPU generation (`lax.platform_dependent` knows the platform, not the chip), so each
  choice is the one with the smaller product of XLA:TPU's estimated cycles over Flax's on v5e and v6e
  (``docs/speed.md``, ``benchmarks/results/accelerator-programs.md``):

  * the value nobody differentiates is the phases' where their two copies pay (moving the kernel; the
    batch-minor depth-to-space): every phase with a tap at every position, one or two dimensions, 2-D inputs
    of at least 8 examples (XLA tiles the depth-to-space by ``(N, 128)``) and ``32 x 32`` positions, and an
    output of at least 3x the kernel's values; the reference's otherwise;
  * under differentiation, where the value feeds a loss, the adjoint's derivatives
    (`convtranspose._dilated.adjoint_tangent`) with the reference's value in 2-D, which XLA fuses into the
    loss, and the phases' in 1-D and 3-D where every phase has a tap at every position.
  """
  every_phase = geometry.phase_count() == math.prod(geometry.stride) and not geometry.phase_holes()
  n = len(geometry.stride)
  rows = None if batch is None or in_spatial is None else batch * math.prod(in_spatial)
  output_values = (rows or 0) * math.prod(geometry.stride) * out_channels
  weight_values = in_channels * out_channels * math.prod(geometry.kernel_size)
  large_2d = n == 1 or ((batch is None or batch >= 8) and (in_spatial is None or math.prod(in_spatial) >= 1024))
  phases_pay = (n <= 2 and every_phase and large_2d and (rows is None or output_values >= 3 * weight_values))
  trained_value = "phase" if every_phase and n != 2 else "dilated"
  return _hybrid.Plan("phase" if phases_pay else "dilated", trained_value, "adjoint")


# Where the phase product does this many times the layer's multiply-adds, XLA's CPU convolution of the dilated
# input computes the forward pass faster (`_choose_algorithm`).
_PHASE_WORK_FOR_THE_REFERENCE = 1.2

# glibc's largest M_MMAP_THRESHOLD: XLA's CPU runtime allocates a program's temporaries as one buffer, and
# glibc maps (and the kernel zeroes) any larger allocation afresh on every call (`_phase.padded_convolution`).
_MMAP_THRESHOLD = 32 * 2**20


