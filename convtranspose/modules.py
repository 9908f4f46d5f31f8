"""Flax modules with MindSpore's constructor and parameters; they hold parameters and call the function."""

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

from convtranspose import _arguments, initializers
from convtranspose.functional import _conv_transpose

IntOrTuple = int | tuple[int, ...]


class _ConvTranspose(nn.Module):
  """A MindSpore ``nn.Conv{n}dTranspose`` layer as a Flax module; ``n`` is fixed by the subclass.

  Attributes:
    in_channels: ``C_in``.
    out_channels: ``C_out``.
    kernel_size: int or tuple of ``n`` ints.
    stride: int or tuple of ``n`` ints. Default 1.
    pad_mode: ``'same'`` (default), ``'valid'`` or ``'pad'``; see `convtranspose.conv_transpose`.
    padding: int or tuple of ``2 * n`` ints, MindSpore's order; only with ``pad_mode='pad'``. Default 0.
    dilation: int or tuple of ``n`` ints. Default 1.
    group: number of channel groups; must divide both channel counts. Default 1.
    has_bias: whether to add a ``bias`` of shape ``(C_out,)``. Default False.
    weight_init: initializer of ``weight`` (``(C_in, C_out // group, *kernel_size)``): a name, an
      `convtranspose.initializers.Initializer`, a number, an array or ``init(key, shape, dtype)``.
      Default ``'normal'`` (sigma 0.01).
    bias_init: initializer of ``bias``, the same kinds. Default ``'zeros'``.
    dtype: computation dtype; None promotes the input and the parameters (as Flax's layers do).
    param_dtype: parameter dtype. Default float32.
    precision: passed to `jax.lax.conv_general_dilated`.

  Every argument is checked at construction, raising MindSpore's exception types.
  """

  in_channels: int
  out_channels: int
  kernel_size: IntOrTuple
  stride: IntOrTuple = 1
  pad_mode: str = "same"
  padding: IntOrTuple = 0
  dilation: IntOrTuple = 1
  group: int = 1
  has_bias: bool = False
  weight_init: initializers.InitLike = "normal"
  bias_init: initializers.InitLike = "zeros"
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: lax.PrecisionLike = None

  num_spatial_dims: ClassVar[int]

  def __post_init__(self):
    _canonical(self)  # raises on any invalid argument, before Flax sees the module
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the layer to ``x`` of shape ``(N, C_in, *spatial)``; returns ``(N, C_out, *out_spatial)``."""
    geometry, weight_shape, weight_init, bias_init = _canonical(self)
    weight = self.param("weight", weight_init, weight_shape, self.param_dtype)
    bias = self.param("bias", bias_init, (self.out_channels,), self.param_dtype) if self.has_bias else None
    x, weight, bias = promote_dtype(x, weight, bias, dtype=self.dtype)
    return _conv_transpose(x, weight, bias, geometry, self.precision)


def _canonical(
    layer: _ConvTranspose,
) -> tuple[_arguments.Geometry, tuple[int, ...], initializers.InitFn, initializers.InitFn | None]:
  """Validates a layer's MindSpore arguments.

  Returns:
    The layer's `Geometry`, its weight shape ``(C_in, C_out // group, *kernel_size)`` and its weight and
    bias initializers as ``init(key, shape, dtype)`` (no bias initializer without ``has_bias``).

  A function, not a method: Flax wraps module methods, which cannot run before ``__post_init__`` ends.
  """
  _arguments.channels_and_group(layer.in_channels, layer.out_channels, layer.group)
  geometry = _arguments.geometry(layer.num_spatial_dims, layer.kernel_size, layer.stride, layer.pad_mode,
                                 layer.padding, layer.dilation, layer.group)
  if not isinstance(layer.has_bias, bool):
    raise TypeError(f"`has_bias` must be a bool, but got {layer.has_bias!r} of type {type(layer.has_bias).__name__}.")
  weight_shape = (layer.in_channels, layer.out_channels // layer.group, *geometry.kernel_size)
  weight_init = initializers.resolve(layer.weight_init, "weight_init")
  initializers.check_shape(weight_init, weight_shape, "weight_init")
  bias_init = None
  if layer.has_bias:  # as in MindSpore, bias_init is only read when there is a bias
    bias_init = initializers.resolve(layer.bias_init, "bias_init")
    initializers.check_shape(bias_init, (layer.out_channels,), "bias_init")
  return geometry, weight_shape, weight_init, bias_init


class Conv2dTranspose(_ConvTranspose):
  """MindSpore's ``nn.Conv2dTranspose``: input ``(N, C_in, H, W)``, ``weight`` ``(C_in, C_out // group, kH, kW)``.

  ``padding`` is an int or ``(top, bottom, left, right)``. See `convtranspose.conv_transpose` for the output
  shape per ``pad_mode``; the attributes follow the example.

  Example usage::

    >>> import jax, jax.numpy as jnp
    >>> import convtranspose as ct
    >>> net = ct.Conv2dTranspose(3, 64, 4, has_bias=False, weight_init='normal', pad_mode='pad')
    >>> x = jnp.ones((1, 3, 16, 50))
    >>> variables = net.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'weight': (3, 64, 4, 4)}}
    >>> jax.jit(net.apply)(variables, x).shape
    (1, 64, 19, 53)
  """

  __doc__ += _ConvTranspose.__doc__.split("\n", 1)[1]  # the shared attribute list

  num_spatial_dims: ClassVar[int] = 2
