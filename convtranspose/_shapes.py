"""All shape arithmetic of the transposed convolution, one spatial dimension at a time.

Every length this package computes comes from here. Conventions, per spatial dimension:

* ``L``: input length, ``k``: kernel size, ``s``: stride, ``d``: dilation;
* ``dk = d * (k - 1) + 1``: the dilated kernel size;
* ``(lo, hi)``: the padding of the *forward* convolution this layer is the adjoint of (MindSpore's and
  PyTorch's meaning of ``padding``), with ``output_padding`` ``op`` already taken off ``hi``. ``hi`` may be
  negative: MindSpore's ``same`` and ``valid`` modes with ``dk < s`` leave ``s - dk`` output rows that no input
  reaches, and ``op`` adds rows at the high end.

The output length is then ``out = L * s + dk - s - (lo + hi)`` (MindSpore's ``_deconv_output_length``),
which is ``(L - 1) * s + dk - lo - hi``: relationship 14 of Dumoulin & Visin, "A guide to convolution
arithmetic for deep learning" (arXiv:1603.07285), with asymmetric padding; with the user's ``hi`` it is
``(L - 1) * s + dk - lo - hi + op``, PyTorch's formula.
"""

from collections.abc import Sequence
from typing import NamedTuple

PAD_MODES = ("same", "valid", "pad")


def dilated_kernel_size(kernel_size: int, dilation: int) -> int:
  """``dk = dilation * (kernel_size - 1) + 1``: the extent of a dilated kernel."""
  return dilation * (kernel_size - 1) + 1


def forward_padding(kernel_size: int, stride: int, dilation: int, pad_mode: str, padding: tuple[int, int],
                    output_padding: int = 0) -> tuple[int, int]:
  """The forward convolution's ``(lo, hi)`` padding for one spatial dimension.

  With ``dk`` the dilated kernel size, as MindSpore 2.10 computes it (``Conv2DBackpropInput``):

  * ``same``: ``lo + hi = dk - s``, so that ``out = L * s``. When ``dk >= s``, ``lo = (dk - s) // 2`` and
    the odd position goes to ``hi`` (TensorFlow's SAME). When ``dk < s``, ``lo = 0`` and ``hi = dk - s < 0``:
    the last ``s - dk`` rows receive no input.
  * ``valid``: ``lo = 0`` and ``hi = min(dk - s, 0)``, so ``out = L * s + max(dk - s, 0)``.
  * ``pad``: ``(lo, hi) = padding``, any non-negative values (more than ``dk - 1`` crops), and
    ``output_padding`` ``op`` lengthens the output by ``op`` rows at the high end: ``(lo, hi - op)``. The
    layer stays the adjoint of the forward convolution from that longer length, so the extra rows hold
    convolution values (as in PyTorch, Keras and MindSpore's 3-D layer; MindSpore 2.x's 2-D layer zero-fills
    them after adding the bias instead).

  Args:
    kernel_size: ``k``.
    stride: ``s``.
    dilation: ``d``.
    pad_mode: ``'same'``, ``'valid'`` or ``'pad'``.
    padding: the user's ``(lo, hi)``; only read when ``pad_mode == 'pad'``.
    output_padding: ``op``; zero unless ``pad_mode == 'pad'`` (the caller checks).

  Returns:
    ``(lo, hi)``.
  """
  overlap = dilated_kernel_size(kernel_size, dilation) - stride
  if pad_mode == "same":
    lo = max(overlap, 0) // 2
    return lo, overlap - lo
  if pad_mode == "valid":
    return 0, min(overlap, 0)
  lo, hi = padding
  return lo, hi - output_padding


def output_length(input_length: int, kernel_size: int, stride: int, dilation: int,
                  padding: tuple[int, int]) -> int:
  """``out = L * s + dk - s - (lo + hi)``; may be zero or negative (the caller decides)."""
  lo, hi = padding
  return input_length * stride + dilated_kernel_size(kernel_size, dilation) - stride - (lo + hi)


