"""Normalization of MindSpore-style arguments into canonical, frozen values.

Each kind of argument has exactly one helper here, applied once at the public edge (the functions in
`convtranspose.functional` and the constructors of the modules). The private core only ever sees a
`Geometry`. Exception types are MindSpore's (checked against MindSpore 2.10): ``TypeError`` for a wrong
type, ``ValueError`` for a wrong value.
"""

import dataclasses
import math
from typing import Any

import jax.numpy as jnp

from convtranspose import _shapes

_SIDE_NAMES = {
    1: ("left", "right"),
    2: ("top", "bottom", "left", "right"),
    3: ("head", "tail", "top", "bottom", "left", "right"),
}

# (channels-first, channels-last) names per number of spatial dimensions.
DATA_FORMATS = {
    1: ("NCL", "NLC"),
    2: ("NCHW", "NHWC"),
    3: ("NCDHW", "NDHWC"),
}


@dataclasses.dataclass(frozen=True)
class Geometry:
  """Canonical per-spatial-dimension arguments of one transposed convolution.

  Attributes:
    kernel_size: ``(k_1, ..., k_n)``.
    stride: ``(s_1, ..., s_n)``.
    dilation: ``(d_1, ..., d_n)``.
    padding: ``((lo_1, hi_1), ..., (lo_n, hi_n))``, the forward convolution's padding, already resolved
      from ``pad_mode`` and ``output_padding`` by `convtranspose._shapes.forward_padding` (``hi`` may be
      negative).
    group: number of channel groups.
    channels_last: whether the channel axis of the input and output is the last one (``NHWC``) rather
      than axis 1 (``NCHW``). The weight's layout never changes.
    pad_mode: ``'same'``, ``'valid'`` or ``'pad'``; read by `with_output_size`.
    output_padding: ``(op_1, ..., op_n)``, already in ``padding``; read by `with_output_size`.
    padding_mode: how the forward convolution pads: ``'zeros'``, ``'circular'``, ``'reflect'`` or
      ``'replicate'`` (`PADDING_MODES`).
  """

  kernel_size: tuple[int, ...]
  stride: tuple[int, ...]
  dilation: tuple[int, ...]
  padding: tuple[tuple[int, int], ...]
  group: int
  channels_last: bool = False
  pad_mode: str = "pad"
  output_padding: tuple[int, ...] = ()
  padding_mode: str = "zeros"

  def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Spatial output shape for spatial ``input_shape``; see `convtranspose._shapes.output_shape`."""
    return _shapes.output_shape(input_shape, self.kernel_size, self.stride, self.dilation, self.padding)

  def phase_count(self) -> int:
    """The phases that hold a tap, over all dimensions: ``prod(phase_count(k, s, d))``
    (`convtranspose._shapes.phase_count`); the phase kernel has that many output blocks."""
    return math.prod(map(_shapes.phase_count, self.kernel_size, self.stride, self.dilation))

  def phase_holes(self) -> bool:
    """Whether the phase kernels hold zeros in any dimension; see `convtranspose._shapes.phase_holes`."""
    return any(map(_shapes.phase_holes, self.kernel_size, self.stride, self.dilation))

  def phase_work(self, input_shape: tuple[int, ...] | None = None) -> float:
    """The phase product's multiply-adds over the layer's, ``prod(Q * K * P / (L * k))`` over the dimensions:
    ``P`` phases of ``Q`` rows (`convtranspose._shapes.phase_plan`) and ``K`` kernel positions each, against
    ``L`` input rows and ``k`` taps. Above 1 where the kernel leaves holes in the phases (``P * K > k``) and
    where the phases cover more rows than the input has (``Q > L``: ``Q = L + 1`` for ``k = 4, s = 2,
    pad = 1``, 27% more rows on an 8x8 input). Without ``input_shape``, the kernel's share alone."""
    ratio = math.prod(map(lambda k, s, d: _shapes.phase_count(k, s, d) * _shapes.phase_kernel_size(k, s, d) / k,
                          self.kernel_size, self.stride, self.dilation))
    if input_shape is not None:
      plans = map(_shapes.phase_plan, input_shape, self.kernel_size, self.stride, self.dilation, self.padding,
                  self.output_shape(input_shape))
      ratio *= math.prod(plan.length / length for plan, length in zip(plans, input_shape))
    return ratio


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def positive_int(value: Any, name: str) -> int:
  """``value`` if it is an ``int >= 1``; TypeError for a non-int (bool included), else ValueError."""
  if not _is_int(value):
    raise TypeError(f"`{name}` must be an int, but got {value!r} of type {type(value).__name__}.")
  if value < 1:
    raise ValueError(f"`{name}` must be an int >= 1, but got {value}.")
  return value


