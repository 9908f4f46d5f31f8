"""``algorithm='dilated'``: the reference formulation, a stride-1 convolution of the lhs-dilated input.

``y = conv(dilate(x, stride), flip(W))``, padded by ``dk - 1 - pad`` on each side (negative values crop), is
the adjoint of the forward convolution ``z -> conv(z, W, stride)``: the VJP of that convolution with respect
to its input. XLA's GPU compiler turns it into one cuDNN backward-data call (``convBackwardInput``), which
never multiplies the inserted zeros, for layers with one group and no dilation (otherwise it convolves the
zero-stuffed input).

Its derivatives are where the work hides. JAX differentiates the lhs-dilated convolution with respect to
the kernel into a convolution whose window is the whole cotangent image with ``lhs_dilation = stride``,
whose operands XLA's algebraic simplifier then swaps, so that cuDNN's backward-filter matcher rejects it:
two forward convolutions per training step, one of them over the whole image (compiled for an H100,
``benchmarks/accelerator_programs.py``). Off the CPU a `jax.custom_jvp` (`_adjoint_of_forward`) therefore
writes the weight's tangent so that its transpose is the weight gradient of the *forward* convolution,
``dW = d<conv(g, W, stride), x>/dW`` for a cotangent ``g``: the pattern cuDNN's backward-filter kernel takes.
The input's tangent stays the layer itself, whose transpose is the strided forward convolution of the
cotangent. The values are those of the reference, to float rounding.

With groups the same convolution of the dilated input is computed as matrix products batched over the groups
(`convtranspose._grouped`) on every platform, with JAX's derivatives of those: XLA's grouped convolution and
its weight gradient (a convolution with ``batch_group_count``) are partitioned wrongly under a sharded batch.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from convtranspose import _arguments, _grouped, _shapes
from convtranspose._layout import batch_shape, data_axes
from convtranspose._phase import accumulation_type

Array = jax.Array


def lhs_dilated(x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
                precision: lax.PrecisionLike, platform: str) -> Array:
  """The reference formulation; off the CPU, with a stride above 1, differentiated as the forward
  convolution's adjoint (`_adjoint_of_forward`).

  At stride 1 the convolution has no lhs dilation and JAX's own weight gradient is already the
  backward-filter pattern; on CPU the phase algorithm serves training (`convtranspose.functional`). On TPU
  the adjoint's training step also costs less than JAX's own derivatives by XLA:TPU's model
  (``docs/speed.md``).
  """
  if platform == "cpu" or geometry.group > 1 or all(s == 1 for s in geometry.stride):
    return lhs_dilated_convolution(x, weight, geometry, out_spatial, precision, on_cpu=platform == "cpu")
  return _adjoint_of_forward(x, weight, geometry, out_spatial, precision)


def lhs_dilated_convolution(x: Array, weight: Array, geometry: _arguments.Geometry,
                            out_spatial: tuple[int, ...], precision: lax.PrecisionLike, on_cpu: bool) -> Array:
  """``conv(dilate(x, stride), flip(W))``, guarded against an XLA abort (`operand_swap_guard`).

  On CPU it is computed channels-last, the layout XLA's CPU convolutions run fastest (forward, fp32,
  channels-first input: 4x128->128 32x32 k3 s2 7.4 ms through NHWC vs 8.8 ms in NCHW, 8x128->64 32x32
  k2 s2 3.9 vs 4.5 ms): a channels-first caller pays one transpose each way. Elsewhere XLA chooses the
  layout itself (cuDNN's, NHWC, on GPU).
  """
  if not geometry.channels_last and (on_cpu or geometry.group > 1):
    inside = dataclasses.replace(geometry, channels_last=True)
    y = lhs_dilated_convolution(jnp.moveaxis(x, 1, -1), weight, inside, out_spatial, precision, on_cpu)
    return jnp.moveaxis(y, -1, 1)
  n = weight.ndim - 2
  conv_padding = [
      _shapes.lhs_dilated_padding(k, d, pad)
      for k, d, pad in zip(geometry.kernel_size, geometry.dilation, geometry.padding)
  ]
  spatial = tuple(range(2, n + 2))
  if geometry.group > 1:  # the same convolution as matrix products, which XLA partitions correctly
    dilated = lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, s - 1) for (lo, hi), s in
                                                               zip(conv_padding, geometry.stride)), (0, 0, 0)])
    kernel = jnp.moveaxis(lax.rev(group_kernel(weight, geometry.group), spatial), (0, 1), (-2, -1))
    return _grouped.convolution(dilated, kernel, geometry.group, precision, geometry.dilation,
                                accumulation_type(x.dtype))
  extra = [
      operand_swap_guard(k, s, d, pad, out)
      for k, s, d, pad, out in zip(geometry.kernel_size, geometry.stride, geometry.dilation, conv_padding, out_spatial)
  ]
  conv_padding = [(lo, hi + e) for (lo, hi), e in zip(conv_padding, extra)]
  data_spec = data_axes(n, geometry.channels_last)
  y = lax.conv_general_dilated(
      x,
      lax.rev(group_kernel(weight, geometry.group), spatial),
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
    y = lax.slice(y, (0,) * y.ndim, batch_shape(y.shape[0], y.shape[data_spec[1]], out_spatial,
                                                geometry.channels_last))
  return y


def forward_convolution(z: Array, weight: Array, geometry: _arguments.Geometry,
                        precision: lax.PrecisionLike) -> Array:
  """The convolution the layer is the adjoint of: ``(N, C_out, *out) -> (N, C_in, *L)``.

  MindSpore's weight ``(C_in, C_out // G, *k)`` is this convolution's ``OIHW`` kernel as it is (output
  features ``C_in`` in ``G`` consecutive blocks, ``C_out // G`` input features each), with the layer's
  stride as window stride, its dilation and its forward padding ``(lo, hi)``: from ``out`` rows it makes
  ``(out + lo + hi - dk) // s + 1 = L`` (`convtranspose._shapes`).
  """
  n = weight.ndim - 2
  data_spec = data_axes(n, geometry.channels_last)
  return lax.conv_general_dilated(
      z, weight, window_strides=geometry.stride, padding=geometry.padding, rhs_dilation=geometry.dilation,
      dimension_numbers=lax.ConvDimensionNumbers(lhs_spec=data_spec, rhs_spec=tuple(range(n + 2)),
                                                 out_spec=data_spec),
      feature_group_count=geometry.group, precision=precision)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4))
def _adjoint_of_forward(x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
                        precision: lax.PrecisionLike) -> Array:
  """`lhs_dilated_convolution` as a value, differentiated so that its gradients are cuDNN's (see `adjoint_tangent`)."""
  return lhs_dilated_convolution(x, weight, geometry, out_spatial, precision, on_cpu=False)


@functools.partial(_adjoint_of_forward.defjvp, symbolic_zeros=True)
def _adjoint_jvp(geometry, out_spatial, precision, primals, tangents):
  (x, weight), (x_dot, weight_dot) = primals, tangents
  y = _adjoint_of_forward(x, weight, geometry, out_spatial, precision)
  return y, adjoint_tangent(x, weight, x_dot, weight_dot, geometry, out_spatial, y, precision)


def adjoint_tangent(x: Array, weight: Array, x_dot: Array | SymbolicZero, weight_dot: Array | SymbolicZero,
                    geometry: _arguments.Geometry, out_spatial: tuple[int, ...], y: Array,
                    precision: lax.PrecisionLike) -> Array:
  """The tangent of ``y = f(x, W)`` written for accelerators: ``f`` is bilinear, ``df = f(dx, W) + f(x, dW)``.

  ``f(dx, W)`` is the reference itself: transposed, the strided forward convolution of the cotangent
  (cuDNN's forward kernel). ``f(x, dW) = B^T dW`` for the forward convolution's weight gradient
  ``B(g) = d<conv(g, W), x>/dW``, since ``<f(x, dW), g> = <x, conv(g, dW)> = <dW, B(g)>``. Written as
  `jax.linear_transpose` of ``B``, its transpose in reverse mode is ``B`` again: a stride-1 convolution of
  ``g`` with ``x`` as a ``stride``-dilated window and no reversed operand, which XLA gives to cuDNN's
  backward-filter kernel for one group (grouped layers take the phase algorithm on GPU), and which XLA:TPU
  computes without reversing the cotangent. Evaluated in forward mode (`jax.jvp`), ``B^T`` is a
  convolution of ``dW`` with ``x`` as its window: correct, and slower than the reference. A tangent JAX
  knows to be zero (an argument not differentiated) costs nothing.
  """
  terms = []
  if not isinstance(x_dot, SymbolicZero):
    terms.append(lhs_dilated_convolution(x_dot, weight, geometry, out_spatial, precision, on_cpu=False))
  if not isinstance(weight_dot, SymbolicZero):
    def weight_gradient(g: Array) -> Array:
      return jax.vjp(lambda w: forward_convolution(g, w, geometry, precision), weight)[1](x)[0]
    (term,) = jax.linear_transpose(weight_gradient, jax.ShapeDtypeStruct(y.shape, y.dtype))(weight_dot)
    terms.append(term)
  return functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)


def group_kernel(weight: Array, group: int) -> Array:
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


def operand_swap_guard(kernel_size: int, stride: int, dilation: int, conv_padding: tuple[int, int],
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
