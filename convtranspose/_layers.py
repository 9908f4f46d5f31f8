"""What a layer is, for both frameworks: each vocabulary's arguments read once into a `Layer` and its
`Parameters`.

The Flax linen modules (`convtranspose.modules`) and the Flax NNX modules (`convtranspose.nnx`) only hold
arguments and parameters. Both read them here:

* `layer` turns the arguments into a `Layer`: what the layer computes (its `Geometry`, the weight's shape for
  the function, the computation dtype, precision and algorithm), and applies it;
* `describe` also turns them into `Parameters`: what the module creates (names, shapes, dtype, initializers,
  logical axis names).

Two vocabularies name the arguments, each with its own reader of them:

* ``'nn'``, MindSpore's ``nn.Conv{1,2,3}dTranspose``: ``pad_mode``, ``padding`` per side, ``group``,
  ``has_bias``, ``weight_init``/``bias_init`` (default ``'normal'``/``'zeros'``), ``dtype`` (computation) and
  ``param_dtype``; its 1-D layer stores MindSpore's unit height, ``(C_in, C_out // group, 1, k)``;
* ``'mint'``, MindSpore's ``mint.nn.ConvTranspose2d`` and PyTorch's ``ConvTranspose{1,2,3}d``: ``padding`` per
  dimension (both sides), ``groups``, ``bias`` (a bool, default True), ``dtype`` (the parameters', as in
  MindSpore), ``compute_dtype``; the weight and bias drawn from ``U(-sqrt(k), sqrt(k))``,
  ``k = groups / (C_out * prod(kernel_size))``; the 1-D weight is PyTorch's ``(C_in, C_out // groups, k)``.
"""

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax.linen.dtypes import promote_dtype
from jax import lax

from convtranspose import _arguments, initializers, sharding
from convtranspose.functional import OutSharding, _conv_transpose, computation_dtype

VOCABULARIES = ("nn", "mint")


@dataclasses.dataclass(frozen=True)
class Layer:
  """What a layer computes; hashable (NNX keeps what its modules hold outside arrays in its graph definition).

  Attributes:
    geometry: the canonical arguments of the transposed convolution.
    kernel_shape: the weight's shape for the function, ``(C_in, C_out // group, *kernel_size)``.
    dtype: the computation dtype; None promotes the input and the parameters.
    precision: passed to `jax.lax.conv_general_dilated`.
    algorithm: see `convtranspose.conv_transpose`.
    preferred_element_type: the output's dtype (see `convtranspose.conv_transpose`); None is the computation's.
  """

  geometry: _arguments.Geometry
  kernel_shape: tuple[int, ...]
  dtype: Any = None
  precision: lax.PrecisionLike = None
  algorithm: str = "auto"
  preferred_element_type: Any = None

  def __call__(self, x: jax.Array, weight: jax.Array, bias: jax.Array | None, output_size: Any = None,
               out_sharding: OutSharding = None) -> jax.Array:
    """The layer on ``x`` with the stored ``weight`` (any shape of ``kernel_shape``'s size: a 1-D layer's unit
    height is dropped) and ``bias`` (or None), cast once as Flax's layers cast."""
    weight = jnp.reshape(weight, self.kernel_shape)
    computation_dtype(x, weight, bias)  # bool and complex inputs raise before Flax's promotion casts them
    x, weight, bias = promote_dtype(x, weight, bias, dtype=self.dtype)
    return _conv_transpose(x, weight, bias, self.geometry, self.precision, self.algorithm, output_size,
                           out_sharding, self.preferred_element_type)


@dataclasses.dataclass(frozen=True)
class Parameters:
  """What a layer's module creates: ``weight`` and, unless ``bias_init`` is None, ``bias``.

  Attributes:
    weight_shape: the stored weight's shape (MindSpore's, which is also PyTorch's but for the legacy 1-D
      layer's unit height).
    bias_shape: ``(C_out,)``.
    dtype: the parameters' dtype.
    weight_init: ``init(key, shape, dtype)`` of ``weight``.
    bias_init: ``init(key, shape, dtype)`` of ``bias``; None without a bias.
    logical_axes: whether to name the parameters' axes for sharding (`convtranspose.sharding`).
  """

  weight_shape: tuple[int, ...]
  bias_shape: tuple[int, ...]
  dtype: Any
  weight_init: initializers.InitFn
  bias_init: initializers.InitFn | None
  logical_axes: bool = False

  @property
  def weight_axes(self) -> tuple[str | None, ...]:
    """The weight's logical axis names, ``('conv_in', 'conv_out', None, ...)`` (`convtranspose.sharding`)."""
    return sharding.weight_axes(len(self.weight_shape), out_per_group=self.weight_shape[1])

  bias_axes = sharding.BIAS_AXES