def _expand(value: Any, length: int, name: str, form: str, length_error: type[Exception]) -> tuple[int, ...]:
  """An int repeated ``length`` times, or a tuple of ``length`` ints, as a tuple (a list is not a tuple).

  Raises TypeError for another type; ``length_error`` for a tuple of another length (MindSpore raises
  TypeError for kernel/stride/dilation, ValueError for padding).
  """
  if _is_int(value):
    return (value,) * length
  if isinstance(value, tuple) and all(_is_int(v) for v in value):
    if len(value) != length:
      raise length_error(f"`{name}` must be an int or {form}, but got {value!r} of length {len(value)}.")
    return value
  raise TypeError(f"`{name}` must be an int or {form}, but got {value!r} of type {type(value).__name__}.")


def int_tuple(value: Any, n: int, name: str, minimum: int = 1) -> tuple[int, ...]:
  """An int (repeated ``n`` times) or a tuple of ``n`` ints, each ``>= minimum``, as a tuple.

  A list is not a tuple, as in MindSpore. Raises TypeError for another type or a tuple of the wrong length
  (MindSpore's ``twice``/``_check_3d_int_or_tuple`` do), ValueError for a value below ``minimum``.
  """
  values = _expand(value, n, name, f"a tuple of {n} ints", TypeError)
  if any(v < minimum for v in values):
    raise ValueError(f"`{name}` must contain ints >= {minimum}, but got {value!r}.")
  return values


def checked_pad_mode(value: Any) -> str:
  """``value`` if it is one of ``'same'``, ``'valid'``, ``'pad'`` (case-sensitive, as in MindSpore)."""
  if not isinstance(value, str) or value not in _shapes.PAD_MODES:
    raise ValueError(f"`pad_mode` must be one of {list(_shapes.PAD_MODES)}, but got {value!r}.")
  return value


def padding_pairs(value: Any, n: int, mode: str) -> tuple[tuple[int, int], ...]:
  """MindSpore's ``padding`` as ``((lo_1, hi_1), ..., (lo_n, hi_n))``.

  ``value`` is an int (every side) or a tuple of ``2 * n`` ints ordered as MindSpore orders them
  (``(top, bottom, left, right)`` in 2-D). It must be non-negative, and all zero unless ``mode == 'pad'``.
  """
  sides = 2 * n
  names = ", ".join(_SIDE_NAMES.get(n, ("lo", "hi") * n))
  flat = _expand(value, sides, "padding", f"a tuple of {sides} ints ({names})", ValueError)
  if any(v < 0 for v in flat):
    raise ValueError(f"`padding` must be >= 0, but got {value!r}.")
  if mode != "pad" and any(flat):
    raise ValueError(f"`padding` must be 0 when `pad_mode` is {mode!r} (only 'pad' takes explicit padding), "
                     f"but got {value!r}.")
  return tuple((flat[2 * i], flat[2 * i + 1]) for i in range(n))


def checked_output_padding(value: Any, stride: tuple[int, ...], dilation: tuple[int, ...],
                           mode: str) -> tuple[int, ...]:
  """``output_padding`` as a tuple: ints in ``[0, max(stride, dilation))``, all zero unless ``mode == 'pad'``.

  Raises TypeError for another type or length (as MindSpore's ``_check_3d_int_or_tuple``), ValueError for a
  value out of range (MindSpore's 3-D layer checks the range when called; we check it here).
  """
  values = int_tuple(value, len(stride), "output_padding", minimum=0)
  if mode != "pad" and any(values):
    raise ValueError(f"`output_padding` must be 0 when `pad_mode` is {mode!r} (only 'pad' takes it), but got "
                     f"{value!r}.")
  for axis, (op, s, d) in enumerate(zip(values, stride, dilation)):
    if op >= max(s, d):
      raise ValueError(f"`output_padding` must be in [0, max(stride, dilation)) = [0, {max(s, d)}) along spatial "
                       f"dimension {axis} (stride {s}, dilation {d}), but got {op}.")
  return values


