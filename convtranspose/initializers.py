"""MindSpore's parameter initializers, as JAX initializers.

Every initializer here is a frozen dataclass called as ``init(key, shape, dtype)``, like the ones in
`jax.nn.initializers`, and carries MindSpore's name and defaults. `resolve` turns anything MindSpore's
``weight_init``/``bias_init`` accept into such a callable:

* a name, case-insensitive, MindSpore's registry: ``'Normal'``, ``'TruncatedNormal'``, ``'Uniform'``,
  ``'HeUniform'`` (``'he_uniform'``), ``'HeNormal'`` (``'he_normal'``), ``'XavierUniform'``
  (``'xavier_uniform'``), ``'XavierNormal'`` (``'xavier_normal'``), ``'Orthogonal'``, ``'Dirac'``,
  ``'Identity'``, ``'VarianceScaling'``, ``'One'`` (``'ones'``), ``'Zero'`` (``'zeros'``); ``'Sparse'`` is
  registered but needs its ``sparsity``, and `Constant` has no name (it needs its value), as in MindSpore;
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

  def shape_error(self, shape: Shape) -> str | None:
    """Why this initializer cannot fill ``shape`` (MindSpore raises ValueError), or None if it can.

    Layers call it through `check_shape` at construction, before any parameter is drawn.
    """
    del shape
    return None

  def _checked(self, shape: Shape) -> tuple[int, ...]:
    error = self.shape_error(shape)
    if error:
      raise ValueError(error)
    return tuple(shape)


def _check_fan_mode(mode: str, allowed: tuple[str, ...]) -> None:
  if mode not in allowed:
    raise ValueError(f"`mode` must be one of {list(allowed)}, but got {mode!r}.")


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
class _He(Initializer):
  """Kaiming He's scaling: ``std = gain(nonlinearity, negative_slope) / sqrt(fan)``, ``fan`` being
  ``fan_in`` or ``fan_out`` (`mode`); with the defaults ``std = sqrt(2 / fan_in)``."""

  negative_slope: float = 0
  mode: str = "fan_in"
  nonlinearity: str = "leaky_relu"

  def __post_init__(self):
    _check_fan_mode(self.mode, ("fan_in", "fan_out"))
    gain(self.nonlinearity, self.negative_slope)  # validates the nonlinearity

  def std(self, shape: Shape) -> float:
    fan_in, fan_out = fans(shape)
    return gain(self.nonlinearity, self.negative_slope) / math.sqrt(fan_in if self.mode == "fan_in" else fan_out)


@dataclasses.dataclass(frozen=True)
class HeUniform(_He):
  """Kaiming uniform: ``U(-bound, bound)``, ``bound = sqrt(3) * std``, ``std`` as in `HeNormal`. With the
  defaults ``bound = sqrt(6 / fan_in)``."""

  def __call__(self, key, shape, dtype=jnp.float32):
    bound = math.sqrt(3.0) * self.std(shape)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


@dataclasses.dataclass(frozen=True)
class HeNormal(_He):
  """Kaiming normal: ``N(0, std**2)``, ``std = gain(nonlinearity, negative_slope) / sqrt(fan)``, ``fan``
  being ``fan_in`` or ``fan_out`` (`mode`). With the defaults ``std = sqrt(2 / fan_in)``."""

  def __call__(self, key, shape, dtype=jnp.float32):
    return self.std(shape) * jax.random.normal(key, shape, dtype)


@dataclasses.dataclass(frozen=True)
class _Xavier(Initializer):
  """Glorot's scaling: ``std = gain * sqrt(2 / (fan_in + fan_out))``."""

  gain: float = 1

  def std(self, shape: Shape) -> float:
    fan_in, fan_out = fans(shape)
    return self.gain * math.sqrt(2.0 / (fan_in + fan_out))


@dataclasses.dataclass(frozen=True)
class XavierUniform(_Xavier):
  """Glorot uniform: ``U(-bound, bound)``, ``bound = gain * sqrt(6 / (fan_in + fan_out))``."""

  def __call__(self, key, shape, dtype=jnp.float32):
    bound = math.sqrt(3.0) * self.std(shape)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


