"""Shared test configuration and helpers."""

import json
import os
import pathlib
import re
import shutil
import tempfile

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

# One compilation cache for the run, shared by the xdist workers, which inherit its name from the controller
# (the process that removes it at the end): a program compiled once is loaded by every other test that
# compiles the same program, whichever worker runs it.
if "PYTEST_XDIST_WORKER" not in os.environ:
  os.environ["CONVTRANSPOSE_TEST_CACHE"] = tempfile.mkdtemp(prefix="convtranspose-tests-")
COMPILATION_CACHE = pathlib.Path(os.environ["CONVTRANSPOSE_TEST_CACHE"])
jax.config.update("jax_compilation_cache_dir", str(COMPILATION_CACHE))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
# Keyed with the programs' metadata too: a test reading operation names from a compiled program gets its own.
jax.config.update("jax_compilation_cache_include_metadata_in_key", True)


def pytest_sessionfinish(session):
  if "PYTEST_XDIST_WORKER" not in os.environ:  # the controller, or a run without workers
    shutil.rmtree(COMPILATION_CACHE, ignore_errors=True)


# `pytest -m quick`: the first case of every test function, for the edit-test loop; not the exhaustive tier,
# not the property tests (hypothesis draws many examples; the grids beside them cover their features), not the
# doctests (the API's examples, which the tests cover), and not the few tests that are one long run each (the
# site's build, two processes training, the wheel, the demo, whose code `test_readme_example_runs` runs, and
# the accelerator branches' eager vmap, whose features the other quick tests meet).
NOT_QUICK = {"test_the_site_builds_and_links", "test_two_processes_train_as_one_device",
             "test_wheel_and_sdist_build_and_the_wheel_runs_the_demo",
             "test_demo_prints_the_seed_example_shape_and_nothing_of_cuda_or_tpus",
             "test_vmap_bias_and_padding_modes_equal_the_cpu_branch"}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
  """Marks the first item of each test function `quick`."""
  seen = set()
  for item in items:
    function = getattr(item, "originalname", None) or item.name
    key = (item.nodeid.split("::")[0], function)
    if (key in seen or function in NOT_QUICK or isinstance(item, pytest.DoctestItem)
        or getattr(getattr(item, "obj", None), "is_hypothesis_test", False)
        or any(item.get_closest_marker(m) for m in ("exhaustive", "accelerators"))):
      continue
    seen.add(key)
    item.add_marker(pytest.mark.quick)


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


# ---------------------------------------------------------------------------------------------------------
# Program identity: two functions that JAX lowers to the same StableHLO compile to the same XLA program, so
# compute the same numbers. A module is checked against the function it calls that way, without compiling it
# a second time: the function's program is the one checked against the reference.


def lowered_text(fn, *args) -> str:
  """What JAX gives XLA for ``jax.jit(fn)(*args)`` on this machine (StableHLO, no debug locations), the
  module's name (the function's) dropped."""
  return re.sub(r"^module @\S+", "module", jax.jit(fn).lower(*args).as_text(), count=1)


def layer_program(framework: str, name: str, *args, x, **kwargs) -> tuple[dict, str]:
  """The layer `build` makes: its parameters (``{'weight': ..., 'bias': ...}``) and the `lowered_text` of the layer
  called on ``x`` with those parameters as the arguments (the same pytree in both frameworks)."""
  import flax.nnx

  built = build(framework, name, *args, x=x, **kwargs)
  if framework == "linen":
    return built.params, lowered_text(lambda params, x: built.layer.apply({"params": params}, x), built.params, x)
  graphdef, state = flax.nnx.split(built.layer)
  return built.params, lowered_text(lambda state, x: flax.nnx.merge(graphdef, state)(x), state, x)
