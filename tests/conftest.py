"""Shared test configuration and helpers."""

import json
import os
import pathlib

# Keras 3 (tests/test_convert.py) on JAX, whatever the machine's Keras configuration says; set before any import.
os.environ["KERAS_BACKEND"] = "jax"
# The accelerator-tests extra installs jaxlib's compile-only CUDA and TPU plugins (tests/test_accelerator_programs.py,
# `pytest -m accelerators`, in their own environment); with JAX_PLATFORMS=cpu they register their topologies
# without looking for a device. On a machine with a GPU, set JAX_PLATFORMS (e.g. "cuda,cpu") to run the suite
# there; several test workers may then each load libtpu.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import hypothesis
import jax
import jax.numpy as jnp
import numpy as np
import pytest

jax.config.update("jax_numpy_rank_promotion", "raise")
# Eight simulated CPU devices (as --xla_force_host_platform_device_count=8) for the sharding tests; computations
# that name no sharding run on the first, as on one device.
jax.config.update("jax_num_cpu_devices", 8)

# CI draws the same examples every run (a red CI is then reproducible); developers draw fresh ones.
hypothesis.settings.register_profile("ci", derandomize=True, print_blob=True)
hypothesis.settings.load_profile("ci" if os.environ.get("CI") else "default")

# The fixture generators import MindSpore, which the tests never need; keep --doctest-modules away from it.
collect_ignore = ["fixtures/make_mindspore_golden.py", "fixtures/make_checkpoints.py", "fixtures/make_mint_fixtures.py"]

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"

# Tolerances per dtype for comparisons against an independent float32/float64 answer: ``atol`` is scaled by
# max(1, max|reference|), since an output element sums up to C_in * prod(kernel) products.
TOLERANCES = {
    np.dtype("float32"): dict(rtol=1e-5, atol=1e-5),
    np.dtype("float16"): dict(rtol=1e-2, atol=1e-2),
    jax.numpy.dtype("bfloat16"): dict(rtol=2e-2, atol=2e-2),
}


def standard_normal(seed: int, shape: tuple) -> jax.Array:
  """Seeded float32 normals drawn by NumPy: `jax.random.normal` compiles a program per shape (about half a
  second), which the property tests, with a new shape every example, spent most of their time on."""
  return jnp.asarray(np.random.default_rng(seed).standard_normal(shape, np.float32))


def put_on(mesh, arrays, specs) -> list:
  """Each array placed on ``mesh`` with its `PartitionSpec`."""
  return [jax.device_put(a, jax.sharding.NamedSharding(mesh, spec)) for a, spec in zip(arrays, specs)]


def assert_close(actual, expected, dtype=np.float32):
  """``assert_allclose`` with the tolerance of ``dtype`` and ``atol`` scaled to the reference's magnitude."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  assert actual.shape == expected.shape, (actual.shape, expected.shape)
  tol = TOLERANCES[np.dtype(dtype)]
  scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size else 1.0
  np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale)


def _tuples(config: dict) -> dict:
  """JSON turned MindSpore's tuple arguments into lists; turn them back (a list is not a valid argument)."""
  arguments = ("kernel_size", "stride", "padding", "dilation", "output_padding")
  return {k: tuple(v) if k in arguments and isinstance(v, list) else v for k, v in config.items()}


def load_cases(name: str) -> tuple[list[dict], dict]:
  """Configs and arrays of a fixture file written by ``fixtures/make_mindspore_golden.py``."""
  data = np.load(FIXTURES / name)
  arrays = {k: data[k] for k in data.files}
  return [_tuples(c) for c in json.loads(str(arrays.pop("configs")))], arrays


@pytest.fixture(scope="session")
def mindspore_cases():
  return load_cases("mindspore_conv2d_transpose.npz")


# ---------------------------------------------------------------------------------------------------------
# One test body for both Flax frameworks: `build` makes a layer by its class name in linen (`convtranspose`)
# or in NNX (`convtranspose.nnx`), initialized, and returns it as a jitted function of the input with its
# parameters.

FRAMEWORKS = ("linen", "nnx")


class Built:
  """A layer built in one framework: ``params`` (``{'weight': ..., 'bias': ...}``) and ``__call__(x, ...)``."""

  def __init__(self, framework: str, name: str, args: tuple, kwargs: dict, x):
    import flax.nnx
    import jax

    import convtranspose as ct

    self.framework = framework
    if framework == "linen":
      self.layer = getattr(ct, name)(*args, **kwargs)
      self.variables = jax.jit(self.layer.init)(jax.random.key(0), x)  # jitted: XLA drops the unused forward pass
      self.params = dict(self.variables["params"])
      self._apply = jax.jit(self.layer.apply, static_argnames="output_size")
    else:
      self.layer = getattr(ct.nnx, name)(*args, **kwargs, rngs=flax.nnx.Rngs(0))
      self.params = flax.nnx.to_pure_dict(flax.nnx.state(self.layer, flax.nnx.Param))
      self._apply = flax.nnx.jit(lambda layer, x, output_size=None: layer(x, output_size),
                                 static_argnames="output_size")

  def __call__(self, x, output_size=None):
    target = self.variables if self.framework == "linen" else self.layer
    return self._apply(target, x, output_size=output_size)


def build(framework: str, name: str, *args, x, **kwargs) -> Built:
  """``convtranspose.<name>(*args, **kwargs)`` (linen, initialized on ``x``) or ``convtranspose.nnx.<name>``."""
  return Built(framework, name, args, kwargs, x)