def reachable_output_lengths(length: int, stride: int, dilation: int, pad_mode: str) -> range:
  """The output lengths ``output_padding`` can make from ``length`` (the length without it).

  ``output_padding`` is an int in ``[0, max(stride, dilation))`` in ``pad`` mode, and 0 in the others, so
  ``range(length, length + max(stride, dilation))`` and ``range(length, length + 1)``.
  """
  return range(length, length + (max(stride, dilation) if pad_mode == "pad" else 1))


def lhs_dilated_padding(kernel_size: int, dilation: int, padding: tuple[int, int]) -> tuple[int, int]:
  """Padding of the stride-1 convolution over the ``s``-dilated input: ``(dk - 1 - lo, dk - 1 - hi)``.

  The transposed convolution is ``conv(dilate(x, s), flip(W))`` with this padding; negative values crop.
  """
  lo, hi = padding
  edge = dilated_kernel_size(kernel_size, dilation) - 1
  return edge - lo, edge - hi


def output_shape(input_shape: Sequence[int], kernel_size: Sequence[int], stride: Sequence[int],
                 dilation: Sequence[int], padding: Sequence[tuple[int, int]]) -> tuple[int, ...]:
  """Spatial output shape from canonical per-dimension arguments (``padding`` as from `forward_padding`).

  Raises:
    ValueError: if a dimension's output length is negative, naming the dimension and its arithmetic.
  """
  shape = []
  for axis, (length, k, s, d, pad) in enumerate(zip(input_shape, kernel_size, stride, dilation, padding)):
    out = output_length(length, k, s, d, pad)
    if out < 0:
      raise ValueError(
          f"Output length along spatial dimension {axis} would be negative: L * stride + dk - stride - "
          f"(pad_lo + pad_hi) = {length} * {s} + {dilated_kernel_size(k, d)} - {s} - ({pad[0]} + {pad[1]}) "
          f"= {out}, with input length {length}, kernel_size {k}, stride {s}, dilation {d}. "
          "Reduce the padding or enlarge the input.")
    shape.append(out)
  return tuple(shape)


class PhasePlan(NamedTuple):
  """One spatial dimension of the sub-pixel (phase) decomposition; see `phase_plan`."""

  taps: tuple[tuple[int, int], ...]
  kernel_size: int
  padding: tuple[int, int]
  length: int
  crop: int


