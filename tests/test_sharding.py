"""Sharded over 8 simulated CPU devices (``conftest.py``), on meshes of `Explicit` axes (JAX's default) and of
`Auto` axes: data parallel, channel parallel and both equal one device, forward and gradients, in the function and
the modules, with the expected shardings; spatial sharding, ``out_sharding`` and `jax.shard_map`."""

import functools
import os
import pathlib
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import convtranspose as ct
from conftest import assert_close, put_on

AXIS_TYPES = {"explicit": AxisType.Explicit, "auto": AxisType.Auto}  # Auto: XLA propagates the shardings
MESHES = {"data": (8, 1), "channels": (1, 8), "both": (4, 2)}
ALGORITHMS = ("dilated", "phase", "hybrid", "auto")
LAYERS = {
    1: ct.Conv1dTranspose(8, 16, 8, stride=4, pad_mode="pad", padding=2, has_bias=True, bias_init="uniform",
                          logical_axes=True),
    2: ct.Conv2dTranspose(8, 32, 4, stride=2, pad_mode="pad", padding=1, group=2, has_bias=True,
                          bias_init="uniform", logical_axes=True),
    3: ct.Conv3dTranspose(4, 8, 3, stride=2, pad_mode="same", has_bias=True, bias_init="uniform",
                          data_format="NDHWC", logical_axes=True),
}


def _mesh(shape=(4, 2), axis_type="explicit"):
  return jax.make_mesh(shape, ("data", "model"), axis_types=(AXIS_TYPES[axis_type],) * 2)


def _sharded_init(net, x, mesh):
  """Parameters created directly in their shardings, from the layer's logical axis names."""
  abstract = jax.eval_shape(net.init, jax.random.key(0), x)
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, ct.sharding.axis_rules())
  return jax.jit(net.init, out_shardings=shardings)(jax.random.key(0), x), shardings


def _on_one_device(tree):
  """The values of a sharded tree, unboxed, as host arrays (jit then puts them on one device)."""
  return jax.tree.map(np.asarray, nn.unbox(tree))


def _input(n, net):
  shape = (8, net.in_channels, *(6,) * n) if net.data_format[-1] != "C" else (8, *(4,) * n, net.in_channels)
  return jax.random.normal(jax.random.key(1), shape)


def test_eight_devices():
  assert jax.device_count() == 8


def test_logical_axes_name_every_parameter():
  variables = jax.eval_shape(LAYERS[2].init, jax.random.key(0), jnp.ones((1, 8, 4, 4)))
  assert nn.get_partition_spec(variables) == {"params": {
      "weight": P("conv_in", "conv_out", None, None), "bias": P("conv_out")}}
  plain = LAYERS[2].clone(logical_axes=False).init(jax.random.key(0), jnp.ones((1, 8, 4, 4)))
  assert all(isinstance(leaf, jax.Array) for leaf in jax.tree.leaves(plain))
  with pytest.raises(TypeError, match=r"`logical_axes` must be a bool, but got 'yes' of type str"):
    ct.Conv2dTranspose(1, 1, 2, logical_axes="yes")


def _expected_spec(y, channel_axis, batch="data", channel="model"):
  spec = [None] * y.ndim
  spec[0], spec[channel_axis] = batch, channel
  return P(*spec)


@pytest.mark.parametrize("algorithm", ["dilated", "phase"])
@pytest.mark.parametrize("mesh_shape", MESHES.values(), ids=MESHES.keys())
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("axis_type", AXIS_TYPES)
def test_sharded_module_equals_one_device(axis_type, n, mesh_shape, algorithm):
  """A linen layer created sharded from its logical axes (output channels over 'model'), applied to a batch
  over 'data'; under explicit axes the output's type is batch over 'data', channels over 'model'."""
  net, mesh = LAYERS[n].clone(algorithm=algorithm), _mesh(mesh_shape, axis_type)
  x = _input(n, net)
  with jax.set_mesh(mesh):
    variables, _ = _sharded_init(net, x, mesh)
    weight = variables["params"]["weight"].value
    assert weight.sharding.spec == P(None, "model", *(None,) * (weight.ndim - 2))
    assert weight.addressable_shards[0].data.shape[1] == weight.shape[1] // mesh_shape[1]  # output channels split
    y = jax.jit(net.apply)(variables, jax.device_put(x, NamedSharding(mesh, P("data"))))
  assert y.sharding.num_devices == 8
  if axis_type == "explicit":
    assert y.sharding.spec == _expected_spec(y, -1 if net.data_format[-1] == "C" else 1)
  assert_close(y, jax.jit(net.apply)(_on_one_device(variables), x))


