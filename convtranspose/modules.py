"""Flax modules with MindSpore's constructor and parameters; they hold parameters and call the function."""

from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax.linen.dtypes import promote_dtype
from jax import lax

from convtranspose import _arguments, initializers, sharding
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
    output_padding: int or tuple of ``n`` ints in ``[0, max(stride, dilation))``, rows added at the high end
      of each spatial dimension and computed by the convolution; only with ``pad_mode='pad'``. Default 0.
    has_bias: whether to add a ``bias`` of shape ``(C_out,)``. Default False.
    weight_init: initializer of ``weight`` (``(C_in, C_out // group, *kernel_size)``; the 1-D layer's, as
      MindSpore stores it, ``(C_in, C_out // group, 1, k)``): a name, an
      `convtranspose.initializers.Initializer`, a number, an array or ``init(key, shape, dtype)``.
      Default ``'normal'`` (sigma 0.01).
    bias_init: initializer of ``bias``, the same kinds. Default ``'zeros'``.
    data_format: channels-first (``'NCL'``, ``'NCHW'``, ``'NCDHW'``; the default) or channels-last
      (``'NLC'``, ``'NHWC'``, ``'NDHWC'``). The weight keeps MindSpore's layout either way.
    dtype: computation dtype; None promotes the input and the parameters (as Flax's layers do).
    param_dtype: parameter dtype. Default float32.
    precision: passed to `jax.lax.conv_general_dilated`.
    algorithm: ``'auto'`` (default), ``'dilated'``, ``'phase'`` or ``'hybrid'``; see
      `convtranspose.conv_transpose`.
    logical_axes: create ``weight`` and ``bias`` as `flax.linen.LogicallyPartitioned` values with the logical
      axis names of `convtranspose.sharding`, for sharding with a `jax.sharding.Mesh`. Default False
      (plain arrays, as MindSpore's parameters).
    padding_mode: ``'zeros'`` (default), ``'circular'``, ``'reflect'`` or ``'replicate'``: the layer is the
      adjoint of the forward convolution that pads with ``jnp.pad`` in that mode; see
      `convtranspose.conv_transpose`.

  Every argument is checked at construction, raising MindSpore's exception types. The input may lack the
  batch axis (one unbatched example); the output then lacks it too.
  """

  # The arguments every MindSpore transposed convolution starts with, in its order; each rank's class
  # declares the rest in the order its MindSpore layer takes them.
  in_channels: int
  out_channels: int
  kernel_size: IntOrTuple
  stride: IntOrTuple = 1
  pad_mode: str = "same"
  padding: IntOrTuple = 0
  dilation: IntOrTuple = 1
  group: int = 1

  num_spatial_dims: ClassVar[int]
  # MindSpore's 1-D layers are 2-D layers of height 1 and store their weight with that unit axis; keeping
  # MindSpore's shape lets checkpoints move between the frameworks unchanged.
  stored_kernel_prefix: ClassVar[tuple[int, ...]] = ()

  def __post_init__(self):
    _canonical(self)  # raises on any invalid argument, before Flax sees the module
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, output_size: IntOrTuple | None = None) -> jax.Array:
    """Applies the layer to ``x`` of shape ``(N, C_in, *spatial)`` (channels-last: ``(N, *spatial, C_in)``;
    unbatched: no ``N``); returns ``(N, C_out, *out_spatial)`` in the same layout.

    ``output_size`` (spatial sizes, or a whole output shape such as ``skip.shape``) picks the
    ``output_padding`` that gives that output, as PyTorch's ``forward(x, output_size)``; the layer's own
    ``output_padding`` must then be 0. Sizes out of reach raise ValueError naming the range.
    """
    geometry, weight_shape, weight_init, bias_init = _canonical(self)
    if self.logical_axes:
      weight_init = nn.with_logical_partitioning(weight_init, sharding.weight_axes(len(weight_shape)))
      bias_init = bias_init and nn.with_logical_partitioning(bias_init, sharding.BIAS_AXES)
    weight = self.param("weight", weight_init, weight_shape, self.param_dtype)
    bias = self.param("bias", bias_init, (self.out_channels,), self.param_dtype) if self.has_bias else None
    weight = jnp.reshape(weight, (*weight_shape[:2], *geometry.kernel_size))  # drops a 1-D layer's unit height
    x, weight, bias = promote_dtype(x, weight, bias, dtype=self.dtype)
    return _conv_transpose(x, weight, bias, geometry, self.precision, self.algorithm, output_size)


def _canonical(
    layer: _ConvTranspose,
) -> tuple[_arguments.Geometry, tuple[int, ...], initializers.InitFn, initializers.InitFn | None]:
  """Validates a layer's MindSpore arguments.

  Returns:
    The layer's `Geometry`, its stored weight shape ``(C_in, C_out // group, *stored_kernel_prefix,
    *kernel_size)`` and its weight and
    bias initializers as ``init(key, shape, dtype)`` (no bias initializer without ``has_bias``).

  A function, not a method: Flax wraps module methods, which cannot run before ``__post_init__`` ends.
  """
  _arguments.channels_and_group(layer.in_channels, layer.out_channels, layer.group)
  geometry = _arguments.geometry(layer.num_spatial_dims, layer.kernel_size, layer.stride, layer.pad_mode,
                                 layer.padding, layer.dilation, layer.group, layer.output_padding, layer.data_format,
                                 layer.padding_mode)
  _arguments.checked_algorithm(layer.algorithm)
  for name in ("has_bias", "logical_axes"):
    value = getattr(layer, name)
    if not isinstance(value, bool):
      raise TypeError(f"`{name}` must be a bool, but got {value!r} of type {type(value).__name__}.")
  kernel_shape = (layer.in_channels, layer.out_channels // layer.group, *geometry.kernel_size)
  weight_shape = (*kernel_shape[:2], *layer.stored_kernel_prefix, *geometry.kernel_size)
  weight_init = initializers.resolve(layer.weight_init, "weight_init")
  if isinstance(weight_init, initializers.FromArray) and np.shape(weight_init.array) == kernel_shape:
    weight_init = initializers.FromArray(jnp.reshape(weight_init.array, weight_shape))  # MindSpore's 1-D form
  initializers.check_shape(weight_init, weight_shape, "weight_init")
  bias_init = None
  if layer.has_bias:  # as in MindSpore, bias_init is only read when there is a bias
    bias_init = initializers.resolve(layer.bias_init, "bias_init")
    initializers.check_shape(bias_init, (layer.out_channels,), "bias_init")
  return geometry, weight_shape, weight_init, bias_init


class _BiasThenOutputPadding(_ConvTranspose):
  """MindSpore 1.x's ``nn.Conv1dTranspose``/``nn.Conv2dTranspose`` order: ``has_bias``, ``weight_init``,
  ``bias_init``, then ``output_padding`` and ``data_format``, which MindSpore 1.x did not have."""

  has_bias: bool = False
  weight_init: initializers.InitLike = "normal"
  bias_init: initializers.InitLike = "zeros"
  output_padding: IntOrTuple = 0
  data_format: str | None = None  # the subclass sets its rank's channels-first name
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: lax.PrecisionLike = None
  algorithm: str = "auto"
  logical_axes: bool = False
  padding_mode: str = "zeros"


class Conv1dTranspose(_BiasThenOutputPadding):
  """MindSpore's ``nn.Conv1dTranspose``: input ``(N, C_in, L)``, ``weight`` ``(C_in, C_out // group, 1, k)``.

  The weight has MindSpore's stored shape, with the unit height of MindSpore's 1-D layers (which are 2-D layers
  of height 1), so MindSpore checkpoints load unchanged; ``weight_init`` arrays may omit that axis (MindSpore
  requires it omitted); `convtranspose.interop.from_torch_state_dict` adds it to PyTorch's weights.
  ``padding`` is an int or ``(left, right)`` (MindSpore's 1-D layer takes one int for both sides). A batch of
  one keeps its axis.

  Example usage::

    >>> import jax, jax.numpy as jnp
    >>> import convtranspose as ct
    >>> net = ct.Conv1dTranspose(16, 8, 8, stride=4, pad_mode='pad', padding=2, has_bias=True)
    >>> x = jnp.ones((1, 16, 100))
    >>> variables = net.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'bias': (8,), 'weight': (16, 8, 1, 8)}}
    >>> net.apply(variables, x).shape
    (1, 8, 400)
  """

  __doc__ += _ConvTranspose.__doc__.split("\n", 1)[1]  # the shared attribute list

  data_format: str | None = "NCL"

  num_spatial_dims: ClassVar[int] = 1
  stored_kernel_prefix: ClassVar[tuple[int, ...]] = (1,)


class Conv2dTranspose(_BiasThenOutputPadding):
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

  data_format: str | None = "NCHW"

  num_spatial_dims: ClassVar[int] = 2


class Conv3dTranspose(_ConvTranspose):
  """MindSpore's ``nn.Conv3dTranspose``: input ``(N, C_in, D, H, W)``, ``weight``
  ``(C_in, C_out // group, kD, kH, kW)``.

  ``padding`` is an int or ``(head, tail, top, bottom, left, right)``. The arguments after ``group`` come in
  MindSpore's 3-D order: ``output_padding`` before ``has_bias``. Unlike MindSpore, the depth dilation may
  exceed 1, and ``data_format='NDHWC'`` is accepted.

  Example usage::

    >>> import jax, jax.numpy as jnp
    >>> import convtranspose as ct
    >>> net = ct.Conv3dTranspose(4, 2, 3, stride=2, pad_mode='pad', padding=1, output_padding=1)
    >>> x = jnp.ones((1, 4, 8, 8, 8))
    >>> variables = net.init(jax.random.key(0), x)
    >>> net.apply(variables, x).shape
    (1, 2, 16, 16, 16)
  """

  __doc__ += _ConvTranspose.__doc__.split("\n", 1)[1]  # the shared attribute list

  output_padding: IntOrTuple = 0
  has_bias: bool = False
  weight_init: initializers.InitLike = "normal"
  bias_init: initializers.InitLike = "zeros"
  data_format: str | None = "NCDHW"
  dtype: Any = None
  param_dtype: Any = jnp.float32
  precision: lax.PrecisionLike = None
  algorithm: str = "auto"
  logical_axes: bool = False
  padding_mode: str = "zeros"

  num_spatial_dims: ClassVar[int] = 3
