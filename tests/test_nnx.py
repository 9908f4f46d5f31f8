"""The Flax NNX modules: linen's arguments plus ``rngs``, parameters made at construction, every NNX transform.

Their numbers are tested with the linen modules' (one body for both frameworks, `conftest.build`): the MindSpore
fixtures in ``test_mindspore_golden.py``, PyTorch in ``test_mint.py``, checkpoints in ``test_interop.py``.
"""

import inspect
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from jax.sharding import AxisType, PartitionSpec

import convtranspose as ct
from conftest import assert_close

NAMES = ("Conv1dTranspose", "Conv2dTranspose", "Conv3dTranspose", "ConvTranspose1d", "ConvTranspose2d",
         "ConvTranspose3d")


def test_seed_example():
  net = ct.nnx.Conv2dTranspose(3, 64, 4, has_bias=False, weight_init="normal", pad_mode="pad", rngs=nnx.Rngs(0))
  x = jnp.ones((1, 3, 16, 50))
  y = net(x)
  assert y.shape == (1, 64, 19, 53)
  assert set(nnx.to_pure_dict(nnx.state(net, nnx.Param))) == {"weight"}  # no bias parameter at all
  assert net.bias is None
  assert_close(y, ct.conv2d_transpose(x, net.weight[...], pad_mode="pad"))


@pytest.mark.parametrize("name", NAMES)
def test_signature_is_linens_plus_rngs(name):
  linen = [p for p in inspect.signature(getattr(ct, name)).parameters.values() if p.name not in ("parent", "name")]
  ours = list(inspect.signature(getattr(ct.nnx, name)).parameters.values())
  assert ours[:-1] == linen
  assert ours[-1].name == "rngs" and ours[-1].kind is inspect.Parameter.KEYWORD_ONLY
  doc = getattr(ct.nnx, name).__doc__
  assert "Args:" in doc and "rngs: keyword-only" in doc and "in_channels: ``C_in``." in doc


@pytest.mark.parametrize("name", NAMES)
def test_same_arguments_same_layer_as_linen(name):
  """Positional arguments in the vocabulary's order; the NNX layer with linen's parameters is linen's layer."""
  n = int(re.search(r"\d", name).group())
  legacy = name.startswith("Conv") and name.endswith("Transpose")
  args = (4, 6, 3, 2, "pad", 1, 1, 2) if legacy else (4, 6, 3, 2, 1, 1, 2, True)
  kwargs = dict(has_bias=True, bias_init="uniform") if legacy and n != 3 else {}
  if legacy and n == 3:
    args = (*args, 1, True, "normal", "uniform")  # output_padding before has_bias
  elif legacy:
    kwargs["output_padding"] = 1
  x = jax.random.normal(jax.random.key(0), (2, 4, *(4,) * n))
  linen = getattr(ct, name)(*args, **kwargs)
  variables = linen.init(jax.random.key(1), x)
  layer = getattr(ct.nnx, name)(*args, **kwargs, rngs=nnx.Rngs(1))
  assert jax.tree.map(jnp.shape, nnx.to_pure_dict(nnx.state(layer, nnx.Param))) == jax.tree.map(
      jnp.shape, dict(variables["params"]))
  ct.interop.load_into_nnx(layer, variables["params"])
  assert_close(layer(x), linen.apply(variables, x))
  assert_close(layer(x[0]), linen.apply(variables, x[0]))  # unbatched


@pytest.mark.parametrize(
    "name, kwargs, error, message",
    [
        ("Conv2dTranspose", dict(pad_mode="valid", padding=1), ValueError, "`padding` must be 0 when `pad_mode`"),
        ("Conv2dTranspose", dict(group=4), ValueError, r"`in_channels` \(=2\) must be divisible by `group`"),
        ("Conv2dTranspose", dict(has_bias=1), TypeError, "`has_bias` must be a bool"),
        ("Conv3dTranspose", dict(kernel_size=(1, 2)), TypeError, "`kernel_size` must be an int or a tuple of 3"),
        ("Conv1dTranspose", dict(weight_init="nope"), ValueError, "`weight_init` 'nope' is not a known"),
        ("ConvTranspose2d", dict(groups=3), ValueError, r"`in_channels` \(=2\) must be divisible by `groups`"),
        ("ConvTranspose3d", dict(stride=(1, 2)), ValueError, "`stride` must be an int, or a tuple or list of 1 or 3"),
        ("ConvTranspose1d", dict(algorithm="fast"), ValueError, "`algorithm` must be one of"),
        # MindSpore's legacy layers take no list (NNX once read it as a tuple, linen refused it).
        ("Conv2dTranspose", dict(kernel_size=[3, 3]), TypeError, r"`kernel_size` must be an int or a tuple of 2 "
                                                                 r"ints, but got \[3, 3\] of type list"),
        ("Conv2dTranspose", dict(pad_mode="pad", padding=[1, 1, 1, 1]), TypeError, "`padding` must be an int or"),
    ],
)
@pytest.mark.parametrize("framework", ["linen", "nnx"])
def test_errors_at_construction_in_both_frameworks(framework, name, kwargs, error, message):
  arguments = dict(in_channels=2, out_channels=2, kernel_size=3) | kwargs
  with pytest.raises(error, match=message):
    if framework == "linen":
      getattr(ct, name)(**arguments)
    else:
      getattr(ct.nnx, name)(**arguments, rngs=nnx.Rngs(0))


