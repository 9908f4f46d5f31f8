"""Flax linen modules with MindSpore's constructors and parameters; they hold arguments and parameters and call
the function (`convtranspose._layers` reads both vocabularies' arguments for them and for `convtranspose.nnx`)."""

import dataclasses
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from convtranspose import _layers, initializers

IntOrTuple = int | tuple[int, ...]
OutSharding = _layers.OutSharding
IntOrSequence = int | tuple[int, ...] | list[int]


class _ConvTranspose(nn.Module):
  """A transposed convolution as a Flax linen module; the subclasses declare a vocabulary's arguments."""

  vocabulary: ClassVar[str]  # 'nn' or 'mint': which arguments the subclass takes (`convtranspose._layers`)
  num_spatial_dims: ClassVar[int]

  def __post_init__(self):
    _layers.describe(self, self.vocabulary, self.num_spatial_dims)  # raises on any invalid argument, now
    super().__post_init__()

  @nn.compact
  def __call__(self, x: jax.Array, output_size: IntOrTuple | None = None,
               out_sharding: OutSharding = None) -> jax.Array:
    """Applies the layer to ``x`` of shape ``(N, C_in, *spatial)`` (channels-last: ``(N, *spatial, C_in)``;
    unbatched: no ``N``); returns ``(N, C_out, *out_spatial)`` in the same layout.

    ``output_size`` (spatial sizes, or a whole output shape such as ``skip.shape``) picks the
    ``output_padding`` that gives that output, as PyTorch's ``forward(x, output_size)``; the layer's own
    ``output_padding`` must then be 0. Sizes out of reach raise ValueError naming the range.

    ``out_sharding`` (a `jax.sharding.PartitionSpec` or `jax.sharding.NamedSharding`) shards the output; by
    default, under a mesh with `Explicit` axes, the output keeps ``x``'s batch and spatial shardings and
    takes ``weight``'s output-channel sharding (`convtranspose.conv_transpose`).
    """
    layer, parameters = _layers.describe(self, self.vocabulary, self.num_spatial_dims)
    weight_init, bias_init = parameters.weight_init, parameters.bias_init
    if parameters.logical_axes:
      weight_init = nn.with_logical_partitioning(weight_init, parameters.weight_axes)
      bias_init = bias_init and nn.with_logical_partitioning(bias_init, parameters.bias_axes)
    weight = self.param("weight", weight_init, parameters.weight_shape, parameters.dtype)
    bias = None if bias_init is None else self.param("bias", bias_init, parameters.bias_shape, parameters.dtype)
    return layer(x, weight, bias, output_size, out_sharding)


