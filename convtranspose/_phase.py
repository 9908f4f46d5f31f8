"""``algorithm='phase'``: the sub-pixel decomposition of a transposed convolution.

One stride-1 convolution of the undilated input with ``prod(stride)`` times the output channels, one block
per output phase, interleaved (depth-to-space) and cropped (`convtranspose._shapes.phase_plan` has the
arithmetic). It never multiplies the inserted zeros and never builds the dilated input. Where the kernel's
taps do not tile the stride (``k % s != 0``, or a dilation) the phases differ in the kernel positions that
hold their taps; each group of phases with the same positions is its own product (`_products_of_tap_runs`), so
that no position without a tap is multiplied: a zero there would make an infinite or NaN input NaN in outputs
the layer does not reach from it. Its convolution is a forward convolution of the input, and its gradients
are XLA's ordinary ones (on GPU cuDNN's backward-data and backward-filter kernels); with groups it is a matrix
product batched over the groups on every platform (`convtranspose._grouped`). On CPU it is one matrix product
(`padded_convolution`): of the input's patches (im2col), or, for layers with few output channels, of the input
itself, whose per-tap products are then summed shifted (col2im). On TPU the phases are interleaved in a batch-minor layout (`_interleave_batch_minor`)
and, where every phase has one tap, multiplied as a matrix product (`_tpu_product`).
"""

import functools
import itertools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.experimental.layout import Layout, with_layout_constraint

from convtranspose import _arguments, _grouped, _shapes, _sharding
from convtranspose._layout import data_axes

Array = jax.Array


# The most values per input row a split phase product takes in the col2im form (`phase`).
_FEW_COL2IM_VALUES = 64


def phase(x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
           precision: lax.PrecisionLike, platform: str) -> Array:
  """The sub-pixel decomposition (`convtranspose._shapes.phase_plan`), computed channels-last, except a
  channels-first input's col2im product on CPU, which stays channels-first.

  The phase kernel ``(*K, C_in // G, G * prod(P) * C_out // G)`` is rearranged from ``weight``
  (`phase_kernel`), for the ``P`` phases per dimension that hold a tap: a dilation sharing a factor with the
  stride leaves whole phases without one (``k = 3, d = s = 2``: taps at 0, 2, 4, all in phase 0), whose
  outputs are zeros, put in place after the convolution rather than computed. The input is padded or
  cropped explicitly and convolved unpadded: folding the padding into the convolution put XLA's CPU weight
  gradient on its slow path (measured 2,000 ms vs 66 ms for the training step of the 32x256->128 8x8 layer).
  """
  n = weight.ndim - 2
  batched_lengths = [x.shape[axis] for axis in data_axes(n, geometry.channels_last)[2:]]
  plans = [
      _shapes.phase_plan(length, k, s, d, pad, out)
      for length, k, s, d, pad, out in zip(batched_lengths, geometry.kernel_size, geometry.stride, geometry.dilation,
                                            geometry.padding, out_spatial)
  ]
  used = [sorted({phase for phase, _ in plan.taps}) for plan in plans]
  kernel = phase_kernel(weight, geometry, plans, used)
  group, out_per_group = geometry.group, weight.shape[1]
  on_cpu = platform == "cpu"
  layer_col2im = multiplies_first(kernel.shape[-1], kernel.shape[-2], group, on_cpu)

  def product(kernel: Array, padding: list[tuple[int, int]], dilation: tuple[int, ...]) -> tuple[Array, bool]:
    if platform == "tpu":
      return _tpu_product(x, kernel, padding, group, precision, geometry.channels_last, dilation), False
    # Where the phases' tap runs split the product, each part has fewer columns than the layer's: it takes
    # col2im only if its values per input row stay few (the channels-first form multiplies the kernel per
    # example: 32x512->256 4x4 k3 s2, NCHW, 256 values per row, took 77 ms forward and 334 ms per training step
    # in col2im, 9 and 31 ms in im2col; thin 8x16->8 64x64 k3 s2, at most 32, trains in 6.4 ms in col2im and
    # 13 ms in im2col). A bound on the kernel, not the input, so that `jax.export`'s symbolic lengths get the
    # same program.
    col2im = layer_col2im or (multiplies_first(kernel.shape[-1], kernel.shape[-2], group, on_cpu)
                              and math.prod(kernel.shape[:-2]) * kernel.shape[-1] <= _FEW_COL2IM_VALUES)
    y = padded_convolution(x, kernel, padding, group, precision, on_cpu=on_cpu,
                           channels_last=geometry.channels_last, dilation=dilation, col2im=col2im)
    return y, col2im and not geometry.channels_last

  y, first = _products_of_tap_runs(kernel, plans, used, group, product)
  if platform == "tpu":
    return _interleave_batch_minor(y, plans, used, geometry.stride, out_spatial, group, out_per_group,
                                   geometry.channels_last)
  y = interleave(y, plans, used, geometry.stride, out_spatial, group, out_per_group, channels_first=first)
  return jnp.moveaxis(y, -1, 1) if not (geometry.channels_last or first) else y