@pytest.mark.parametrize("mesh_shape", MESHES.values(), ids=MESHES.keys())
@pytest.mark.parametrize("axis_type", AXIS_TYPES)
def test_sharded_training_step_equals_one_device(axis_type, mesh_shape):
  """Two layers, an SGD step on input and weight gradients, jitted with the parameters and batch sharded."""

  class Decoder(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = jax.nn.relu(ct.Conv2dTranspose(8, 32, 4, stride=2, pad_mode="pad", padding=1, group=2, has_bias=True,
                                         logical_axes=True, name="up1")(x))
      return ct.Conv2dTranspose(32, 8, 3, stride=2, has_bias=True, logical_axes=True, name="up2")(x)

  net, mesh = Decoder(), _mesh(mesh_shape, axis_type)
  x = _input(2, LAYERS[2])
  target = jax.random.normal(jax.random.key(2), jax.eval_shape(net.init_with_output, jax.random.key(0), x)[0].shape)

  def train_step(variables, x, target):
    loss, grads = jax.value_and_grad(lambda v: jnp.mean((net.apply(v, x) - target) ** 2))(variables)
    return loss, jax.tree.map(lambda p, g: p - 0.1 * g, variables, grads)

  with jax.set_mesh(mesh):
    variables, shardings = _sharded_init(net, x, mesh)
    batch = NamedSharding(mesh, P("data"))
    step = jax.jit(train_step, in_shardings=(shardings, batch, batch), out_shardings=(None, shardings))
    loss, updated = step(variables, jax.device_put(x, batch), jax.device_put(target, batch))
  for name in ("up1", "up2"):
    for param in ("weight", "bias"):
      assert updated["params"][name][param].value.sharding == shardings["params"][name][param]

  expected_loss, expected = jax.jit(train_step)(_on_one_device(variables), x, target)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
  jax.tree.map(assert_close, nn.unbox(updated), expected)


# (function, x shape, weight shape, arguments): every rank and layout, groups, padding modes and output_size.
FUNCTION_CASES = {
    "1d": (ct.conv1d_transpose, (8, 4, 9), (4, 4, 8), dict(stride=4, pad_mode="pad", padding=2)),
    "2d-groups-reflect": (ct.conv2d_transpose, (8, 8, 6, 6), (8, 4, 4, 4),
                          dict(stride=2, pad_mode="pad", padding=1, group=2, padding_mode="reflect")),
    "2d-nhwc-dilation-output_size": (ct.conv2d_transpose, (8, 5, 5, 4), (4, 6, 3, 3),
                                     dict(stride=2, pad_mode="pad", padding=1, dilation=2, data_format="NHWC",
                                          output_size=(12, 12))),
    "3d-ndhwc": (ct.conv3d_transpose, (8, 3, 3, 3, 4), (4, 2, 3, 3, 3), dict(stride=2, data_format="NDHWC")),
    "mint-unbatched-circular": (ct.conv_transpose2d, (6, 5, 5), (6, 4, 3, 3),
                                dict(stride=2, padding=1, padding_mode="circular")),
}


def _value_and_grads(function, algorithm, arguments):
  """``(sum(sin(y)), y)`` and its gradients with respect to ``x``, ``weight`` and ``bias``, jitted."""
  def loss(x, weight, bias):
    y = function(x, weight, bias, algorithm=algorithm, **arguments)
    return jnp.sum(jnp.sin(y)), y
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("case", FUNCTION_CASES)
def test_explicit_mesh_function_equals_one_device(case, algorithm):
  """Batch over 'data', weight and bias output channels over 'model' on an explicit (4, 2) mesh: the output is
  typed batch over 'data', channels over 'model', the gradients are typed as their operands, and the values are
  one device's."""
  function, x_shape, weight_shape, arguments = FUNCTION_CASES[case]
  keys = jax.random.split(jax.random.key(0), 3)
  out_channels = weight_shape[1] * arguments.get("group", 1)
  x, weight, bias = (jax.random.normal(k, s) for k, s in zip(keys, (x_shape, weight_shape, (out_channels,))))
  unbatched = len(x_shape) == len(weight_shape) - 1
  channels_last = arguments.get("data_format", "NCHW")[-1] == "C"
  mesh = _mesh()
  with jax.set_mesh(mesh):
    operands = put_on(mesh, (x, weight, bias), (P() if unbatched else P("data"), P(None, "model"), P("model")))
    (loss, y), grads = _value_and_grads(function, algorithm, arguments)(*operands)
  spec = [None] * y.ndim
  spec[-1 if channels_last else 0 if unbatched else 1] = "model"
  spec[0] = spec[0] if unbatched else "data"
  assert y.sharding.spec == P(*spec)
  assert [g.sharding.spec for g in grads] == [jax.typeof(a).sharding.spec for a in operands]
  (expected_loss, expected_y), expected_grads = _value_and_grads(function, algorithm, arguments)(x, weight, bias)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-4)
  for actual, expected in zip((y, *grads), (expected_y, *expected_grads)):
    assert_close(actual, expected)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_explicit_mesh_issue_snippet(algorithm):
  """The report's snippet: a batch over 'data', replicated weights, every algorithm gives P('data', None, ...)."""
  with jax.set_mesh(_mesh()):
    x = jax.device_put(jnp.ones((8, 8, 16, 16)), NamedSharding(jax.sharding.get_mesh(), P("data")))
    y = jax.jit(lambda x, w: ct.conv2d_transpose(x, w, stride=2, pad_mode="pad", padding=1,
                                                 algorithm=algorithm))(x, jnp.ones((8, 4, 4, 4)))
  assert y.sharding.spec == P("data", None, None, None)
  np.testing.assert_array_equal(y, ct.conv2d_transpose(np.ones((8, 8, 16, 16)), np.ones((8, 4, 4, 4)), stride=2,
                                                       pad_mode="pad", padding=1, algorithm=algorithm))