@dataclasses.dataclass(frozen=True)
class XavierNormal(_Xavier):
  """Glorot normal: ``N(0, std**2)``, ``std = gain * sqrt(2 / (fan_in + fan_out))``."""

  def __call__(self, key, shape, dtype=jnp.float32):
    return self.std(shape) * jax.random.normal(key, shape, dtype)


@dataclasses.dataclass(frozen=True)
class VarianceScaling(Initializer):
  """Variance scaling with ``n = max(1, fan)``, ``fan`` being ``fan_in``, ``fan_out`` or their mean
  (``mode='fan_avg'``):

  * ``distribution='untruncated_normal'``: ``N(0, scale / n)``;
  * ``distribution='uniform'``: ``U(-limit, limit)``, ``limit = sqrt(3 * scale / n)``;
  * ``distribution='truncated_normal'`` (the default): MindSpore 2.10 draws this one from the *uniform*
    distribution above too (its ``_initialize`` tests for ``'truncated_norm'``, a value its constructor
    rejects), and so do we, so that a ported model starts from the distribution it was trained from. For
    the truncated normal the name promises, use
    ``jax.nn.initializers.variance_scaling(scale, mode, 'truncated_normal')``.
  """

  scale: float = 1.0
  mode: str = "fan_in"
  distribution: str = "truncated_normal"

  def __post_init__(self):
    if not self.scale > 0:
      raise ValueError(f"`scale` must be > 0, but got {self.scale!r}.")
    _check_fan_mode(self.mode, ("fan_in", "fan_out", "fan_avg"))
    distributions = ("uniform", "truncated_normal", "untruncated_normal")
    if self.distribution not in distributions:
      raise ValueError(f"`distribution` must be one of {list(distributions)}, but got {self.distribution!r}.")

  def __call__(self, key, shape, dtype=jnp.float32):
    fan_in, fan_out = fans(shape)
    fan = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2}[self.mode]
    variance = self.scale / max(1.0, fan)
    if self.distribution == "untruncated_normal":
      return math.sqrt(variance) * jax.random.normal(key, shape, dtype)
    limit = math.sqrt(3.0 * variance)
    return jax.random.uniform(key, shape, dtype, -limit, limit)


@dataclasses.dataclass(frozen=True)
class Orthogonal(Initializer):
  """A (semi-)orthogonal matrix times ``gain``: the shape is seen as ``(shape[0], prod(shape[1:]))``, whose
  rows (or columns, whichever are fewer) are orthonormal; from the QR decomposition of a standard normal
  matrix with the signs of ``diag(R)`` folded into ``Q`` (MindSpore's and PyTorch's recipe)."""

  gain: float = 1.0

  def shape_error(self, shape):
    if len(shape) < 2:
      return f"Orthogonal needs a shape of at least 2 dimensions, but got {tuple(shape)}."
    return None

  def __call__(self, key, shape, dtype=jnp.float32):
    shape = self._checked(shape)
    rows = shape[0]
    cols = math.prod(shape) // rows
    matrix = jax.random.normal(key, (max(rows, cols), min(rows, cols)), jnp.float32)
    q, r = jnp.linalg.qr(matrix)
    q = q * jnp.sign(jnp.diagonal(r))[None, :]  # column j of Q times the sign of R[j, j]
    if rows < cols:
      q = q.T
    return (self.gain * q).reshape(shape).astype(dtype)