@pytest.mark.parametrize("framework", ["linen", "nnx"])
def test_the_mint_layers_take_lists_in_both_frameworks(framework):
  arguments = dict(in_channels=2, out_channels=4, kernel_size=[3, 2], stride=[2, 1], padding=[1, 0],
                   output_padding=[1, 0], dilation=[1, 2])
  x = jax.random.normal(jax.random.key(0), (1, 2, 5, 5))
  if framework == "linen":
    layer = ct.ConvTranspose2d(**arguments)
    weight = layer.init(jax.random.key(1), x)["params"]["weight"]
    y = layer.apply({"params": {"weight": weight, "bias": jnp.zeros(4)}}, x)
  else:
    layer = ct.nnx.ConvTranspose2d(**arguments, rngs=nnx.Rngs(1))
    weight = layer.weight[...]
    layer.bias[...] = jnp.zeros(4)
    y = layer(x)
  expected = torch.nn.functional.conv_transpose2d(torch.tensor(np.asarray(x)), torch.tensor(np.asarray(weight)),
                                                  None, (2, 1), (1, 0), (1, 0), 1, (1, 2)).numpy()
  assert_close(y, expected)


def _net():
  return ct.nnx.ConvTranspose2d(3, 2, 4, stride=2, padding=1, rngs=nnx.Rngs(0))


def test_nnx_jit_plain_jit_grad_and_vmap():
  net = _net()
  x = jax.random.normal(jax.random.key(1), (4, 3, 5, 5))
  expected = ct.conv_transpose2d(x, net.weight[...], net.bias[...], 2, 1)
  assert_close(nnx.jit(lambda net, x: net(x))(net, x), expected)
  graphdef, state = nnx.split(net)
  assert_close(jax.jit(lambda state, x: nnx.merge(graphdef, state)(x))(state, x), expected)
  assert_close(nnx.vmap(lambda net, x: net(x), in_axes=(None, 0))(net, x), expected)  # unbatched per example

  grads = nnx.grad(lambda net: jnp.sum(net(x) ** 2))(net)
  reference = jax.grad(lambda w, b: jnp.sum(ct.conv_transpose2d(x, w, b, 2, 1) ** 2), argnums=(0, 1))(
      net.weight[...], net.bias[...])
  assert_close(grads["weight"][...], reference[0])
  assert_close(grads["bias"][...], reference[1])


def test_eval_shape_builds_abstractly():
  abstract = nnx.eval_shape(lambda: ct.nnx.Conv3dTranspose(4, 8, 3, has_bias=True, rngs=nnx.Rngs(0)))
  shapes = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
  assert all(isinstance(v, jax.ShapeDtypeStruct) for v in shapes.values())
  assert jax.tree.map(jnp.shape, shapes) == {"weight": (4, 8, 3, 3, 3), "bias": (8,)}


def test_training_step_with_optax():
  """A jitted nnx.Optimizer step (SGD) moves the parameters by -lr * the gradient, and training fits."""
  net = ct.nnx.ConvTranspose2d(3, 2, 4, stride=2, padding=1, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (8, 3, 4, 4))
  target = ct.conv_transpose2d(x, jax.random.normal(jax.random.key(2), (3, 2, 4, 4)) * 0.3, None, 2, 1)
  optimizer = nnx.Optimizer(net, optax.sgd(0.05), wrt=nnx.Param)

  def loss(net):
    return jnp.mean((net(x) - target) ** 2)

  @nnx.jit
  def step(net, optimizer):
    value, grads = nnx.value_and_grad(loss)(net)
    optimizer.update(net, grads)
    return value

  before = {k: np.asarray(v) for k, v in nnx.to_pure_dict(nnx.state(net, nnx.Param)).items()}
  grads = nnx.grad(loss)(net)
  first = float(step(net, optimizer))
  for name in ("weight", "bias"):
    assert_close(getattr(net, name)[...], before[name] - 0.05 * np.asarray(grads[name][...]))
  losses = [float(step(net, optimizer)) for _ in range(150)]
  assert losses[-1] < 0.1 * first


