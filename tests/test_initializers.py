"""Initializers: MindSpore's names and defaults, checked statistically (moments and bounds)."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

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
  with pytest.raises(ValueError, match="`mode` must be 'fan_in' or 'fan_out'"):
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
