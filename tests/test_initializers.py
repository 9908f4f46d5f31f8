"""Initializers: MindSpore's names and defaults, checked statistically (moments, bounds,
sparsity) and structurally (orthogonality; Dirac and Identity against MindSpore's own arrays)."""

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convtranspose as ct
from conftest import FIXTURES
from convtranspose import initializers as init

SHAPE = (64, 32, 4, 4)  # a transposed-convolution weight (C_in, C_out // group, kH, kW): 32,768 samples
N = math.prod(SHAPE)
FAN_IN, FAN_OUT = 32 * 16, 64 * 16  # MindSpore's rule: shape[1] * prod(kernel), shape[0] * prod(kernel)


def sample(initializer, shape=SHAPE, dtype=jnp.float32, seed=0):
  return np.asarray(initializer(jax.random.key(seed), shape, dtype), np.float64)


def assert_moments(values, mean, std):
  """Sample mean within 5 standard errors; sample std within 5% (both far beyond sampling noise at n=32k)."""
  assert abs(values.mean() - mean) < 5 * std / math.sqrt(values.size), (values.mean(), mean)
  assert abs(values.std() / std - 1) < 0.05, (values.std(), std)


def assert_uniform(values, bound):
  assert values.min() >= -bound and values.max() <= bound
  assert values.min() < -0.99 * bound and values.max() > 0.99 * bound  # fills the interval
  assert_moments(values, 0.0, bound / math.sqrt(3))


@pytest.mark.parametrize(
    "name, expected",
    [
        ("Normal", init.Normal(sigma=0.01, mean=0.0)),
        ("normal", init.Normal()),
        ("TruncatedNormal", init.TruncatedNormal(sigma=0.01, mean=0.0, a=-2.0, b=2.0)),
        ("truncatednormal", init.TruncatedNormal()),
        ("Uniform", init.Uniform(scale=0.07)),
        ("uniform", init.Uniform()),
        ("HeUniform", init.HeUniform(negative_slope=0, mode="fan_in", nonlinearity="leaky_relu")),
        ("he_uniform", init.HeUniform()),
        ("heuniform", init.HeUniform()),
        ("HeNormal", init.HeNormal(negative_slope=0, mode="fan_in", nonlinearity="leaky_relu")),
        ("he_normal", init.HeNormal()),
        ("XavierNormal", init.XavierNormal(gain=1)),
        ("xavier_normal", init.XavierNormal()),
        ("VarianceScaling", init.VarianceScaling(scale=1.0, mode="fan_in", distribution="truncated_normal")),
        ("varianceScaling", init.VarianceScaling()),  # MindSpore's own docstring spells it so
        ("Orthogonal", init.Orthogonal(gain=1.0)),
        ("Dirac", init.Dirac(groups=1)),
        ("identity", init.Identity()),
        ("XavierUniform", init.XavierUniform(gain=1)),
        ("xavier_uniform", init.XavierUniform()),
        ("xavieruniform", init.XavierUniform()),
        ("One", init.One()),
        ("ones", init.One()),
        ("one", init.One()),
        ("Zero", init.Zero()),
        ("zeros", init.Zero()),
        ("zero", init.Zero()),
        ("ZEROS", init.Zero()),
    ],
)
def test_names_and_defaults(name, expected):
  assert init.resolve(name) == expected


def test_unknown_name_lists_the_valid_ones():
  with pytest.raises(ValueError, match=r"`weight_init` 'gaussian' is not a known initializer; valid names "
                                       r"\(case-insensitive\) are normal, truncatednormal, uniform"):
    init.resolve("gaussian", "weight_init")


def test_fans_follow_mindspore():
  assert init.fans(SHAPE) == (FAN_IN, FAN_OUT)
  assert init.fans((5, 7)) == (7, 5)
  with pytest.raises(ValueError, match="at least 2 dimensions"):
    init.fans((5,))


