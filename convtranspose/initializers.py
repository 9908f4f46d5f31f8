"""MindSpore's parameter initializers, as JAX initializers.

Every initializer here is a frozen dataclass called as ``init(key, shape, dtype)``, like the ones in
`jax.nn.initializers`, and carries MindSpore's name and defaults. `resolve` turns anything MindSpore's
``weight_init``/``bias_init`` accept into such a callable:

* a name, case-insensitive: ``'Normal'``, ``'TruncatedNormal'``, ``'Uniform'``, ``'HeUniform'``
  (``'he_uniform'``), ``'XavierUniform'`` (``'xavier_uniform'``), ``'One'`` (``'ones'``), ``'Zero'``
  (``'zeros'``);
* an initializer object with parameters, e.g. ``Normal(sigma=0.02)``;
* a number: a constant fill (`Constant`);
* an array: used as given, after its shape is checked;
* any JAX-style ``init(key, shape, dtype)`` callable.

Fan-in and fan-out follow MindSpore's rule on the parameter's own shape: for ``shape = (a, b, *kernel)``,
``fan_in = b * prod(kernel)`` and ``fan_out = a * prod(kernel)``. For a transposed convolution's weight
``(C_in, C_out // group, *kernel)`` that makes ``fan_in`` count *output* channels, exactly as MindSpore does.

>>> import jax
>>> init = resolve('HeUniform')
>>> init(jax.random.key(0), (3, 64, 4, 4)).shape
(3, 64, 4, 4)
>>> resolve('normal')
Normal(sigma=0.01, mean=0.0)
"""

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Shape = Sequence[int]
DType = Any
InitFn = Callable[[jax.Array, Shape, DType], jax.Array]
InitLike = str | numbers.Number | np.ndarray | jax.Array | InitFn

_LINEAR_NONLINEARITIES = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
                          "conv_transpose3d", "sigmoid")


def fans(shape: Shape) -> tuple[int, int]:
  """MindSpore's ``(fan_in, fan_out)``: ``(shape[1], shape[0])`` times the product of ``shape[2:]``.

  Raises:
    ValueError: for fewer than two dimensions, as MindSpore does.
  """
  if len(shape) < 2:
    raise ValueError(f"fan_in and fan_out need a shape of at least 2 dimensions, but got {tuple(shape)}.")
  receptive_field = math.prod(shape[2:])
  return shape[1] * receptive_field, shape[0] * receptive_field


def gain(nonlinearity: str, negative_slope: float | None = None) -> float:
  """MindSpore's (and PyTorch's) recommended gain: 1 for linear layers and sigmoid, 5/3 for tanh,
  ``sqrt(2)`` for relu and ``sqrt(2 / (1 + negative_slope**2))`` for leaky_relu (slope 0.01 if None)."""
  if nonlinearity in _LINEAR_NONLINEARITIES:
    return 1.0
  if nonlinearity == "tanh":
    return 5.0 / 3
  if nonlinearity == "relu":
    return math.sqrt(2.0)
  if nonlinearity == "leaky_relu":
    slope = 0.01 if negative_slope is None else negative_slope
    return math.sqrt(2.0 / (1 + slope**2))
  raise ValueError(f"`nonlinearity` must be one of {list(_LINEAR_NONLINEARITIES)}, 'tanh', 'relu' or "
                   f"'leaky_relu', but got {nonlinearity!r}.")


@dataclasses.dataclass(frozen=True)
class Initializer:
  """Base of MindSpore's initializers: ``init(key, shape, dtype=float32) -> Array``."""

  def __call__(self, key: jax.Array, shape: Shape, dtype: DType = jnp.float32) -> jax.Array:
    raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Normal(Initializer):
  """``N(mean, sigma**2)``."""

  sigma: float = 0.01
  mean: float = 0.0

  def __call__(self, key, shape, dtype=jnp.float32):
    return self.mean + self.sigma * jax.random.normal(key, shape, dtype)


@dataclasses.dataclass(frozen=True)
class TruncatedNormal(Initializer):
  """``N(mean, sigma**2)`` restricted to ``[a, b]``; ``a`` and ``b`` are absolute bounds on the value,
  not multiples of ``sigma`` (MindSpore 2.x; with the defaults the bounds are 200 sigma away)."""

  sigma: float = 0.01
  mean: float = 0.0
  a: float = -2.0
  b: float = 2.0

  def __call__(self, key, shape, dtype=jnp.float32):
    lower, upper = (self.a - self.mean) / self.sigma, (self.b - self.mean) / self.sigma
    standard = jax.random.truncated_normal(key, lower, upper, shape, jnp.float32)
    return jnp.clip(self.mean + self.sigma * standard, self.a, self.b).astype(dtype)


@dataclasses.dataclass(frozen=True)
class Uniform(Initializer):
  """``U(-scale, scale)``."""

  scale: float = 0.07

  def __call__(self, key, shape, dtype=jnp.float32):
    return jax.random.uniform(key, shape, dtype, -self.scale, self.scale)