def _check_bool(arguments: Any, name: str) -> bool:
  value = getattr(arguments, name)
  if not isinstance(value, bool):
    raise TypeError(f"`{name}` must be a bool, but got {value!r} of type {type(value).__name__}.")
  return value


def _geometry_and_group(arguments: Any, vocabulary: str, n: int) -> tuple[_arguments.Geometry, int]:
  """The vocabulary's arguments as a `Geometry`, and the group count; validated (MindSpore's exceptions)."""
  a = arguments
  if vocabulary == "nn":
    _arguments.channels_and_group(a.in_channels, a.out_channels, a.group)
    return _arguments.geometry(n, a.kernel_size, a.stride, a.pad_mode, a.padding, a.dilation, a.group,
                               a.output_padding, a.data_format, a.padding_mode), a.group
  if vocabulary == "mint":
    _arguments.channels_and_group(a.in_channels, a.out_channels, a.groups, group_name="groups")
    return _arguments.mint_geometry(n, a.kernel_size, a.stride, a.padding, a.output_padding, a.groups,
                                    a.dilation, a.data_format, a.padding_mode), a.groups
  raise ValueError(f"`vocabulary` must be one of {list(VOCABULARIES)}, but got {vocabulary!r}.")


def layer(arguments: Any, vocabulary: str, n: int) -> Layer:
  """Reads a layer's arguments (the attributes of ``arguments``: a module holding them) into a `Layer`.

  Args:
    arguments: any object with the vocabulary's argument names as attributes.
    vocabulary: ``'nn'`` or ``'mint'`` (module docstring).
    n: the number of spatial dimensions.

  Raises:
    TypeError, ValueError: for an invalid argument, with MindSpore's exception types.
  """
  geometry, group = _geometry_and_group(arguments, vocabulary, n)
  _check_bool(arguments, "logical_axes")
  dtype_name = "dtype" if vocabulary == "nn" else "compute_dtype"
  dtype = _arguments.floating_dtype(getattr(arguments, dtype_name), dtype_name)
  kernel_shape = (arguments.in_channels, arguments.out_channels // group, *geometry.kernel_size)
  preferred = _arguments.floating_dtype(arguments.preferred_element_type, "preferred_element_type")
  return Layer(geometry, kernel_shape, dtype, arguments.precision, _arguments.checked_algorithm(arguments.algorithm),
               preferred)


def describe(arguments: Any, vocabulary: str, n: int) -> tuple[Layer, Parameters]:
  """Reads a layer's arguments (as `layer` does) into its `Layer` and the `Parameters` its module creates.

  The initializers are checked against the shapes here, so that a module fails at construction.
  """
  computed = layer(arguments, vocabulary, n)
  kernel_shape = computed.kernel_shape
  out_channels = arguments.out_channels
  if vocabulary == "nn":
    has_bias, dtype = _check_bool(arguments, "has_bias"), _arguments.floating_dtype(arguments.param_dtype,
                                                                                     "param_dtype")
    weight_shape = (*kernel_shape[:2], 1, *kernel_shape[2:]) if n == 1 else kernel_shape  # MindSpore's 1-D form
    weight_init = initializers.resolve(arguments.weight_init, "weight_init")
    bias_init = arguments.bias_init
  else:
    has_bias, dtype = _check_bool(arguments, "bias"), _arguments.floating_dtype(arguments.dtype, "dtype") or jnp.float32
    weight_shape = kernel_shape
    # U(-sqrt(k), sqrt(k)), k = groups / (C_out * prod(kernel)) = 1 / fan_in: MindSpore's HeUniform(sqrt(5)).
    bound = 1 / math.sqrt(math.prod(kernel_shape[1:]))
    weight_init = initializers.resolve(initializers.HeUniform(math.sqrt(5)) if arguments.weight_init is None
                                      else arguments.weight_init, "weight_init")
    bias_init = initializers.Uniform(bound) if arguments.bias_init is None else arguments.bias_init
  if isinstance(weight_init, initializers.FromArray) and weight_init.array.shape == kernel_shape:
    weight_init = initializers.FromArray(jnp.reshape(weight_init.array, weight_shape))  # a 1-D weight of either form
  initializers.check_shape(weight_init, weight_shape, "weight_init")
  if has_bias:  # as in MindSpore, bias_init is only read when there is a bias
    bias_init = initializers.resolve(bias_init, "bias_init")
    initializers.check_shape(bias_init, (out_channels,), "bias_init")
  return computed, Parameters(weight_shape, (out_channels,), dtype, weight_init, bias_init if has_bias else None,
                              arguments.logical_axes)
