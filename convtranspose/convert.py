"""Converters between this library's (MindSpore's) transposed convolution and Flax's, Keras 3's, PyTorch's.

The same layer, five vocabularies. Per spatial dimension, with ``dk = dilation * (k - 1) + 1`` and the
forward convolution's padding ``(lo, hi)`` (MindSpore's and PyTorch's meaning; `flax_padding` resolves
``pad_mode`` and ``output_padding`` into it):

=====================  ==================================  ===============================================
framework              kernel layout                       padding
=====================  ==================================  ===============================================
MindSpore, this lib    ``(C_in, C_out // group, *k)``       forward ``(lo, hi)`` via ``pad_mode``/``padding``
PyTorch                ``(C_in, C_out // groups, *k)``      forward ``(p, p)``, then ``output_padding`` rows
Flax, ``lax``          ``(*k, C_in, C_out)`` flipped, or    of the ``s``-dilated input: ``(dk-1-lo, dk-1-hi)``
                       ``(*k, C_out, C_in)`` with
                       ``transpose_kernel=True``
Keras 3                ``(*k, C_out, C_in)``                ``'valid'``/``'same'`` and ``output_padding``
=====================  ==================================  ===============================================

Flax's ``nn.ConvTranspose``, `jax.lax.conv_transpose` and Keras's layers have no channel groups; PyTorch
pads both sides alike. Where a peer cannot express a layer, its converter raises ValueError saying why.

>>> import numpy as np
>>> weight = np.zeros((3, 64, 4, 4))
>>> flax_kernel(weight).shape, flax_kernel(weight, transpose_kernel=True).shape
((4, 4, 3, 64), (4, 4, 64, 3))
>>> flax_padding('pad', 1, (4, 4), stride=2)
((2, 2), (2, 2))
>>> keras_padding('same', 0, (3, 3), stride=2)
('same', None)
>>> torch_padding('pad', (1, 1, 0, 0), (3, 3), stride=2, output_padding=(1, 0))
((1, 0), (1, 0))
"""

from typing import Any

import numpy as np

from convtranspose import _arguments, _shapes

IntOrTuple = int | tuple[int, ...]


def flax_kernel(weight: Any, transpose_kernel: bool = False) -> np.ndarray:
  """MindSpore's ``weight`` ``(C_in, C_out, *k)`` as the ``kernel`` of Flax's ``nn.ConvTranspose`` (and of
  `jax.lax.conv_transpose` with the ``'...IO'`` kernel spec).

  Flax slides the kernel over the dilated input without flipping it, so ``transpose_kernel=False`` wants
  ``(*k, C_in, C_out)`` flipped in every spatial axis; ``transpose_kernel=True`` flips and swaps itself and
  wants ``(*k, C_out, C_in)`` as it is (the gradient of a forward convolution with that kernel). Flax has no
  channel groups: ``weight`` must be a ``group=1`` weight.
  """
  weight = np.asarray(weight)
  n = _spatial_rank(weight, "weight")
  if transpose_kernel:
    return np.transpose(weight, (*range(2, n + 2), 1, 0))
  return np.flip(np.transpose(weight, (*range(2, n + 2), 0, 1)), axis=tuple(range(n)))


def from_flax_kernel(kernel: Any, transpose_kernel: bool = False) -> np.ndarray:
  """The inverse of `flax_kernel`: a Flax ``nn.ConvTranspose`` kernel as MindSpore's ``weight``."""
  kernel = np.asarray(kernel)
  n = _spatial_rank(kernel, "kernel")
  if transpose_kernel:
    return np.transpose(kernel, (n + 1, n, *range(n)))
  return np.transpose(np.flip(kernel, axis=tuple(range(n))), (n, n + 1, *range(n)))


def keras_kernel(weight: Any) -> np.ndarray:
  """MindSpore's ``weight`` ``(C_in, C_out, *k)`` as a Keras 3 ``Conv{1,2,3}DTranspose`` kernel
  ``(*k, C_out, C_in)`` (Keras computes the gradient of a forward convolution with it: no flip)."""
  return flax_kernel(weight, transpose_kernel=True)


def from_keras_kernel(kernel: Any) -> np.ndarray:
  """The inverse of `keras_kernel`."""
  return from_flax_kernel(kernel, transpose_kernel=True)


def _spatial_rank(array: np.ndarray, name: str) -> int:
  if array.ndim < 3:
    raise ValueError(f"`{name}` must have two channel axes and at least one spatial axis, but got shape "
                     f"{array.shape}.")
  return array.ndim - 2


def _forward_padding(pad_mode: Any, padding: Any, kernel_size: Any, stride: Any, dilation: Any,
                     output_padding: Any) -> tuple[_arguments.Geometry, tuple[int, ...]]:
  """The layer's `Geometry` (validated as MindSpore does) and its dilated kernel sizes."""
  if not isinstance(kernel_size, tuple):
    raise TypeError(f"`kernel_size` must be a tuple, one int per spatial dimension (it sets their number), but "
                    f"got {kernel_size!r} of type {type(kernel_size).__name__}.")
  geometry = _arguments.geometry(len(kernel_size), kernel_size, stride, pad_mode, padding, dilation, 1,
                                 output_padding)
  return geometry, tuple(_shapes.dilated_kernel_size(k, d) for k, d in zip(geometry.kernel_size, geometry.dilation))