@dataclasses.dataclass(frozen=True)
class HeUniform(Initializer):
  """Kaiming uniform: ``U(-bound, bound)``, ``bound = gain(nonlinearity, negative_slope) * sqrt(3 / fan)``,
  ``fan`` being ``fan_in`` or ``fan_out`` (`mode`). With the defaults ``bound = sqrt(6 / fan_in)``."""

  negative_slope: float = 0
  mode: str = "fan_in"
  nonlinearity: str = "leaky_relu"

  def __post_init__(self):
    if self.mode not in ("fan_in", "fan_out"):
      raise ValueError(f"`mode` must be 'fan_in' or 'fan_out', but got {self.mode!r}.")
    gain(self.nonlinearity, self.negative_slope)  # validates the nonlinearity

  def __call__(self, key, shape, dtype=jnp.float32):
    fan_in, fan_out = fans(shape)
    fan = fan_in if self.mode == "fan_in" else fan_out
    bound = gain(self.nonlinearity, self.negative_slope) * math.sqrt(3.0 / fan)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


@dataclasses.dataclass(frozen=True)
class XavierUniform(Initializer):
  """Glorot uniform: ``U(-bound, bound)``, ``bound = gain * sqrt(6 / (fan_in + fan_out))``."""

  gain: float = 1

  def __call__(self, key, shape, dtype=jnp.float32):
    fan_in, fan_out = fans(shape)
    bound = self.gain * math.sqrt(6.0 / (fan_in + fan_out))
    return jax.random.uniform(key, shape, dtype, -bound, bound)


@dataclasses.dataclass(frozen=True)
class Constant(Initializer):
  """Every element equal to ``value``."""

  value: float

  def __call__(self, key, shape, dtype=jnp.float32):
    del key
    return jnp.full(shape, self.value, dtype)


@dataclasses.dataclass(frozen=True)
class One(Initializer):
  """Ones."""

  def __call__(self, key, shape, dtype=jnp.float32):
    del key
    return jnp.ones(shape, dtype)


@dataclasses.dataclass(frozen=True)
class Zero(Initializer):
  """Zeros."""

  def __call__(self, key, shape, dtype=jnp.float32):
    del key
    return jnp.zeros(shape, dtype)


@dataclasses.dataclass(frozen=True)
class FromArray(Initializer):
  """A given array (MindSpore's Tensor ``weight_init``), cast to the parameter dtype; its shape is checked."""

  array: Any = dataclasses.field(compare=False)

  def __call__(self, key, shape, dtype=jnp.float32):
    del key
    check_shape(self, shape)
    return jnp.asarray(self.array, dtype)


# MindSpore's registry: the lowercased class name and its aliases.
_REGISTRY: dict[str, type[Initializer]] = {
    "normal": Normal,
    "truncatednormal": TruncatedNormal,
    "uniform": Uniform,
    "heuniform": HeUniform,
    "he_uniform": HeUniform,
    "xavieruniform": XavierUniform,
    "xavier_uniform": XavierUniform,
    "one": One,
    "ones": One,
    "zero": Zero,
    "zeros": Zero,
}


def names() -> tuple[str, ...]:
  """The names `resolve` accepts (case-insensitive)."""
  return tuple(_REGISTRY)


def resolve(init: InitLike, name: str = "init") -> InitFn:
  """Turns what MindSpore accepts as ``weight_init``/``bias_init`` into ``init(key, shape, dtype)``.

  Args:
    init: a registered name (case-insensitive), an `Initializer`, a number, an array, or a callable
      ``init(key, shape, dtype)``.
    name: the argument's name, for error messages.

  Returns:
    A JAX-style initializer.

  Raises:
    ValueError: for an unknown name (the message lists the valid ones).
    TypeError: for anything else (a bool included: it is not silently a number).
  """
  if isinstance(init, str):
    try:
      return _REGISTRY[init.lower()]()
    except KeyError:
      raise ValueError(f"`{name}` {init!r} is not a known initializer; valid names (case-insensitive) are "
                       f"{', '.join(names())}.") from None
  if isinstance(init, Initializer):
    return init
  if isinstance(init, bool):
    raise TypeError(f"`{name}` must be an initializer name, an Initializer, a number, an array or a callable "
                    f"init(key, shape, dtype), but got the bool {init!r}.")
  if isinstance(init, numbers.Number):
    return Constant(init)
  if isinstance(init, (np.ndarray, jax.Array)):
    return FromArray(init)
  if callable(init):
    return init
  raise TypeError(f"`{name}` must be an initializer name, an Initializer, a number, an array or a callable "
                  f"init(key, shape, dtype), but got {init!r} of type {type(init).__name__}.")


def check_shape(init: InitFn, shape: Shape, name: str = "init") -> None:
  """Raises ValueError if ``init`` is a `FromArray` whose array is not of ``shape``."""
  if isinstance(init, FromArray) and tuple(np.shape(init.array)) != tuple(shape):
    raise ValueError(f"`{name}` is an array of shape {tuple(np.shape(init.array))}, but the parameter has shape "
                     f"{tuple(shape)}.")