def test_normal():
  assert_moments(sample(init.resolve("normal")), 0.0, 0.01)
  assert_moments(sample(init.Normal(sigma=0.02, mean=1.0)), 1.0, 0.02)


def truncated_moments(mean, sigma, a, b):
  """Mean and std of N(mean, sigma^2) truncated to [a, b] (absolute bounds)."""
  alpha, beta = (a - mean) / sigma, (b - mean) / sigma

  def pdf(t):
    return math.exp(-t * t / 2) / math.sqrt(2 * math.pi)

  def cdf(t):
    return 0.5 * (1 + math.erf(t / math.sqrt(2)))

  z = cdf(beta) - cdf(alpha)
  m = (pdf(alpha) - pdf(beta)) / z
  var = 1 + (alpha * pdf(alpha) - beta * pdf(beta)) / z - m * m
  return mean + sigma * m, sigma * math.sqrt(var)


@pytest.mark.parametrize("params", [dict(), dict(sigma=1.0, mean=1.0), dict(sigma=0.5, a=-0.5, b=1.0)])
def test_truncated_normal_bounds_are_absolute(params):
  # MindSpore 2.10 measured: sigma=1, mean=1 on [-2, 2] has mean 0.716 and std 0.785; bounds are values.
  initializer = init.TruncatedNormal(**params)
  values = sample(initializer)
  assert values.min() >= initializer.a and values.max() <= initializer.b
  assert_moments(values, *truncated_moments(initializer.mean, initializer.sigma, initializer.a, initializer.b))


def test_uniform():
  assert_uniform(sample(init.resolve("Uniform")), 0.07)
  assert_uniform(sample(init.Uniform(scale=0.5)), 0.5)


@pytest.mark.parametrize(
    "initializer, bound",
    [
        (init.HeUniform(), math.sqrt(6 / FAN_IN)),  # gain sqrt(2) for leaky_relu with slope 0
        (init.HeUniform(mode="fan_out"), math.sqrt(6 / FAN_OUT)),
        (init.HeUniform(negative_slope=1.0), math.sqrt(3 / FAN_IN)),  # gain sqrt(2 / (1 + 1))
        (init.HeUniform(nonlinearity="tanh"), 5 / 3 * math.sqrt(3 / FAN_IN)),
        (init.XavierUniform(), math.sqrt(6 / (FAN_IN + FAN_OUT))),
        (init.XavierUniform(gain=2.0), 2 * math.sqrt(6 / (FAN_IN + FAN_OUT))),
    ],
)
def test_fan_scaled_uniforms(initializer, bound):
  assert_uniform(sample(initializer), bound)


def test_he_uniform_rejects_bad_mode_and_nonlinearity():
  with pytest.raises(ValueError, match=r"`mode` must be one of \['fan_in', 'fan_out'\]"):
    init.HeUniform(mode="fan_avg")
  with pytest.raises(ValueError, match="`nonlinearity` must be one of"):
    init.HeUniform(nonlinearity="gelu")


def test_constants_numbers_arrays_and_callables():
  np.testing.assert_array_equal(sample(init.resolve("ones"), (2, 3)), np.ones((2, 3)))
  np.testing.assert_array_equal(sample(init.resolve("zeros"), (2, 3)), np.zeros((2, 3)))
  np.testing.assert_array_equal(sample(init.resolve(0.5), (2, 3)), np.full((2, 3), 0.5))
  np.testing.assert_array_equal(sample(init.resolve(3), (2,)), [3, 3])
  array = np.arange(6.0).reshape(2, 3)
  np.testing.assert_array_equal(sample(init.resolve(array), (2, 3)), array)
  lecun = jax.nn.initializers.lecun_normal()
  assert init.resolve(lecun) is lecun


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", ["normal", "truncatednormal", "uniform", "he_uniform", "xavier_uniform", "ones"])
def test_dtype(name, dtype):
  assert init.resolve(name)(jax.random.key(0), (3, 4, 2, 2), dtype).dtype == dtype