def _products_of_tap_runs(kernel: Array, plans: list[_shapes.PhasePlan], used: list[list[int]], group: int,
                          product) -> tuple[Array, bool]:
  """The phases' products, ``(N, *Q, M)`` (or ``(N, M, *Q)`` if the returned flag says channels-first), one
  per combination of the dimensions' tap runs (`convtranspose._shapes.tap_runs`), so that no kernel
  position without a tap is multiplied: ``product(kernel, padding, dilation)`` of each run's taps, the
  phases' blocks then put back in order. A layer whose taps tile the stride has one run: one product.

  The kernel ``(*K, C // G, G * prod(P) * C_out // G)`` keeps, per run, the positions ``start + step * u``
  and its phases' columns; the input padding ``(lo, hi)`` becomes ``(lo - start, hi - (K - 1 - last))``
  (``last`` the run's last position), so that every block has the same ``Q`` rows.
  """
  n = len(plans)
  runs = [_shapes.tap_runs(plan, phases) for plan, phases in zip(plans, used)]
  if all(len(dim) == 1 and dim[0].count == plan.kernel_size for dim, plan in zip(runs, plans)):
    return product(kernel, [plan.padding for plan in plans], (1,) * n)
  columns = (group, *map(len, used), -1)
  blocks = {}
  for combination in itertools.product(*(range(len(dim)) for dim in runs)):
    chosen = [dim[i] for dim, i in zip(runs, combination)]
    block = kernel.reshape(*kernel.shape[:n + 1], *columns)
    for axis, run in enumerate(chosen):
      block = jnp.take(block, np.arange(run.count) * run.step + run.start, axis=axis)
      block = jnp.take(block, np.asarray(run.phases), axis=n + 2 + axis)
    block = block.reshape(*block.shape[:n + 1], -1)
    padding = [(lo - run.start, hi - (plan.kernel_size - 1 - run.start - run.step * (run.count - 1)))
               for (lo, hi), run, plan in zip((plan.padding for plan in plans), chosen, plans)]
    blocks[combination] = product(block, padding, tuple(run.step for run in chosen))
  first = all(channels_first for _, channels_first in blocks.values())

  def phases_axis(axis: int) -> int:  # the phase axis of dimension `axis` in a block's shape
    return (2 if first else n + 2) + axis

  def as_blocks(y: Array, channels_first: bool, chosen: list[_shapes.TapRun]) -> Array:
    """A product's columns as ``(G, *P_run, C // G)``, in the assembled layout."""
    if channels_first and not first:
      y = jnp.moveaxis(y, 1, -1)
    shape = (group, *(len(run.phases) for run in chosen), -1)
    return y.reshape(y.shape[0], *shape, *y.shape[2:]) if first else y.reshape(*y.shape[:-1], *shape)

  def assembled(prefix: tuple[int, ...]) -> Array:  # dimensions from len(prefix) on, runs side by side
    axis = len(prefix)
    if axis == n:
      y, channels_first = blocks[prefix]
      return as_blocks(y, channels_first, [dim[i] for dim, i in zip(runs, prefix)])
    parts = [assembled((*prefix, i)) for i in range(len(runs[axis]))]
    y = jnp.concatenate(parts, axis=phases_axis(axis))
    order = [phase for run in runs[axis] for phase in run.phases]
    if order != sorted(order):
      y = jnp.take(y, np.argsort(order), axis=phases_axis(axis))
    return y

  y = assembled(())  # (N, G, *P, C // G, *Q) or (N, *Q, G, *P, C // G)
  return (y.reshape(y.shape[0], -1, *y.shape[-n:]) if first else y.reshape(*y.shape[:n + 1], -1)), first