def is_channels_last(data_format: Any, n: int) -> bool:
  """Whether ``data_format`` (one of `DATA_FORMATS` for ``n`` spatial dimensions, or None for channels-first)
  puts the channels last. Raises TypeError for a non-string, ValueError for an unknown name."""
  if data_format is None:
    return False
  allowed = DATA_FORMATS.get(n, ())
  if not isinstance(data_format, str):
    raise TypeError(f"`data_format` must be a str, one of {list(allowed)}, but got {data_format!r} of type "
                    f"{type(data_format).__name__}.")
  if data_format not in allowed:
    raise ValueError(f"`data_format` must be one of {list(allowed)} for {n} spatial dimension(s), but got "
                     f"{data_format!r}.")
  return data_format == allowed[1]


# ``padding_mode`` names (PyTorch's) and the `numpy.pad`/`jax.numpy.pad` mode each one means.
PADDING_MODES = {"zeros": "constant", "circular": "wrap", "reflect": "reflect", "replicate": "edge"}


def checked_padding_mode(value: Any, pad_mode: str) -> str:
  """``value`` if it is one of `PADDING_MODES` and ``pad_mode`` pads at all (``'valid'`` pads nothing)."""
  if not isinstance(value, str) or value not in PADDING_MODES:
    raise ValueError(f"`padding_mode` must be one of {list(PADDING_MODES)}, but got {value!r}.")
  if value != "zeros" and pad_mode == "valid":
    raise ValueError(f"`padding_mode` {value!r} needs padding to act on, but `pad_mode` 'valid' pads nothing; "
                     "use pad_mode 'same' or 'pad', or padding_mode 'zeros'.")
  return value


ALGORITHMS = ("auto", "autotune", "dilated", "phase", "hybrid")


def checked_algorithm(value: Any) -> str:
  """``value`` if it names an algorithm of `convtranspose.conv_transpose` (ValueError otherwise)."""
  if not isinstance(value, str) or value not in ALGORITHMS:
    raise ValueError(f"`algorithm` must be one of {list(ALGORITHMS)}, but got {value!r}.")
  return value


def floating_dtype(value: Any, name: str) -> Any:
  """``value`` if it is None or names a floating dtype (``jnp.float32``, ``'bfloat16'``, ...); TypeError
  otherwise: the layers compute and keep their parameters in floating point."""
  if value is None:
    return value
  try:
    dtype = jnp.dtype(value)
  except TypeError:
    dtype = None
  if dtype is None or not jnp.issubdtype(dtype, jnp.floating):
    raise TypeError(f"`{name}` must be a floating dtype (float16, bfloat16, float32 or float64) or None, but got "
                    f"{value!r}{'' if dtype is None else f' ({dtype})'}.")
  return value


def channels_and_group(in_channels: Any, out_channels: Any, group: Any, group_name: str = "group") -> None:
  """Checks ``in_channels``, ``out_channels`` and ``group`` are ints >= 1 and ``group`` divides both;
  ``group_name`` is the vocabulary's name for it (``'groups'`` in mint's)."""
  positive_int(in_channels, "in_channels")
  positive_int(out_channels, "out_channels")
  positive_int(group, group_name)
  for name, channels in (("in_channels", in_channels), ("out_channels", out_channels)):
    if channels % group:
      raise ValueError(f"`{name}` (={channels}) must be divisible by `{group_name}` (={group}).")


def geometry(n: int, kernel_size: Any, stride: Any, pad_mode: Any, padding: Any, dilation: Any, group: Any,
             output_padding: Any = 0, data_format: Any = None, padding_mode: Any = "zeros",
             group_name: str = "group") -> Geometry:
  """Validates MindSpore's arguments for ``n`` spatial dimensions and returns their `Geometry`."""
  kernel = int_tuple(kernel_size, n, "kernel_size")
  strides = int_tuple(stride, n, "stride")
  dilations = int_tuple(dilation, n, "dilation")
  mode = checked_pad_mode(pad_mode)
  pads = padding_pairs(padding, n, mode)
  extra = checked_output_padding(output_padding, strides, dilations, mode)
  return Geometry(
      kernel_size=kernel,
      stride=strides,
      dilation=dilations,
      padding=tuple(
          _shapes.forward_padding(k, s, d, mode, p, op)
          for k, s, d, p, op in zip(kernel, strides, dilations, pads, extra)),
      group=positive_int(group, group_name),
      channels_last=is_channels_last(data_format, n),
      pad_mode=mode,
      output_padding=extra,
      padding_mode=checked_padding_mode(padding_mode, mode),
  )