def test_spatially_sharded_input():
  """Height over 'data' and width over 'model': the output keeps them (the weight's 'model' channels then give
  way); a length the mesh axis does not divide raises, naming the axis, unless ``out_sharding`` names another."""
  x, weight = jax.random.normal(jax.random.key(0), (2, 8, 8, 8)), jax.random.normal(jax.random.key(1), (8, 4, 4, 4))
  mesh = _mesh()
  with jax.set_mesh(mesh):
    xs = jax.device_put(x, NamedSharding(mesh, P(None, None, "data", "model")))
    ws = jax.device_put(weight, NamedSharding(mesh, P(None, "model")))
    (_, y), grads = _value_and_grads(ct.conv2d_transpose, "auto", dict(stride=2, pad_mode="pad", padding=1))(
        xs, ws, None)
    assert y.sharding.spec == P(None, None, "data", "model")
    assert grads[0].sharding.spec == P(None, None, "data", "model")
    with pytest.raises(ValueError, match=r"`x`'s axis 2 is sharded over mesh axes 'data' \(4 devices\), which do "
                                         r"not divide the output's length 18 there .* pass `out_sharding`"):
      ct.conv2d_transpose(xs, ws, stride=2, pad_mode="valid")
    valid = ct.conv2d_transpose(xs, ws, stride=2, pad_mode="valid", out_sharding=P(None, "model"))
  assert y.shape == (2, 4, 16, 16) and valid.sharding.spec == P(None, "model", None, None)
  assert_close(y, ct.conv2d_transpose(x, weight, stride=2, pad_mode="pad", padding=1))
  assert_close(valid, ct.conv2d_transpose(x, weight, stride=2, pad_mode="valid"))