def interleave(y: Array, plans: list[_shapes.PhasePlan], used: list[list[int]], stride: tuple[int, ...],
               out_spatial: tuple[int, ...], group: int, out_per_group: int, channels_first: bool) -> Array:
  """Depth-to-space and crop: the phases' ``(N, *Q, G, *P, C // G)`` (or ``(N, G, *P, C // G, *Q)`` if
  ``channels_first``) as the output ``(N, *out_spatial, C)`` (or ``(N, C, *out_spatial)``), rows
  ``[crop, crop + out)`` of the interleaved ``Q * s``; a phase without a tap (not in ``used``) is zeros."""
  n = len(plans)
  batch, lengths = y.shape[0], [plan.length for plan in plans]
  shape = (group, *map(len, used), out_per_group)
  y = y.reshape(batch, *shape, *lengths) if channels_first else y.reshape(batch, *lengths, *shape)
  y = _with_empty_phases(y, used, stride, first_phase_axis=2 if channels_first else n + 2)
  spatial = [q * s for q, s in zip(lengths, stride)]
  start, stop = [plan.crop for plan in plans], [plan.crop + out for plan, out in zip(plans, out_spatial)]
  if channels_first:  # (N, G, *s, C // G, *Q) -> (N, G, C // G, Q_1, s_1, ..., Q_n, s_n)
    y = y.transpose(0, 1, 2 + n, *(a for axis in range(n) for a in (3 + n + axis, 2 + axis)))
    y = y.reshape(batch, group * out_per_group, *spatial)
    return lax.slice(y, (0, 0, *start), (*y.shape[:2], *stop))
  # (N, *Q, G, *s, C // G) -> (N, Q_1, s_1, ..., Q_n, s_n, G, C // G)
  y = y.transpose(0, *(a for axis in range(n) for a in (1 + axis, 2 + n + axis)), 1 + n, 2 + 2 * n)
  y = y.reshape(batch, *spatial, group * out_per_group)
  return lax.slice(y, (0, *start, 0), (batch, *stop, y.shape[-1]))


def _with_empty_phases(y: Array, used: list[list[int]], stride: tuple[int, ...], first_phase_axis: int) -> Array:
  """``y`` with its phase axes (from ``first_phase_axis`` on, one per dimension, ``len(used)`` long) grown to
  ``stride``: a phase without a tap (not in ``used``) is zeros."""
  for axis, (phases, s) in enumerate(zip(used, stride), start=first_phase_axis):
    if len(phases) < s:
      blocks = [lax.slice_in_dim(y, phases.index(r), phases.index(r) + 1, axis=axis) if r in phases
                else jnp.zeros((*y.shape[:axis], 1, *y.shape[axis + 1:]), y.dtype) for r in range(s)]
      y = jnp.concatenate(blocks, axis=axis)
  return y


def _tpu_product(x: Array, kernel: Array, padding: list[tuple[int, int]], group: int,
                 precision: lax.PrecisionLike, channels_last: bool, dilation: tuple[int, ...]) -> Array:
  """The phases' product on TPU, channels-last ``(N, *Q, M)``: a matrix product where every phase has one
  tap (``K = 1``: ``k == s``, the U-Net upsampling layers), else the stride-1 convolution.

  XLA:TPU lays a matrix product's result out as its consumer needs, so that the depth-to-space after it is
  one cheap copy; after a 1x1 convolution it chose a copy its cost model prices at 4x that layer's whole
  convolution (v6e, 8x128->64 32x32 k2 s2: 124k cycles against 2.6k after the product).
  """
  n = kernel.ndim - 2
  if group != 1 or any(k != 1 for k in kernel.shape[:n]):
    return padded_convolution(x, kernel, padding, group, precision, on_cpu=False, channels_last=channels_last,
                              dilation=dilation)
  return jnp.dot(_padded_channels_last(x, padding, channels_last), kernel.reshape(kernel.shape[n:]),
                 precision=precision)