def test_display_and_tabulate():
  net = _net()
  text = repr(net)
  assert "ConvTranspose2d(" in text and "kernel_size=4" in text and "shape=(3, 2, 4, 4)" in text
  table = nnx.tabulate(net, jnp.ones((1, 3, 5, 5)), console_kwargs=dict(width=200, force_terminal=False))
  assert "weight: float32[3,2,4,4]" in table and "float32[1,2,10,10]" in table


def test_logical_axes_as_variable_metadata():
  with nnx.use_eager_sharding(False):  # names only, no mesh needed
    net = ct.nnx.Conv2dTranspose(4, 8, 3, has_bias=True, logical_axes=True, rngs=nnx.Rngs(0))
  specs = nnx.to_pure_dict(nnx.get_partition_spec(nnx.state(net, nnx.Param)))
  assert specs == {"weight": PartitionSpec("conv_in", "conv_out", None, None), "bias": PartitionSpec("conv_out")}
  assert getattr(_net().weight, "out_sharding", None) is None  # plain parameters without logical_axes


@pytest.mark.parametrize("axis_type", [AxisType.Explicit, AxisType.Auto])
def test_logical_axes_shard_on_a_mesh(axis_type):
  """Made under a mesh and logical rules (8 simulated devices), the parameters are created sharded: output
  channels over 'model'. The layer then runs sharded (under explicit axes its output is typed batch over 'data',
  channels over 'model'), and a jitted SGD step equals one device's and keeps the parameters' shardings."""
  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(axis_type,) * 2)
  x = jax.random.normal(jax.random.key(0), (8, 4, 5, 5))
  target = jax.random.normal(jax.random.key(1), (8, 8, 9, 9))

  def loss(net, x):
    return jnp.mean((net(x) - target) ** 2)

  with jax.set_mesh(mesh), nn.logical_axis_rules(ct.sharding.axis_rules()):
    net = ct.nnx.ConvTranspose2d(4, 8, 3, stride=2, padding=1, logical_axes=True, rngs=nnx.Rngs(0))
    assert net.weight[...].sharding.spec == PartitionSpec(None, "model", None, None)
    assert net.bias[...].sharding.spec == PartitionSpec("model")
    weight, bias = np.asarray(net.weight[...]), np.asarray(net.bias[...])
    xs = jax.device_put(x, jax.sharding.NamedSharding(mesh, PartitionSpec("data")))
    y = nnx.jit(lambda net, x: net(x))(net, xs)
    optimizer = nnx.Optimizer(net, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def step(net, optimizer, x):
      optimizer.update(net, nnx.grad(loss)(net, x))

    step(net, optimizer, xs)
  if axis_type == AxisType.Explicit:
    assert y.sharding.spec == PartitionSpec("data", "model", None, None)
  channels = jax.sharding.NamedSharding(mesh, PartitionSpec(None, "model"))
  assert net.weight[...].sharding.is_equivalent_to(channels, 4)
  assert net.bias[...].sharding.is_equivalent_to(channels.update(spec=PartitionSpec("model")), 1)
  assert_close(y, ct.conv_transpose2d(x, weight, bias, 2, 1))
  one_device = ct.nnx.ConvTranspose2d(4, 8, 3, stride=2, padding=1, rngs=nnx.Rngs(0))
  one_device.weight[...], one_device.bias[...] = weight, bias
  gradients = nnx.grad(loss)(one_device, x)
  assert_close(net.weight[...], weight - 0.1 * gradients.weight[...])
  assert_close(net.bias[...], bias - 0.1 * gradients.bias[...])


def test_bridge_both_ways():
  """`nnx.bridge.ToNNX` of a linen layer and `nnx.bridge.to_linen` of an NNX layer compute the native ones'."""
  x = jax.random.normal(jax.random.key(0), (2, 4, 6, 6))
  linen = ct.Conv2dTranspose(4, 3, 4, 2, "pad", 1, has_bias=True, bias_init="uniform")
  wrapped = nnx.bridge.ToNNX(linen, rngs=nnx.Rngs(0))
  nnx.bridge.lazy_init(wrapped, x)
  params = nnx.to_pure_dict(nnx.state(wrapped, nnx.Param))
  assert_close(wrapped(x), linen.apply({"params": params}, x))

  as_linen = nnx.bridge.to_linen(ct.nnx.ConvTranspose2d, 4, 3, 4, stride=2, padding=1)
  variables = as_linen.init(jax.random.key(0), x)
  weight, bias = variables["params"]["weight"], variables["params"]["bias"]
  weight, bias = (getattr(v, "value", v) for v in (weight, bias))
  assert weight.shape == (4, 3, 4, 4)
  assert_close(as_linen.apply(variables, x), ct.conv_transpose2d(x, weight, bias, 2, 1))