def flax_padding(pad_mode: str, padding: IntOrTuple, kernel_size: tuple[int, ...], stride: IntOrTuple = 1,
                 dilation: IntOrTuple = 1, *, output_padding: IntOrTuple = 0) -> tuple[tuple[int, int], ...]:
  """The explicit ``padding`` of Flax's ``nn.ConvTranspose`` and `jax.lax.conv_transpose` for this layer.

  Both pad the ``stride``-dilated input, so the forward padding ``(lo, hi)`` (``output_padding`` taken off
  ``hi``) becomes ``(dk - 1 - lo, dk - 1 - hi)`` (negative values crop). Any layer is expressible.

  Args:
    pad_mode, padding, stride, dilation, output_padding: MindSpore's arguments.
    kernel_size: a tuple, one size per spatial dimension.

  Returns:
    ``((lo_1, hi_1), ..., (lo_n, hi_n))``.
  """
  geometry, _ = _forward_padding(pad_mode, padding, kernel_size, stride, dilation, output_padding)
  return tuple(_shapes.lhs_dilated_padding(k, d, pad)
               for k, d, pad in zip(geometry.kernel_size, geometry.dilation, geometry.padding))


def _keras_dilated_padding(kernel: int, stride: int, padding: str, output_padding: int | None) -> tuple[int, int]:
  """Keras 3's padding of the dilated input (its JAX backend), for dilated kernel size ``kernel``.

  ``'valid'``: ``(dk - 1, dk - 1 + op)``, ``op`` defaulting to ``max(dk, s) - dk``. ``'same'``: a total of
  ``t = s + dk - 2`` (``op`` None) or ``t = dk + dk % 2 - 2 + op``, ``lo = min(ceil(t / 2), dk - 1)``,
  ``hi = t - lo``.
  """
  if padding == "valid":
    extra = max(kernel, stride) - kernel if output_padding is None else output_padding
    return kernel - 1, kernel - 1 + extra
  total = stride + kernel - 2 if output_padding is None else kernel + kernel % 2 - 2 + output_padding
  lo = min(-(-total // 2), kernel - 1)
  return lo, total - lo


def keras_padding(pad_mode: str, padding: IntOrTuple, kernel_size: tuple[int, ...], stride: IntOrTuple = 1,
                  dilation: IntOrTuple = 1, *, output_padding: IntOrTuple = 0
                  ) -> tuple[str, tuple[int, ...] | None]:
  """Keras 3's ``(padding, output_padding)`` for this layer, where Keras can express it.

  Keras has two paddings, ``'valid'`` and ``'same'``, for all dimensions at once, an ``output_padding``
  below the stride per dimension (or None, its default), and no dilation together with strides. This returns the first pair that pads the
  dilated input exactly as `flax_padding` says, preferring ``output_padding=None``.

  Raises:
    ValueError: Keras cannot express the layer (e.g. asymmetric or large explicit padding); the message gives
      the padding needed.
  """
  geometry, kernels = _forward_padding(pad_mode, padding, kernel_size, stride, dilation, output_padding)
  if max(geometry.stride) > 1 and max(geometry.dilation) > 1:
    raise ValueError(f"Keras 3 cannot express this layer: it takes no strides > 1 with dilation_rate > 1, but got "
                     f"stride {geometry.stride} and dilation {geometry.dilation}.")
  needed = flax_padding(pad_mode, padding, kernel_size, stride, dilation, output_padding=output_padding)
  for keras_mode in ("same", "valid"):
    if all(_keras_dilated_padding(k, s, keras_mode, None) == pad
           for k, s, pad in zip(kernels, geometry.stride, needed)):
      return keras_mode, None
    extra = [next((op for op in range(s) if _keras_dilated_padding(k, s, keras_mode, op) == pad), None)
             for k, s, pad in zip(kernels, geometry.stride, needed)]
    if None not in extra:
      return keras_mode, tuple(extra)
  raise ValueError(f"Keras 3 cannot express this layer: it needs the dilated input padded by {needed}, which "
                   "neither padding='valid' nor 'same' gives with any output_padding below the stride.")


def torch_padding(pad_mode: str, padding: IntOrTuple, kernel_size: tuple[int, ...], stride: IntOrTuple = 1,
                  dilation: IntOrTuple = 1, *, output_padding: IntOrTuple = 0
                  ) -> tuple[tuple[int, ...], tuple[int, ...]]:
  """PyTorch's ``(padding, output_padding)`` for ``nn.ConvTranspose{1,2,3}d``, where PyTorch can express it.

  PyTorch's forward padding is ``(p, p - op)`` with ``0 <= op < max(stride, dilation)``: a layer whose
  forward padding ``(lo, hi)`` has ``lo >= hi`` and ``lo - hi`` in that range maps to ``p = lo``,
  ``op = lo - hi``. The weight needs no conversion (same layout; the 1-D weight without MindSpore's unit
  height).

  Raises:
    ValueError: the layer pads more at the high end (MindSpore's ``'same'`` with an odd ``dk - stride``), or
      by more than ``output_padding`` can make up.
  """
  geometry, _ = _forward_padding(pad_mode, padding, kernel_size, stride, dilation, output_padding)
  extra = []
  for axis, ((lo, hi), s, d) in enumerate(zip(geometry.padding, geometry.stride, geometry.dilation)):
    if not 0 <= lo - hi < max(s, d) or lo < 0:
      raise ValueError(f"PyTorch cannot express the forward padding ({lo}, {hi}) along spatial dimension {axis}: "
                       f"it pads (p, p - output_padding) with 0 <= output_padding < {max(s, d)}.")
    extra.append(lo - hi)
  return tuple(lo for lo, _ in geometry.padding), tuple(extra)