class _MindSporeNn(_ConvTranspose):
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
    algorithm: ``'auto'`` (default), ``'autotune'``, ``'dilated'``, ``'phase'`` or ``'hybrid'``; see
      `convtranspose.conv_transpose`.
    logical_axes: create ``weight`` and ``bias`` as `flax.linen.LogicallyPartitioned` values with the logical
      axis names of `convtranspose.sharding` (NNX: as the Variables' ``out_sharding``), for sharding with a
      `jax.sharding.Mesh`. Default False (plain arrays, as MindSpore's parameters).
    padding_mode: ``'zeros'`` (default), ``'circular'``, ``'reflect'`` or ``'replicate'``: the layer is the
      adjoint of the forward convolution that pads with ``jnp.pad`` in that mode; see
      `convtranspose.conv_transpose`.
    preferred_element_type: the output's dtype, and at least the accumulation's, as Flax NNX's layers take it
      (e.g. float32 with bfloat16 operands); None (default) is the computation dtype. See
      `convtranspose.conv_transpose`.

  Every argument is checked at construction, raising MindSpore's exception types. The input may lack the
  batch axis (one unbatched example); the output then lacks it too.
  """

  vocabulary: ClassVar[str] = "nn"

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


class _BiasThenOutputPadding(_MindSporeNn):
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
  preferred_element_type: Any = None


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

  __doc__ += _MindSporeNn.__doc__.split("\n", 1)[1]  # the shared attribute list

  data_format: str | None = "NCL"

  num_spatial_dims: ClassVar[int] = 1


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

  __doc__ += _MindSporeNn.__doc__.split("\n", 1)[1]  # the shared attribute list

  data_format: str | None = "NCHW"

  num_spatial_dims: ClassVar[int] = 2


class Conv3dTranspose(_MindSporeNn):
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

  __doc__ += _MindSporeNn.__doc__.split("\n", 1)[1]  # the shared attribute list

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
  preferred_element_type: Any = None

  num_spatial_dims: ClassVar[int] = 3


class _Mint(_ConvTranspose):
  """A MindSpore ``mint.nn.ConvTranspose{n}d`` (PyTorch's ``nn.ConvTranspose{n}d``) layer as a Flax module.

  Attributes:
    in_channels: ``C_in``.
    out_channels: ``C_out``.
    kernel_size: int, or tuple or list of ``n`` ints.
    stride: int, or tuple or list of ``n`` ints. Default 1.
    padding: int, or tuple or list of ``n`` ints: the forward convolution's padding on both sides of each
      dimension, so ``dilation * (kernel_size - 1) - padding`` zeros border the dilated input. Default 0.
    output_padding: int, or tuple or list of ``n`` ints in ``[0, max(stride, dilation))``: rows added at the
      high end of each dimension, computed by the convolution. Default 0.
    groups: number of channel groups; must divide both channel counts. Default 1.
    bias: whether to add a ``bias`` of shape ``(C_out,)``. Default True.
    dilation: int, or tuple or list of ``n`` ints. Default 1.
    padding_mode: ``'zeros'`` (default; the only mode MindSpore's mint takes), ``'circular'``, ``'reflect'`` or
      ``'replicate'`` (as PyTorch's ``nn.Conv{n}d``): the layer is the adjoint of the forward convolution that
      pads in that mode; see `convtranspose.conv_transpose`.
    dtype: the parameters' dtype, MindSpore's (and PyTorch's) meaning; None is float32. This is Flax's
      ``param_dtype``; Flax's ``dtype`` (the computation's) is ``compute_dtype`` here.
    data_format: keyword-only. Channels-first (None, the default, or ``'NCL'``, ``'NCHW'``, ``'NCDHW'``) or
      channels-last (``'NLC'``, ``'NHWC'``, ``'NDHWC'``); the weight's layout never changes.
    compute_dtype: keyword-only. The computation dtype; None (default) promotes the input and the
      parameters, as Flax's layers do (e.g. ``jnp.bfloat16`` with float32 parameters: mixed precision).
    precision: keyword-only. Passed to `jax.lax.conv_general_dilated`.
    algorithm: keyword-only. ``'auto'`` (default), ``'autotune'``, ``'dilated'``, ``'phase'`` or ``'hybrid'``; see
      `convtranspose.conv_transpose`.
    logical_axes: keyword-only. Name the parameters' axes for sharding, as `convtranspose.sharding` says.
    weight_init: keyword-only. Initializer of ``weight`` ``(C_in, C_out // groups, *kernel_size)``, any kind
      `convtranspose.initializers.resolve` takes; None (default) draws mint's (and PyTorch's)
      ``U(-sqrt(k), sqrt(k))``, ``k = groups / (C_out * prod(kernel_size))``.
    bias_init: keyword-only. Initializer of ``bias``; None (default) draws from the same ``U(-sqrt(k), sqrt(k))``.
    preferred_element_type: keyword-only. The output's dtype, and at least the accumulation's, as Flax NNX's
      layers take it; None (default) is the computation dtype. See `convtranspose.conv_transpose`.

  Every argument is checked at construction, raising the exception types MindSpore's mint raises (mint
  accepts some invalid values, a negative ``padding`` or an ``output_padding`` out of range, at construction and
  fails when called; these raise ValueError here). The input may lack the batch axis (one unbatched example);
  the output then lacks it too.
  """

  vocabulary: ClassVar[str] = "mint"

  in_channels: int
  out_channels: int
  kernel_size: IntOrSequence
  stride: IntOrSequence = 1
  padding: IntOrSequence = 0
  output_padding: IntOrSequence = 0
  groups: int = 1
  bias: bool = True
  dilation: IntOrSequence = 1
  padding_mode: str = "zeros"
  dtype: Any = None
  _: dataclasses.KW_ONLY
  data_format: str | None = None
  compute_dtype: Any = None
  precision: lax.PrecisionLike = None
  algorithm: str = "auto"
  logical_axes: bool = False
  weight_init: initializers.InitLike | None = None
  bias_init: initializers.InitLike | None = None
  preferred_element_type: Any = None


class ConvTranspose1d(_Mint):
  """PyTorch's ``nn.ConvTranspose1d`` in mint's vocabulary (MindSpore 2.10 has only the 2-D mint layer): input
  ``(N, C_in, L)``, ``weight`` ``(C_in, C_out // groups, k)``, PyTorch's shape (`Conv1dTranspose` stores
  MindSpore's legacy unit height instead).

  Example usage::

    >>> import jax, jax.numpy as jnp
    >>> import convtranspose as ct
    >>> net = ct.ConvTranspose1d(16, 8, 4, stride=2, padding=1)
    >>> x = jnp.ones((1, 16, 100))
    >>> variables = net.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'bias': (8,), 'weight': (16, 8, 4)}}
    >>> net.apply(variables, x).shape
    (1, 8, 200)
  """

  __doc__ += _Mint.__doc__.split("\n", 1)[1]

  num_spatial_dims: ClassVar[int] = 1


class ConvTranspose2d(_Mint):
  """MindSpore's ``mint.nn.ConvTranspose2d`` (PyTorch's ``nn.ConvTranspose2d``): input ``(N, C_in, H, W)``,
  ``weight`` ``(C_in, C_out // groups, kH, kW)``.

  Example usage::

    >>> import jax, jax.numpy as jnp
    >>> import convtranspose as ct
    >>> net = ct.ConvTranspose2d(16, 33, (3, 5), stride=(2, 1), padding=(4, 2))
    >>> x = jnp.ones((20, 16, 50, 100))
    >>> variables = net.init(jax.random.key(0), x)
    >>> jax.tree.map(jnp.shape, variables)
    {'params': {'bias': (33,), 'weight': (16, 33, 3, 5)}}
    >>> net.apply(variables, x).shape
    (20, 33, 93, 100)
    >>> up = ct.ConvTranspose2d(16, 16, 3, stride=2, padding=1)  # 6 -> 11 or 12: output_size picks
    >>> h = jnp.ones((1, 16, 6, 6))
    >>> up.apply(up.init(jax.random.key(0), h), h, output_size=(1, 16, 12, 12)).shape
    (1, 16, 12, 12)
  """

  __doc__ += _Mint.__doc__.split("\n", 1)[1]

  num_spatial_dims: ClassVar[int] = 2


class ConvTranspose3d(_Mint):
  """PyTorch's ``nn.ConvTranspose3d`` in mint's vocabulary (MindSpore 2.10 has only the 2-D mint layer): input
  ``(N, C_in, D, H, W)``, ``weight`` ``(C_in, C_out // groups, kD, kH, kW)``.

  Example usage::

    >>> import jax, jax.numpy as jnp
    >>> import convtranspose as ct
    >>> net = ct.ConvTranspose3d(4, 2, 3, stride=2, padding=1, output_padding=1, bias=False)
    >>> x = jnp.ones((1, 4, 8, 8, 8))
    >>> variables = net.init(jax.random.key(0), x)
    >>> net.apply(variables, x).shape
    (1, 2, 16, 16, 16)
  """

  __doc__ += _Mint.__doc__.split("\n", 1)[1]

  num_spatial_dims: ClassVar[int] = 3