@dataclasses.dataclass(frozen=True)
class Dirac(Initializer):
  """The identity convolution: ``weight[g * m + i, i, *centre] = 1`` for ``i < min(m, shape[1])`` in each
  of the ``groups`` blocks of ``m = shape[0] // groups`` rows, ``centre = kernel_size // 2``, zeros
  elsewhere. For a transposed convolution with ``C_in == C_out``, stride 1, ``pad_mode='same'`` and an odd
  kernel the layer then returns its input (an even kernel shifts it by one position)."""

  groups: int = 1

  def shape_error(self, shape):
    if len(shape) not in (3, 4, 5):
      return f"Dirac fills a convolution weight of 3, 4 or 5 dimensions, but got shape {tuple(shape)}."
    if shape[0] % self.groups:
      return f"Dirac needs shape[0] (={shape[0]}) divisible by `groups` (={self.groups})."
    return None

  def __call__(self, key, shape, dtype=jnp.float32):
    del key
    shape = self._checked(shape)
    rows = shape[0] // self.groups
    diagonal = np.arange(min(rows, shape[1]))
    weight = np.zeros(shape)
    for group in range(self.groups):
      weight[(group * rows + diagonal, diagonal, *(k // 2 for k in shape[2:]))] = 1
    return jnp.asarray(weight, dtype)


@dataclasses.dataclass(frozen=True)
class Identity(Initializer):
  """The identity matrix ``eye(shape[0], shape[1])``; 2-D shapes only (MindSpore raises ValueError)."""

  def shape_error(self, shape):
    if len(shape) != 2:
      return f"Identity fills a 2-D shape only, but got {tuple(shape)}."
    return None

  def __call__(self, key, shape, dtype=jnp.float32):
    del key
    rows, cols = self._checked(shape)
    return jnp.eye(rows, cols, dtype=dtype)


@dataclasses.dataclass(frozen=True)
class Sparse(Initializer):
  """``N(0, sigma**2)`` with exactly ``ceil(sparsity * rows)`` zeros in each column, at random rows; 2-D
  shapes only (MindSpore raises ValueError otherwise)."""

  sparsity: float
  sigma: float = 0.01

  def shape_error(self, shape):
    if len(shape) != 2:
      return f"Sparse fills a 2-D shape only, but got {tuple(shape)}."
    return None

  def __call__(self, key, shape, dtype=jnp.float32):
    rows, cols = self._checked(shape)
    values_key, rows_key = jax.random.split(key)
    values = self.sigma * jax.random.normal(values_key, (rows, cols), dtype)
    # Each column's rows in a random order; its first ceil(sparsity * rows) in that order become zeros.
    rank = jnp.argsort(jnp.argsort(jax.random.uniform(rows_key, (rows, cols)), axis=0), axis=0)
    return jnp.where(rank < math.ceil(self.sparsity * rows), jnp.zeros((), dtype), values)


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

  def shape_error(self, shape):
    if tuple(np.shape(self.array)) != tuple(shape):
      return f"an array of shape {tuple(np.shape(self.array))}, but the parameter has shape {tuple(shape)}."
    return None

  def __call__(self, key, shape, dtype=jnp.float32):
    del key
    self._checked(shape)
    return jnp.asarray(self.array, dtype)


# MindSpore's registry: the lowercased class name and its aliases.
_REGISTRY: dict[str, type[Initializer]] = {
    "normal": Normal,
    "truncatednormal": TruncatedNormal,
    "uniform": Uniform,
    "heuniform": HeUniform,
    "he_uniform": HeUniform,
    "henormal": HeNormal,
    "he_normal": HeNormal,
    "xavieruniform": XavierUniform,
    "xavier_uniform": XavierUniform,
    "xaviernormal": XavierNormal,
    "xavier_normal": XavierNormal,
    "variancescaling": VarianceScaling,
    "orthogonal": Orthogonal,
    "dirac": Dirac,
    "identity": Identity,
    "sparse": Sparse,
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
    if init.lower() not in _REGISTRY:
      raise ValueError(f"`{name}` {init!r} is not a known initializer; valid names (case-insensitive) are "
                       f"{', '.join(names())}.")
    cls = _REGISTRY[init.lower()]
    required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
    if required:  # Sparse: MindSpore fails the same way, a TypeError for the missing argument
      arguments = ", ".join(f"{r}=..." for r in required)
      raise TypeError(f"`{name}` {init!r} needs its `{'`, `'.join(required)}`: pass {cls.__name__}({arguments}) "
                      "instead of the name.")
    return cls()
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
  """Raises ValueError if ``init`` is an `Initializer` that cannot fill ``shape`` (an array of another
  shape, `Identity` or `Sparse` for a convolution weight, ...); other callables are not checked."""
  error = init.shape_error(shape) if isinstance(init, Initializer) else None
  if error:
    raise ValueError(f"`{name}`: {error}")