def test_different_keys_give_different_samples():
  assert not np.array_equal(sample(init.Normal(), seed=0), sample(init.Normal(), seed=1))


# ---------------------------------------------------------------------------------------------------------
# The rest of MindSpore's registry.

MINDSPORE = np.load(FIXTURES / "mindspore_initializers.npz")


def test_registry_is_mindspores():
  assert sorted(init.names()) == json.loads(str(MINDSPORE["names"]))


def test_sparse_by_name_needs_its_sparsity():
  with pytest.raises(TypeError, match=r"`weight_init` 'Sparse' needs its `sparsity`"):
    init.resolve("Sparse", "weight_init")


@pytest.mark.parametrize(
    "initializer, std",
    [
        (init.HeNormal(), math.sqrt(2 / FAN_IN)),
        (init.HeNormal(mode="fan_out", nonlinearity="relu"), math.sqrt(2 / FAN_OUT)),
        (init.HeNormal(negative_slope=1.0), math.sqrt(1 / FAN_IN)),
        (init.XavierNormal(), math.sqrt(2 / (FAN_IN + FAN_OUT))),
        (init.XavierNormal(gain=3.0), 3 * math.sqrt(2 / (FAN_IN + FAN_OUT))),
        (init.VarianceScaling(scale=2.0, mode="fan_out", distribution="untruncated_normal"), math.sqrt(2 / FAN_OUT)),
    ],
)
def test_fan_scaled_normals(initializer, std):
  values = sample(initializer)
  assert_moments(values, 0.0, std)
  assert np.abs(values).max() > 3.5 * std  # a normal's tails, not a bounded distribution


@pytest.mark.parametrize(
    "initializer, bound",
    [
        (init.VarianceScaling(distribution="uniform"), math.sqrt(3 / FAN_IN)),
        (init.VarianceScaling(scale=3.0, mode="fan_avg", distribution="uniform"),
         math.sqrt(9 / ((FAN_IN + FAN_OUT) / 2))),
        # MindSpore 2.10 draws 'truncated_normal' from the uniform distribution (measured: scale 2 on a
        # (400, 300) shape gave std 0.0816 and max |value| 0.14142 = sqrt(3 * 2 / 300)).
        (init.VarianceScaling(scale=2.0), math.sqrt(6 / FAN_IN)),
    ],
)
def test_variance_scaling_uniforms(initializer, bound):
  assert_uniform(sample(initializer), bound)


def test_variance_scaling_fan_is_at_least_one():
  values = sample(init.VarianceScaling(scale=4.0, distribution="uniform"), (20000, 1))  # fan_in = 1
  assert_uniform(values, math.sqrt(12))
  values = sample(init.VarianceScaling(scale=4.0, distribution="uniform"), (20000, 0))  # fan_in = 0 -> 1
  assert values.shape == (20000, 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(scale=0.0), r"`scale` must be > 0"),
        (dict(mode="fan"), r"`mode` must be one of \['fan_in', 'fan_out', 'fan_avg'\]"),
        (dict(distribution="normal"), r"`distribution` must be one of"),
    ],
)
def test_variance_scaling_rejects_bad_arguments(kwargs, message):
  with pytest.raises(ValueError, match=message):
    init.VarianceScaling(**kwargs)


@pytest.mark.parametrize("shape", [(3, 5), (5, 3), (4, 4), (6, 2, 3, 3), (2, 8, 4, 4), (16, 3, 1)])
@pytest.mark.parametrize("gain", [1.0, 2.0])
def test_orthogonal_rows_or_columns_are_orthonormal(shape, gain):
  matrix = sample(init.Orthogonal(gain=gain), shape).reshape(shape[0], -1)
  gram = matrix @ matrix.T if matrix.shape[0] <= matrix.shape[1] else matrix.T @ matrix
  np.testing.assert_allclose(gram, gain**2 * np.eye(len(gram)), atol=1e-5)