def _interleave_batch_minor(y: Array, plans: list[_shapes.PhasePlan], used: list[list[int]],
                            stride: tuple[int, ...], out_spatial: tuple[int, ...], group: int, out_per_group: int,
                            channels_last: bool) -> Array:
  """`interleave` on TPU: the phases' ``(N, *Q, G, *P, C // G)`` as the output, through a batch-minor copy.

  XLA:TPU tiles an array's two minor axes by (8, 128). Interleaving the phases into the output's minor
  spatial axis moves rows within those tiles, and for some layers XLA picks a layout whose tiles are
  ``(s, 128)``, priced by its cost model at 20-50x a plain copy (v6e, 4x128->128 32x32 k3 s2: 224k cycles,
  Flax's whole layer 83k). So the interleaved ``(Q_1, s_1, ..., Q_n, s_n, N, C)`` is pinned row-major
  (`jax.experimental.layout.with_layout_constraint`), where the phases move whole tiles of ``(N, C)``, and
  then moved to the caller's layout, as Flax's own result is. The crop is taken as part of that move: a
  slice of leading axes on its own is a kernel of its own, priced at 2-6x a copy (16x256->128 32x32 k4 s2:
  140k cycles, 22k fused with the transpose).
  """
  n = len(plans)
  batch, lengths = y.shape[0], [plan.length for plan in plans]
  y = y.reshape(batch, *lengths, group, *map(len, used), out_per_group)
  y = _with_empty_phases(y, used, stride, first_phase_axis=n + 2)
  # (N, *Q, G, *s, C // G) -> (Q_1, s_1, ..., Q_n, s_n, N, C), row-major
  y = y.transpose(*(a for axis in range(n) for a in (1 + axis, 2 + n + axis)), 0, 1 + n, 2 + 2 * n)
  y = y.reshape(*y.shape[:2 * n + 1], group * out_per_group)
  if _sharding.mesh_in_sight(y).empty:  # XLA's partitioner replicates the constraint: it would gather the batch
    y = with_layout_constraint(y, Layout(major_to_minor=tuple(range(y.ndim))))
  y = y.reshape(*(q * s for q, s in zip(lengths, stride)), batch, group * out_per_group)
  y = jnp.moveaxis(y, -1, 0)  # (C, *spatial, N): the crop then fuses with the move
  start = [plan.crop for plan in plans]
  y = lax.slice(y, (0, *start, 0), (y.shape[0], *(lo + out for lo, out in zip(start, out_spatial)), batch))
  y = jnp.moveaxis(y, -1, 0)  # (N, C, *out_spatial)
  return jnp.moveaxis(y, 1, -1) if channels_last else y


