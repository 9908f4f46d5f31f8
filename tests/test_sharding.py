"""Sharded over 8 simulated CPU devices (``conftest.py``): data parallel, channel parallel and both equal one
device, forward and a jitted training step."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import convtranspose as ct
from conftest import assert_close

AUTO = (jax.sharding.AxisType.Auto,) * 2  # XLA propagates the shardings (what Flax's logical rules assume)
MESHES = {"data": (8, 1), "channels": (1, 8), "both": (4, 2)}
LAYERS = {
    1: ct.Conv1dTranspose(8, 16, 8, stride=4, pad_mode="pad", padding=2, has_bias=True, bias_init="uniform",
                          logical_axes=True),
    2: ct.Conv2dTranspose(8, 32, 4, stride=2, pad_mode="pad", padding=1, group=2, has_bias=True,
                          bias_init="uniform", logical_axes=True),
    3: ct.Conv3dTranspose(4, 8, 3, stride=2, pad_mode="same", has_bias=True, bias_init="uniform",
                          data_format="NDHWC", logical_axes=True),
}


def _sharded_init(net, x, mesh):
  """Parameters created directly in their shardings, from the layer's logical axis names."""
  abstract = jax.eval_shape(net.init, jax.random.key(0), x)
  shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, ct.sharding.axis_rules())
  return jax.jit(net.init, out_shardings=shardings)(jax.random.key(0), x), shardings


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


@pytest.mark.parametrize("algorithm", ["dilated", "phase"])
@pytest.mark.parametrize("mesh_shape", MESHES.values(), ids=MESHES.keys())
@pytest.mark.parametrize("n", [1, 2, 3])
def test_sharded_forward_equals_one_device(n, mesh_shape, algorithm):
  net = LAYERS[n].clone(algorithm=algorithm)
  mesh = jax.make_mesh(mesh_shape, ("data", "model"), axis_types=AUTO)
  x = _input(n, net)
  variables, _ = _sharded_init(net, x, mesh)
  weight = variables["params"]["weight"].value
  assert weight.sharding.spec == P(None, "model", *(None,) * (weight.ndim - 2))
  assert weight.addressable_shards[0].data.shape[1] == weight.shape[1] // mesh_shape[1]  # output channels split
  y = jax.jit(net.apply)(variables, jax.device_put(x, NamedSharding(mesh, P("data"))))
  assert y.sharding.num_devices == 8
  one_device = jax.device_put(nn.unbox(variables), jax.devices()[0])
  assert_close(y, jax.jit(net.apply)(one_device, jax.device_put(x, jax.devices()[0])))


@pytest.mark.parametrize("mesh_shape", MESHES.values(), ids=MESHES.keys())
def test_sharded_training_step_equals_one_device(mesh_shape):
  """Two layers, an SGD step on input and weight gradients, jitted with the parameters and batch sharded."""

  class Decoder(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = jax.nn.relu(ct.Conv2dTranspose(8, 32, 4, stride=2, pad_mode="pad", padding=1, group=2, has_bias=True,
                                         logical_axes=True, name="up1")(x))
      return ct.Conv2dTranspose(32, 8, 3, stride=2, has_bias=True, logical_axes=True, name="up2")(x)

  net, mesh = Decoder(), jax.make_mesh(mesh_shape, ("data", "model"), axis_types=AUTO)
  x = _input(2, LAYERS[2])
  target = jax.random.normal(jax.random.key(2), jax.eval_shape(net.init_with_output, jax.random.key(0), x)[0].shape)
  variables, shardings = _sharded_init(net, x, mesh)

  def train_step(variables, x, target):
    loss, grads = jax.value_and_grad(lambda v: jnp.mean((net.apply(v, x) - target) ** 2))(variables)
    return loss, jax.tree.map(lambda p, g: p - 0.1 * g, variables, grads)

  batch = NamedSharding(mesh, P("data"))
  step = jax.jit(train_step, in_shardings=(shardings, batch, batch), out_shardings=(None, shardings))
  loss, updated = step(variables, x, target)
  assert updated["params"]["up1"]["weight"].value.sharding == shardings["params"]["up1"]["weight"]

  one_device = jax.device_put(nn.unbox(variables), jax.devices()[0])
  expected_loss, expected = jax.jit(train_step)(one_device, x, target)
  np.testing.assert_allclose(loss, expected_loss, rtol=1e-5)
  jax.tree.map(assert_close, nn.unbox(updated), expected)