@pytest.mark.parametrize("axis_type", AXIS_TYPES)
def test_out_sharding(axis_type):
  """``out_sharding`` (a PartitionSpec of the context mesh or a NamedSharding) in the function, unbatched, and in
  the linen and NNX modules' ``__call__``."""
  from flax import nnx

  x, weight = jax.random.normal(jax.random.key(0), (8, 8, 6, 6)), jax.random.normal(jax.random.key(1), (8, 4, 4, 4))
  expected = ct.conv_transpose2d(x, weight, stride=2, padding=1)
  linen = ct.ConvTranspose2d(8, 4, 4, stride=2, padding=1, bias=False)
  variables = {"params": {"weight": weight}}
  mesh = _mesh(axis_type=axis_type)
  with jax.set_mesh(mesh):
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    outputs = {
        "function": jax.jit(lambda x, w: ct.conv_transpose2d(x, w, stride=2, padding=1,
                                                             out_sharding=P(None, None, "data", "model")))(xs, weight),
        "named": ct.conv_transpose2d(xs, weight, stride=2, padding=1,
                                     out_sharding=NamedSharding(mesh, P(None, None, "data", "model"))),
        "unbatched": ct.conv_transpose2d(x[0], weight, stride=2, padding=1,
                                         out_sharding=P(None, "data", "model"))[None],
        "linen": jax.jit(lambda v, x: linen.apply(v, x, out_sharding=P(None, None, "data", "model")))(variables, xs),
    }
    net = ct.nnx.ConvTranspose2d(8, 4, 4, stride=2, padding=1, bias=False, rngs=nnx.Rngs(0))
    net.weight[...] = weight
    outputs["nnx"] = nnx.jit(lambda net, x: net(x, out_sharding=P(None, None, "data", "model")))(net, xs)
  for name, y in outputs.items():
    assert y.sharding.is_equivalent_to(NamedSharding(mesh, P(None, None, "data", "model")), 4), name
    assert_close(y, expected[:1] if name == "unbatched" else expected)


def test_shard_map_computes_the_local_block():
  """Under `jax.shard_map` the layer sees its block: its batch rows and, with the weight's output channels
  split over 'model', its channels; the blocks make one device's output. With 'data' manual only, the layer
  inside is typed over the explicit 'model' axis, as outside."""
  x, weight = jax.random.normal(jax.random.key(0), (8, 8, 6, 6)), jax.random.normal(jax.random.key(1), (8, 4, 4, 4))
  bias = jax.random.normal(jax.random.key(2), (4,))
  expected = ct.conv2d_transpose(x, weight, bias, stride=2, pad_mode="pad", padding=1)

  def local(x, weight, bias, out_channels=2):
    assert x.shape == (2, 8, 6, 6) and weight.shape == (8, out_channels, 4, 4)
    return ct.conv2d_transpose(x, weight, bias, stride=2, pad_mode="pad", padding=1)

  specs = (P("data"), P(None, "model"), P("model"))
  for axis_type in AXIS_TYPES:
    mesh = _mesh(axis_type=axis_type)
    with jax.set_mesh(mesh):
      operands = put_on(mesh, (x, weight, bias), specs)
      y = jax.jit(jax.shard_map(local, in_specs=specs, out_specs=P("data", "model")))(*operands)
      assert_close(y, expected)
  mesh = _mesh()
  with jax.set_mesh(mesh):
    operands = put_on(mesh, (x, weight, bias), specs)
    partial = jax.shard_map(functools.partial(local, out_channels=4), in_specs=(P("data"), P(), P()),
                            out_specs=P("data"), axis_names={"data"})
    y = jax.jit(partial)(*operands)
  assert y.sharding.spec == P("data", "model", None, None)
  assert_close(y, expected)


def test_documented_example():
  """The sharding page's first example (docs/sharding.md), run as written in a fresh process, as on a laptop
  with one CPU: it makes its own 8 simulated devices and prints the output's type."""
  page = (pathlib.Path(__file__).resolve().parent.parent / "docs" / "sharding.md").read_text()
  code = page[page.index("```python\n") + len("```python\n"):]
  code = code[:code.index("```\n")]
  environment = {k: v for k, v in os.environ.items() if k not in ("JAX_PLATFORMS", "XLA_FLAGS")}
  run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=environment)
  assert run.returncode == 0, run.stderr[-3000:]
  assert run.stdout.strip() == "float32[32@data,128@model,16,16]"