def mint_int_tuple(value: Any, n: int, name: str, minimum: int = 1) -> tuple[int, ...]:
  """A per-dimension argument of the ``mint`` vocabulary (PyTorch's form) as a tuple of ``n`` ints.

  ``value`` is an int, or a tuple or list of one int (repeated) or of ``n`` ints, each ``>= minimum``.
  Raises MindSpore mint's exception types: ValueError for another type (mint's ``_pair``), TypeError for an
  item that is not an int (a bool included), ValueError for an item below ``minimum``, and ValueError for
  another length (mint accepts it at construction and fails when called).
  """
  if isinstance(value, int):  # a bool too: rejected below as an item, as mint does
    items = (value,)
  elif isinstance(value, (tuple, list)):
    items = tuple(value)
  else:
    raise ValueError(f"`{name}` must be an int, or a tuple or list of 1 or {n} ints, but got {value!r} of type "
                     f"{type(value).__name__}.")
  for item in items:
    if not _is_int(item):
      raise TypeError(f"`{name}` must contain ints, but got {value!r} with an item of type {type(item).__name__}.")
    if item < minimum:
      raise ValueError(f"`{name}` must contain ints >= {minimum}, but got {value!r}.")
  if len(items) not in (1, n):
    raise ValueError(f"`{name}` must be an int, or a tuple or list of 1 or {n} ints for {n} spatial "
                     f"dimension(s), but got {value!r} of length {len(items)}.")
  return items * n if len(items) == 1 else items


def mint_geometry(n: int, kernel_size: Any, stride: Any, padding: Any, output_padding: Any, groups: Any,
                  dilation: Any, data_format: Any = None, padding_mode: Any = "zeros") -> Geometry:
  """Validates the ``mint`` vocabulary's arguments (``mint.nn.ConvTranspose2d``'s, PyTorch's) for ``n``
  spatial dimensions and returns their `Geometry`.

  ``padding`` ``p`` (one per dimension) is the forward convolution's on both sides: MindSpore's
  ``pad_mode='pad'`` with ``(p, p)``, so that ``dilation * (kernel_size - 1) - p`` zeros border the dilated
  input. ``output_padding`` must be below ``max(stride, dilation)`` (PyTorch's rule).
  """
  kernel = mint_int_tuple(kernel_size, n, "kernel_size")
  pads = mint_int_tuple(padding, n, "padding", minimum=0)
  return geometry(n, kernel, mint_int_tuple(stride, n, "stride"), "pad", tuple(p for p in pads for _ in "lh"),
                  mint_int_tuple(dilation, n, "dilation"), groups,
                  mint_int_tuple(output_padding, n, "output_padding", minimum=0), data_format, padding_mode,
                  group_name="groups")


def with_output_size(geometry: Geometry, input_shape: tuple[int, ...], output_size: Any) -> Geometry:
  """``geometry`` with the ``output_padding`` that makes the spatial output ``output_size`` (PyTorch's
  ``forward(x, output_size)``): ``output_size`` decides, in place of the layer's own ``output_padding``, as in
  PyTorch.

  Args:
    geometry: a layer's `Geometry`.
    input_shape: the spatial input shape.
    output_size: an int, or a tuple or list of the ``n`` spatial sizes; a whole output shape (``n + 2``
      values, ``n + 1`` unbatched, more with several batch axes, in the layer's layout) is accepted too, so
      ``output_size=skip.shape`` works.

  Raises:
    TypeError: for a non-int size. ValueError: for a size outside the reachable range (named).
  """
  n = len(input_shape)
  if isinstance(output_size, list):
    output_size = tuple(output_size)
  if isinstance(output_size, tuple) and len(output_size) >= n + 1:
    output_size = output_size[-n - 1:-1] if geometry.channels_last else output_size[-n:]
  sizes = int_tuple(output_size, n, "output_size", minimum=0)
  geometry = dataclasses.replace(geometry, output_padding=(0,) * n, padding=tuple(
      (lo, hi + op) for (lo, hi), op in zip(geometry.padding, geometry.output_padding)))
  lengths = geometry.output_shape(input_shape)
  extra = []
  for axis, (size, length, s, d) in enumerate(zip(sizes, lengths, geometry.stride, geometry.dilation)):
    reachable = _shapes.reachable_output_lengths(length, s, d, geometry.pad_mode)
    if size not in reachable:
      raise ValueError(f"`output_size` {sizes} cannot be reached along spatial dimension {axis}: with pad_mode "
                       f"{geometry.pad_mode!r}, stride {s} and dilation {d}, an input of spatial shape "
                       f"{input_shape} gives lengths in [{reachable.start}, {reachable.stop - 1}], but got {size}.")
    extra.append(size - length)
  padding = tuple((lo, hi - op) for (lo, hi), op in zip(geometry.padding, extra))
  return dataclasses.replace(geometry, padding=padding, output_padding=tuple(extra))