def phase_kernel(weight: Array, geometry: _arguments.Geometry, plans: list[_shapes.PhasePlan],
                 used: list[list[int]]) -> Array:
  """MindSpore's ``(C_in, C_out // G, *k)`` as the phase kernel ``(*K, C_in // G, G * prod(P) * C_out // G)``.

  Moved, never multiplied (exact in every dtype and on every platform): per spatial dimension, tap ``j``
  goes to slot ``j * d`` (each tap followed by ``d - 1`` zeros, by a pad of a new axis and a reshape), the
  ``dk`` slots are padded to ``s * K`` and read as ``(K, s)``, so that slot ``m * s + r`` lands in phase
  ``r`` at offset ``m``, and the offsets are reversed: position ``K - 1 - m``, as
  `convtranspose._shapes.phase_plan` places tap ``j`` (``m = j * d // s``, ``r = j * d % s``). Only the
  phases in ``used`` are kept; the output channels are ordered ``(G, *P, C_out // G)``.
  """
  n = weight.ndim - 2
  group, (in_channels, out_per_group) = geometry.group, weight.shape[:2]
  kernel = weight.reshape(group, in_channels // group, out_per_group, *weight.shape[2:])
  for axis, (plan, k, s, d) in enumerate(zip(plans, geometry.kernel_size, geometry.stride, geometry.dilation)):
    axis += 3
    slots = kernel[(slice(None),) * (axis + 1) + (None,)]  # (..., k, 1, ...)
    slots = lax.pad(slots, jnp.zeros((), kernel.dtype), [(0, 0, 0)] * (axis + 1) + [(0, d - 1, 0)]
                    + [(0, 0, 0)] * (kernel.ndim - axis - 1))
    slots = slots.reshape(*kernel.shape[:axis], k * d, *kernel.shape[axis + 1:])
    kernel = lax.pad(lax.slice_in_dim(slots, 0, _shapes.dilated_kernel_size(k, d), axis=axis),
                     jnp.zeros((), kernel.dtype), [(0, 0, 0)] * axis + [(0, s * plan.kernel_size
                                                                         - _shapes.dilated_kernel_size(k, d), 0)]
                     + [(0, 0, 0)] * (kernel.ndim - axis - 1))
  kernel = kernel.reshape(*kernel.shape[:3], *(size for plan, s in zip(plans, geometry.stride)
                                               for size in (plan.kernel_size, s)))
  offsets, phases = [3 + 2 * a for a in range(n)], [4 + 2 * a for a in range(n)]
  kernel = lax.rev(kernel, offsets).transpose(*offsets, 1, 0, *phases, 2)
  for axis, (kept, s) in enumerate(zip(used, geometry.stride)):
    if len(kept) < s:
      kernel = jnp.take(kernel, np.asarray(kept), axis=n + 2 + axis)
  return kernel.reshape(*kernel.shape[:n], in_channels // group, -1)


def padded_convolution(x: Array, kernel: Array, padding: list[tuple[int, int]], group: int,
                       precision: lax.PrecisionLike, on_cpu: bool, channels_last: bool = True,
                       dilation: tuple[int, ...] | None = None, col2im: bool | None = None) -> Array:
  """Stride-1 convolution of ``x`` padded by ``padding`` (negative values crop): ``x`` ``(N, *L, C)``, or
  ``(N, C, *L)`` unless ``channels_last``; ``kernel`` ``(*K, C // G, M)``, its taps spaced by ``dilation``
  ``e`` (default 1); the result ``(N, *Q, M)``, channels-last (``(N, M, *Q)`` for a channels-first input
  in the col2im form), ``y[p] = sum_t x_padded[p + e * t] @ kernel[t]``.

  Two matrix-product forms serve the CPU (one group), whichever moves less data (`multiplies_first`, unless
  ``col2im`` says which):

  * im2col (`valid_convolution`): the ``prod(K)`` shifted windows of the padded input side by side, times
    the kernel: ``prod(K) * C`` values copied per input row;
  * col2im, when the product has fewer columns per tap than the input has channels (``M < C``: a layer with
    few output channels): ``x @ kernel[t]`` for every tap at once (``prod(K) * M`` columns, each input row
    multiplied once), then the shifted sum ``y[p] = sum_t (x @ kernel[t])[p + t - lo]``, each term padded by
    ``(lo - t, hi - (K - 1 - t))``. Its gradients are products of the same kind: the cotangent's shifted
    windows (``prod(K) * M`` columns) times the kernel for the input, and the input times them for the
    weight, PyTorch's im2col weight gradient of the forward convolution. A channels-first input is
    multiplied as it lies, the kernel's transpose times each example's ``(C, prod(L))`` (batched over
    ``N``), and the result is channels-first ``(N, M, *Q)``: no transposed copy
    of the input or the output in either pass. (The input's transpose times the kernel, with a channels-last
    result, took 3.7 ms against 0.47 ms for this form's product on 16x64->1 32x32 k4 s2, fp32.)

  Measured on 2 cores, fp32, forward / training step, NCHW input, the phase algorithm with im2col vs col2im:
  16x64->1 32x32 k4 s2 11.1 / 18.1 vs 1.2 / 3.3 ms; 8x128->3 64x64 k4 s2 46.5 / 80.9 vs 5.5 / 26.7 ms (with
  the input transposed to NHWC; 4.7 / 10.5 ms multiplied as it lies); 2x32->1 16^3 k4 s2 1.6 / 4.9 vs
  0.74 / 3.4 ms; and the other way where ``M >= C`` (32x256->128 8x8 k4 s2: 12.7 / 33.3 vs 15.6 / 43.1 ms).
  The col2im form pads nothing before its product: a padded copy of the input is one more activation-sized
  temporary, and XLA's CPU runtime allocates a program's temporaries as one buffer, which glibc maps afresh
  on every call once it exceeds 32 MiB (``M_MMAP_THRESHOLD``'s ceiling): 8x32->3 128x128 k4 s2 forward 15 ms
  with the padded copy (49 MiB of temporaries), 5 ms without (24 MiB).
  """
  n = kernel.ndim - 2
  dilation = dilation or (1,) * n
  if col2im is None:
    col2im = multiplies_first(kernel.shape[-1], kernel.shape[-2], group, on_cpu)
  if col2im:
    taps, (channels, columns) = int(np.prod(kernel.shape[:n])), kernel.shape[n:]
    matrix = jnp.moveaxis(kernel.reshape(taps, channels, columns), 0, 1).reshape(channels, taps * columns)
    accumulation = accumulation_type(x.dtype)
    batch, lengths = x.shape[0], (x.shape[1:-1] if channels_last else x.shape[2:])
    if channels_last:  # (N * prod(L), C) . (C, T * M): (N, *L, T, M)
      product = jnp.dot(x.reshape(-1, channels), matrix, precision=precision, preferred_element_type=accumulation)
      product, tap_axis = product.reshape(batch, *lengths, taps, columns), 1 + n
    else:  # (T * M, C) . (C, prod(L)) per example: (N, T, M, *L), channels-first
      product = lax.dot_general(jnp.broadcast_to(matrix.T, (batch, *matrix.T.shape)), x.reshape(batch, channels, -1),
                                (((2,), (1,)), ((0,), (0,))), precision=precision,
                                preferred_element_type=accumulation)
      product, tap_axis = product.reshape(batch, taps, columns, *lengths), 1
    zero = jnp.zeros((), product.dtype)
    terms = []
    for t, tap in enumerate(np.ndindex(*kernel.shape[:n])):
      spatial = [(lo - e * start, hi - e * (k - 1 - start), 0)
                 for (lo, hi), k, start, e in zip(padding, kernel.shape[:n], tap, dilation)]
      config = [(0, 0, 0), *spatial, (0, 0, 0)] if channels_last else [(0, 0, 0), (0, 0, 0), *spatial]
      terms.append(lax.pad(lax.index_in_dim(product, t, tap_axis, keepdims=False), zero, config))
    return functools.reduce(jnp.add, terms).astype(x.dtype)
  return valid_convolution(_padded_channels_last(x, padding, channels_last), kernel, group, precision, on_cpu,
                           dilation)


def _padded_channels_last(x: Array, padding: list[tuple[int, int]], channels_last: bool) -> Array:
  """``x`` as ``(N, *L, C)``, its spatial axes padded by ``padding`` (negative values crop)."""
  if not channels_last:
    x = jnp.moveaxis(x, 1, -1)
  return lax.pad(x, jnp.zeros((), x.dtype), [(0, 0, 0), *((lo, hi, 0) for lo, hi in padding), (0, 0, 0)])


def multiplies_first(columns: int, channels: int, group: int, on_cpu: bool) -> bool:
  """Whether `padded_convolution` takes the col2im form: on CPU, one group, ``M < C`` for a kernel
  ``(*K, C, M)`` (the product's ``columns`` per tap fewer than the input's ``channels``)."""
  return on_cpu and group == 1 and columns < channels


def valid_convolution(x: Array, kernel: Array, group: int, precision: lax.PrecisionLike, on_cpu: bool,
                      dilation: tuple[int, ...] | None = None) -> Array:
  """Stride-1 unpadded convolution, channels-last: ``x`` ``(N, *L, C)``, ``kernel`` ``(*K, C // G, M)``, its
  taps spaced by ``dilation`` (default 1).

  On CPU, with one group and two or more spatial dimensions, it is one matrix product of the patches,
  ``y[p, m] = sum_{t, c} x[p + t, c] * kernel[t, c, m]``, the ``prod(K)`` shifted windows of ``x``
  concatenated along the channels (im2col). XLA's CPU convolution computes the forward pass as fast, but not
  its weight gradient; the plain 2-D dot and the dots of its gradients stay on the fast matrix-multiply path.
  Measured on 2 cores, training step (gradients of input and weight) with the convolution vs with the
  product, fp32: 32x256->128 8x8 k4 s2 57 vs 39 ms, 8x128->64 32x32 k2 s2 42 vs 11 ms, 4x128->128 32x32 k3 s2
  90 vs 30 ms, 2x32->16 8^3 k4 s2 7.9 vs 3.0 ms, forward passes equal; bfloat16 alike. The 1-D audio layers of
  ``benchmarks/bench.py`` train faster with the convolution in float32 (4.2 vs 4.9 ms, 5.2 vs 5.7 ms), so
  they keep it there. In bfloat16 and float16 every rank takes the product, accumulated in float32
  (`accumulation_type`) and rounded once: XLA runs ``bf16 x bf16 -> f32`` products on the CPU's matrix units
  (AMX on the benchmark machine) but not products with a bf16 result, which it also accumulates in float32
  (the same error against float64). A 2592x1024x512 bf16 product: 1.8 ms vs 9.4 ms.
  The product holds ``prod(K)`` copies of the input. Elsewhere it is XLA's convolution (cuDNN on GPU), except
  with groups, which are matrix products on every platform (`convtranspose._grouped.convolution`).
  """
  n = kernel.ndim - 2
  dilation = dilation or (1,) * n
  if group > 1:
    return _grouped.convolution(x, kernel, group, precision, dilation, accumulation=accumulation_type(x.dtype))
  lengths = [length - e * (k - 1) for length, k, e in zip(x.shape[1:-1], kernel.shape[:n], dilation)]
  accumulation = accumulation_type(x.dtype)
  if (n >= 2 or accumulation) and on_cpu:
    starts = [[e * t for t, e in zip(tap, dilation)] for tap in np.ndindex(*kernel.shape[:n])]
    windows = [lax.slice(x, (0, *start, 0), (x.shape[0], *(s + q for s, q in zip(start, lengths)), x.shape[-1]))
               for start in starts]  # tap-major, as the kernel's (*K, C) rows
    patches = jnp.concatenate(windows, axis=-1)
    y = jnp.dot(patches.reshape(-1, patches.shape[-1]), kernel.reshape(-1, kernel.shape[-1]), precision=precision,
                preferred_element_type=accumulation)
    return y.astype(x.dtype).reshape(x.shape[0], *lengths, kernel.shape[-1])
  data_spec = data_axes(n, channels_last=True)
  return lax.conv_general_dilated(
      x, kernel, window_strides=(1,) * n, padding=[(0, 0)] * n, rhs_dilation=dilation,
      dimension_numbers=lax.ConvDimensionNumbers(lhs_spec=data_spec, rhs_spec=(n + 1, n, *range(n)),
                                                 out_spec=data_spec),
      precision=precision)


def accumulation_type(dtype: Any) -> Any:
  """``float32`` for floats narrower than 32 bits (the product's accumulator), else None (the input's own)."""
  return jnp.float32 if jnp.issubdtype(dtype, jnp.floating) and jnp.finfo(dtype).bits < 32 else None