def phase_plan(input_length: int, kernel_size: int, stride: int, dilation: int, padding: tuple[int, int],
               out_length: int) -> PhasePlan:
  """How one spatial dimension splits into ``stride`` stride-1 convolutions of the undilated input.

  Kernel tap ``j`` sits at ``j * d = m_j * s + r_j`` in the uncropped output, ``m_j = j * d // s``,
  ``r_j = j * d % s``, so input ``i`` reaches position ``t = (i + m_j) * s + r_j``: phase ``r`` of the output
  (positions ``t = q * s + r``) is the stride-1 correlation ``y_r[q] = sum_{j: r_j = r} x[q - m_j] w[j]``. All
  phases share one kernel of ``K = m_max + 1 = (dk - 1) // s + 1`` positions, tap ``j`` at position
  ``m_max - m_j`` of phase ``r_j`` (positions a phase has no tap at hold zeros). Output row ``o`` is
  uncropped position ``o + lo``, so the phases are computed for ``q`` in ``[q0, q0 + Q)``,
  ``q0 = lo // s``, ``Q = ceil((lo + out) / s) - q0``: a correlation of the input padded by
  ``(m_max - q0, Q - L + q0)`` (negative values crop). Interleaved, they cover ``[q0 * s, (q0 + Q) * s)``,
  from which the output starts at ``lo - q0 * s``.

  Args:
    input_length: ``L``.
    kernel_size: ``k``.
    stride: ``s``.
    dilation: ``d``.
    padding: the forward padding ``(lo, hi)`` from `forward_padding` (``lo >= 0``).
    out_length: the output length from `output_length`.

  Returns:
    A `PhasePlan`: ``taps[j] = (r_j, m_max - m_j)``, ``kernel_size = K``, the input ``padding``, the
    per-phase ``length = Q`` and ``crop``, the output's start in the interleaved phases.
  """
  offsets = [j * dilation // stride for j in range(kernel_size)]
  last = offsets[-1]
  first_phase_row = padding[0] // stride
  length = -(-(padding[0] + out_length) // stride) - first_phase_row
  return PhasePlan(
      taps=tuple((j * dilation % stride, last - m) for j, m in enumerate(offsets)),
      kernel_size=last + 1,
      padding=(last - first_phase_row, length - input_length + first_phase_row),
      length=length,
      crop=padding[0] - first_phase_row * stride,
  )


class TapRun(NamedTuple):
  """Phases of one dimension whose taps sit at the same phase-kernel positions, ``start + step * u`` for
  ``u`` in ``[0, count)``; see `tap_runs`."""

  phases: tuple[int, ...]
  start: int
  count: int
  step: int


def tap_runs(plan: PhasePlan, used: Sequence[int]) -> list[TapRun]:
  """The ``used`` phases of one dimension grouped by the positions of the phase kernel that hold their taps.

  Phase ``r``'s taps are ``j = j_0 + u * s / g`` (``g = gcd(d, s)``), at offsets ``m_j = m_{j_0} + u * d / g``:
  an arithmetic run of positions with step ``d / g``. Phases whose runs agree share one stride-1 convolution
  with a kernel of ``count`` taps dilated by ``step``, so that no position without a tap is multiplied (a
  zero there times an infinite or NaN input would be NaN where the layer has no term at all). Where the taps
  tile the stride (``k % s == 0``, no dilation) there is one run, every position of every phase.

  Args:
    plan: the dimension's `PhasePlan`.
    used: the phases holding a tap, in order.

  Returns:
    `TapRun` s in the order of their first phase; ``phases`` index into ``used``.

  >>> plan = phase_plan(4, 3, 2, 1, (1, 1), 7)  # k = 3, s = 2: phase 0 has taps at both positions, phase 1 at one
  >>> tap_runs(plan, [0, 1])
  [TapRun(phases=(0,), start=0, count=2, step=1), TapRun(phases=(1,), start=1, count=1, step=1)]
  """
  runs: dict[tuple[int, int, int], list[int]] = {}
  for index, phase in enumerate(used):
    positions = sorted(position for tap_phase, position in plan.taps if tap_phase == phase)
    step = positions[1] - positions[0] if len(positions) > 1 else 1
    runs.setdefault((positions[0], len(positions), step), []).append(index)
  return [TapRun(tuple(phases), *key) for key, phases in runs.items()]


def phase_kernel_size(kernel_size: int, stride: int, dilation: int) -> int:
  """``K = (k - 1) * d // s + 1``: the positions each phase's kernel has (see `phase_plan`).

  >>> phase_kernel_size(4, 2, 1), phase_kernel_size(3, 2, 1), phase_kernel_size(2, 2, 1)
  (2, 2, 1)
  """
  return (kernel_size - 1) * dilation // stride + 1


def phase_holes(kernel_size: int, stride: int, dilation: int) -> bool:
  """Whether the phase kernels hold zeros: their ``s * K`` slots exceed the ``k`` taps (``k % s != 0``
  without dilation; a dilation sharing a factor with the stride leaves whole phases empty).

  >>> phase_holes(4, 2, 1), phase_holes(3, 2, 1), phase_holes(3, 2, 2)
  (False, True, True)
  """
  return stride * phase_kernel_size(kernel_size, stride, dilation) > kernel_size


def phase_count(kernel_size: int, stride: int, dilation: int) -> int:
  """How many of the ``s`` phases hold a tap: ``len({j * d % s})`` over the taps ``j`` (see `phase_plan`); fewer
  than ``s`` where the dilation shares a factor with the stride.

  >>> phase_count(4, 2, 1), phase_count(1, 3, 1), phase_count(3, 2, 2)
  (2, 1, 1)
  """
  return len({j * dilation % stride for j in range(kernel_size)})