def test_orthogonal_differs_by_key():
  assert not np.allclose(sample(init.Orthogonal(), (4, 4), seed=0), sample(init.Orthogonal(), (4, 4), seed=1))


@pytest.mark.parametrize("i", range(5))
def test_dirac_equals_mindspores(i):
  expected = MINDSPORE[f"dirac_{i}"]
  groups = int(MINDSPORE[f"dirac_groups_{i}"])
  np.testing.assert_array_equal(sample(init.Dirac(groups=groups), expected.shape), expected)


@pytest.mark.parametrize("i", range(3))
def test_identity_equals_mindspores(i):
  expected = MINDSPORE[f"identity_{i}"]
  np.testing.assert_array_equal(sample(init.resolve("identity"), expected.shape), expected)


@pytest.mark.parametrize("n, kernel, group", [(1, 3, 1), (2, 3, 1), (2, 5, 4), (3, 3, 2), (2, (3, 5), 1)])
def test_dirac_layer_returns_its_input(n, kernel, group):
  """A stride-1 'same' layer with C_in == C_out and an odd kernel, initialized by Dirac, is the identity."""
  layer = {1: ct.Conv1dTranspose, 2: ct.Conv2dTranspose, 3: ct.Conv3dTranspose}[n](
      4, 4, kernel, group=group, weight_init=init.Dirac(groups=group))
  x = jax.random.normal(jax.random.key(0), (2, 4, *(5,) * n))
  np.testing.assert_array_equal(layer.apply(layer.init(jax.random.key(1), x), x), x)


def test_dirac_with_an_even_kernel_shifts_by_one():
  layer = ct.Conv1dTranspose(1, 1, 4, weight_init="dirac")  # centre 4 // 2 = 2, 'same' crops lo = 1
  y = layer.apply(layer.init(jax.random.key(0), jnp.ones((1, 1, 4))), jnp.arange(1.0, 5.0).reshape(1, 1, 4))
  np.testing.assert_array_equal(y[0, 0], [0, 1, 2, 3])


@pytest.mark.parametrize("sparsity, rows, zeros", [(0.1, 100, 10), (0.25, 10, 3), (0.0, 7, 0), (1.0, 5, 5)])
def test_sparse_zeros_per_column(sparsity, rows, zeros):
  values = sample(init.Sparse(sparsity=sparsity, sigma=0.5), (rows, 400))
  np.testing.assert_array_equal((values == 0).sum(axis=0), zeros)  # ceil(sparsity * rows) in every column
  nonzero = values[values != 0]
  if nonzero.size:
    assert_moments(nonzero, 0.0, 0.5)
  if 0 < zeros < rows:  # the zeros sit at different rows in different columns
    assert len({tuple(np.flatnonzero(column == 0)) for column in values.T}) > 100


@pytest.mark.parametrize(
    "initializer, message",
    [
        (init.Identity(), r"`weight_init`: Identity fills a 2-D shape only, but got \(4, 4, 3, 3\)"),
        (init.Sparse(0.5), r"`weight_init`: Sparse fills a 2-D shape only"),
        (init.Dirac(groups=3), r"`weight_init`: Dirac needs shape\[0\] \(=4\) divisible by `groups` \(=3\)"),
    ],
)
def test_unfit_shape_raises_at_construction(initializer, message):
  with pytest.raises(ValueError, match=message):
    ct.Conv2dTranspose(4, 4, 3, weight_init=initializer)


@pytest.mark.parametrize("initializer", [init.Identity(), init.Sparse(0.5), init.Dirac(), init.Orthogonal()])
def test_unfit_shape_raises_when_called_directly(initializer):
  with pytest.raises(ValueError, match="shape"):
    initializer(jax.random.key(0), (2,))


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize("name", ["he_normal", "xavier_normal", "variancescaling", "orthogonal", "dirac"])
def test_dtype_of_the_rest(name, dtype):
  assert init.resolve(name)(jax.random.key(0), (3, 4, 2, 2), dtype).dtype == dtype
