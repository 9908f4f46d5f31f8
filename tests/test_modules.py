"""The Flax module: MindSpore's constructor and parameters, Flax's dtypes, JAX transformations."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convtranspose as ct
from conftest import assert_close


def test_seed_example():
  net = ct.Conv2dTranspose(3, 64, 4, has_bias=False, weight_init="normal", pad_mode="pad")
  x = jnp.ones((1, 3, 16, 50), jnp.float32)
  variables = net.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, variables) == {"params": {"weight": (3, 64, 4, 4)}}
  y = jax.jit(net.apply)(variables, x)
  assert y.shape == (1, 64, 19, 53)
  assert_close(y, ct.conv2d_transpose(x, variables["params"]["weight"], pad_mode="pad"))


def test_positional_arguments_in_mindspore_order():
  net = ct.Conv2dTranspose(4, 6, (3, 2), (2, 1), "pad", (1, 0, 0, 1), (1, 2), 2, True, "ones", 0.5)
  assert (net.stride, net.pad_mode, net.padding, net.dilation, net.group, net.has_bias) == (
      (2, 1), "pad", (1, 0, 0, 1), (1, 2), 2, True)
  x = jax.random.normal(jax.random.key(1), (2, 4, 5, 5))
  variables = net.init(jax.random.key(0), x)
  params = variables["params"]
  assert params["weight"].shape == (4, 3, 3, 2) and params["bias"].shape == (6,)
  np.testing.assert_array_equal(params["weight"], 1.0)
  np.testing.assert_array_equal(params["bias"], 0.5)
  expected = ct.conv2d_transpose(x, params["weight"], params["bias"], (2, 1), "pad", (1, 0, 0, 1), (1, 2), 2)
  assert_close(net.apply(variables, x), expected)


def test_defaults_are_mindspore_1x():
  net = ct.Conv2dTranspose(2, 3, 3)
  assert (net.stride, net.pad_mode, net.padding, net.dilation, net.group, net.has_bias) == (1, "same", 0, 1, 1, False)
  assert (net.weight_init, net.bias_init) == ("normal", "zeros")
  weight = net.init(jax.random.key(0), jnp.ones((1, 2, 4, 4)))["params"]["weight"]
  assert abs(float(weight.std()) - 0.01) < 0.003  # 54 samples of N(0, 0.01^2)


def test_default_bias_is_zeros():
  params = ct.Conv2dTranspose(2, 3, 3, has_bias=True).init(jax.random.key(0), jnp.ones((1, 2, 4, 4)))["params"]
  np.testing.assert_array_equal(params["bias"], np.zeros(3))


@pytest.mark.parametrize(
    "input_dtype, dtype, param_dtype, expected_output, expected_param",
    [
        (jnp.float32, None, jnp.float32, jnp.float32, jnp.float32),
        (jnp.bfloat16, None, jnp.float32, jnp.float32, jnp.float32),  # promotion, as Flax's layers
        (jnp.bfloat16, jnp.bfloat16, jnp.float32, jnp.bfloat16, jnp.float32),  # mixed precision
        (jnp.float16, None, jnp.float16, jnp.float16, jnp.float16),
        (jnp.float32, jnp.bfloat16, jnp.bfloat16, jnp.bfloat16, jnp.bfloat16),
    ],
)
def test_dtypes(input_dtype, dtype, param_dtype, expected_output, expected_param):
  net = ct.Conv2dTranspose(2, 4, 3, stride=2, has_bias=True, bias_init="uniform", dtype=dtype, param_dtype=param_dtype)
  x = jnp.ones((1, 2, 3, 3), input_dtype)
  variables = net.init(jax.random.key(0), x)
  assert all(p.dtype == expected_param for p in jax.tree.leaves(variables))
  y = net.apply(variables, x)
  assert y.dtype == expected_output
  params = variables["params"]
  reference = ct.conv2d_transpose(x.astype(jnp.float32), params["weight"].astype(expected_output).astype(jnp.float32),
                                  params["bias"].astype(expected_output).astype(jnp.float32), stride=2)
  assert_close(y, reference, expected_output)


def test_gradients_with_respect_to_params_and_input():
  net = ct.Conv2dTranspose(3, 2, 4, stride=2, pad_mode="pad", padding=1, has_bias=True, weight_init="xavier_uniform")
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 4))
  variables = net.init(jax.random.key(1), x)

  def loss(variables, x):
    return jnp.sum(net.apply(variables, x) ** 2)

  grads, grad_x = jax.jit(jax.grad(loss, argnums=(0, 1)))(variables, x)
  params = variables["params"]

  def reference_loss(weight, bias, x):
    return jnp.sum(ct.conv2d_transpose(x, weight, bias, 2, "pad", 1) ** 2)

  expected = jax.grad(reference_loss, argnums=(0, 1, 2))(params["weight"], params["bias"], x)
  assert_close(grads["params"]["weight"], expected[0])
  assert_close(grads["params"]["bias"], expected[1])
  assert_close(grad_x, expected[2])


def test_inside_a_model_with_vmap_and_tabulate():
  class Decoder(nn.Module):
    @nn.compact
    def __call__(self, x):
      x = nn.relu(ct.Conv2dTranspose(8, 4, 4, stride=2, pad_mode="pad", padding=1, has_bias=True, name="up1")(x))
      return ct.Conv2dTranspose(4, 1, 4, stride=2, pad_mode="same", name="up2")(x)

  model = Decoder()
  x = jnp.ones((2, 8, 4, 4))
  variables = model.init(jax.random.key(0), x)
  assert jax.tree.map(jnp.shape, variables["params"]) == {
      "up1": {"weight": (8, 4, 4, 4), "bias": (4,)}, "up2": {"weight": (4, 1, 4, 4)}}
  y = model.apply(variables, x)
  assert y.shape == (2, 1, 16, 16)
  per_example = jax.vmap(lambda xi: model.apply(variables, xi[None])[0])(x)
  assert_close(per_example, y)
  table = nn.tabulate(model, jax.random.key(0), compute_flops=False,
                      console_kwargs=dict(width=200, force_terminal=False))(x)
  assert "Conv2dTranspose" in table and "weight: float32[8,4,4,4]" in table and "float32[2,1,16,16]" in table


def test_eval_shape_of_init_and_apply():
  net = ct.Conv2dTranspose(3, 64, 4, stride=2, pad_mode="same")
  x = jax.ShapeDtypeStruct((4, 3, 16, 16), jnp.float32)
  shapes = jax.eval_shape(net.init, jax.random.key(0), x)
  assert shapes["params"]["weight"].shape == (3, 64, 4, 4)
  assert jax.eval_shape(net.apply, shapes, x).shape == (4, 64, 32, 32)


def test_group_and_depthwise_weight_shapes():
  x = jnp.ones((1, 6, 3, 3))
  assert ct.Conv2dTranspose(6, 4, 3, group=2).init(jax.random.key(0), x)["params"]["weight"].shape == (6, 2, 3, 3)
  assert ct.Conv2dTranspose(6, 6, 3, group=6).init(jax.random.key(0), x)["params"]["weight"].shape == (6, 1, 3, 3)


def test_precision_is_passed_through():
  net = ct.Conv2dTranspose(2, 2, 3, precision=jax.lax.Precision.HIGHEST)
  x = jax.random.normal(jax.random.key(0), (1, 2, 4, 4))
  variables = net.init(jax.random.key(1), x)
  assert "precision=(Precision.HIGHEST, Precision.HIGHEST)" in str(jax.make_jaxpr(net.apply)(variables, x))
