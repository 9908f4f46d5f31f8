"""The Flax module: MindSpore's constructor and parameters, Flax's dtypes, JAX transformations."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convtranspose as ct
from conftest import FRAMEWORKS, assert_close, build

LAYERS = {1: ct.Conv1dTranspose, 2: ct.Conv2dTranspose, 3: ct.Conv3dTranspose}


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
@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_dtypes(n, framework, input_dtype, dtype, param_dtype, expected_output, expected_param):
  x = jax.random.normal(jax.random.key(2), (1, 2, *(3,) * n)).astype(input_dtype)
  net = build(framework, f"Conv{n}dTranspose", 2, 4, 3, stride=2, has_bias=True, bias_init="uniform", dtype=dtype,
              param_dtype=param_dtype, x=x)
  params = net.params
  assert all(p.dtype == expected_param for p in params.values())
  y = net(x)
  assert y.dtype == expected_output
  reference = jax.jit(functools.partial(ct.conv_transpose, stride=2, precision=jax.lax.Precision.HIGHEST))(
      x.astype(expected_output).astype(jnp.float32),
      params["weight"].reshape(2, 4, *(3,) * n).astype(expected_output).astype(jnp.float32),
      params["bias"].astype(expected_output).astype(jnp.float32))
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


# ---------------------------------------------------------------------------------------------------------
# The family: 1-D and 3-D layers, output_padding, data_format, unbatched inputs.
CHANNELS_LAST = {1: "NLC", 2: "NHWC", 3: "NDHWC"}


@pytest.mark.parametrize(
    "cls, defaults",
    [
        (ct.Conv1dTranspose, ("NCL", "in out kernel_size stride pad_mode padding dilation group has_bias weight_init "
                                     "bias_init output_padding data_format")),
        (ct.Conv2dTranspose, ("NCHW", "in out kernel_size stride pad_mode padding dilation group has_bias "
                                      "weight_init bias_init output_padding data_format")),
        # MindSpore's Conv3dTranspose takes output_padding right after group.
        (ct.Conv3dTranspose, ("NCDHW", "in out kernel_size stride pad_mode padding dilation group output_padding "
                                       "has_bias weight_init bias_init data_format")),
    ],
)
def test_constructor_order_and_defaults(cls, defaults):
  data_format, order = defaults
  fields = [f.name for f in dataclasses.fields(cls) if f.name not in ("parent", "name")]
  names = order.replace("in out", "in_channels out_channels").split()
  assert fields[:len(names)] == names and fields[len(names):] == ["dtype", "param_dtype", "precision", "algorithm",
                                                                  "logical_axes", "padding_mode",
                                                                  "preferred_element_type"]
  net = cls(2, 4, 3)
  assert (net.stride, net.pad_mode, net.padding, net.dilation, net.group, net.output_padding, net.has_bias,
          net.weight_init, net.bias_init, net.data_format) == (1, "same", 0, 1, 1, 0, False, "normal", "zeros",
                                                               data_format)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_module_is_the_function_in_every_layout_and_unbatched(n):
  net = LAYERS[n](4, 6, 3, stride=2, pad_mode="pad", padding=1, dilation=2, group=2, output_padding=1,
                  has_bias=True, bias_init="uniform")
  x = jax.random.normal(jax.random.key(0), (2, 4, *(3,) * n))
  variables = net.init(jax.random.key(1), x)
  params = variables["params"]
  assert params["weight"].shape == (4, 3, *(1,) * (n == 1), *(3,) * n)  # MindSpore's 1-D unit height
  kernel = params["weight"].reshape(4, 3, *(3,) * n)
  expected = ct.conv_transpose(x, kernel, params["bias"], 2, "pad", 1, 2, 2, output_padding=1)
  assert expected.shape == (2, 6, *(8,) * n)  # (3 - 1) * 2 + 5 - 2 + 1
  assert_close(net.apply(variables, x), expected)
  assert_close(net.apply(variables, x[0]), expected[0])  # unbatched
  channels_last = net.clone(data_format=CHANNELS_LAST[n])
  y = channels_last.apply(variables, jnp.moveaxis(x, 1, -1))  # the same parameters serve both layouts
  assert_close(jnp.moveaxis(y, -1, 1), expected)
  assert_close(jnp.moveaxis(channels_last.apply(variables, jnp.moveaxis(x[0], 0, -1)), -1, 0), expected[0])


def test_conv1d_weight_has_mindspores_stored_shape():
  """MindSpore stores a 1-D layer's weight as (C_in, C_out // group, 1, k) and takes weight_init without the
  unit axis."""
  weight = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
  net = ct.Conv1dTranspose(2, 3, 4, stride=2, weight_init=weight)
  x = jax.random.normal(jax.random.key(0), (1, 2, 5))
  params = net.init(jax.random.key(0), x)["params"]
  np.testing.assert_array_equal(params["weight"], weight[:, :, None, :])
  np.testing.assert_array_equal(net.apply({"params": params}, x), ct.conv1d_transpose(x, weight, stride=2))
  assert_close(net.clone(weight_init=weight[:, :, None, :]).apply({"params": params}, x),
               ct.conv1d_transpose(x, weight, stride=2))


def test_conv1d_keeps_a_batch_of_one():
  net = ct.Conv1dTranspose(2, 3, 4, stride=2)
  x = jnp.ones((1, 2, 5))
  assert net.apply(net.init(jax.random.key(0), x), x).shape == (1, 3, 10)


def test_conv3d_depth_dilation_is_allowed():
  net = ct.Conv3dTranspose(1, 1, 2, pad_mode="valid", dilation=(3, 1, 1), weight_init="ones")
  y = net.apply(net.init(jax.random.key(0), jnp.ones((1, 1, 1, 1, 1))), jnp.ones((1, 1, 1, 1, 1)))
  np.testing.assert_array_equal(y[0, 0, :, 0, 0], [1, 0, 0, 1])  # taps 0 and 3 along depth


@pytest.mark.parametrize(
    "cls, kwargs, error, message",
    [
        (ct.Conv1dTranspose, dict(data_format="NCHW"), ValueError, r"`data_format` must be one of \['NCL', 'NLC'\]"),
        (ct.Conv3dTranspose, dict(data_format="NCHW"), ValueError, r"one of \['NCDHW', 'NDHWC'\]"),
        (ct.Conv3dTranspose, dict(output_padding=1), ValueError, r"`output_padding` must be 0 when `pad_mode` is 'same'"),
        (ct.Conv3dTranspose, dict(pad_mode="pad", stride=(1, 2, 1), output_padding=(0, 1, 1)), ValueError,
         r"along spatial dimension 2 \(stride 1, dilation 1\), but got 1"),
        (ct.Conv1dTranspose, dict(pad_mode="pad", padding=(1, 2, 3)), ValueError,
         r"`padding` must be an int or a tuple of 2 ints \(left, right\)"),
        (ct.Conv3dTranspose, dict(pad_mode="pad", padding=(1, 2)), ValueError,
         r"a tuple of 6 ints \(head, tail, top, bottom, left, right\)"),
        (ct.Conv3dTranspose, dict(kernel_size=(1, 2)), TypeError, r"`kernel_size` must be an int or a tuple of 3 ints"),
    ],
)
def test_family_errors_at_construction(cls, kwargs, error, message):
  arguments = dict(in_channels=2, out_channels=2, kernel_size=3) | kwargs
  with pytest.raises(error, match=message):
    cls(**arguments)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bool_and_complex_inputs_raise_and_integers_promote(framework):
  x = jnp.ones((1, 2, 4, 4))
  for name in ("Conv2dTranspose", "ConvTranspose2d"):
    net = build(framework, name, 2, 3, 3, x=x)
    for dtype in (jnp.bool_, jnp.complex64):
      with pytest.raises(TypeError, match=rf"`x` has dtype {jnp.dtype(dtype)}: a transposed convolution takes"):
        net(x.astype(dtype))
    y = net(x.astype(jnp.int32))
    assert y.dtype == jnp.float32
    np.testing.assert_array_equal(y, net(x))


@pytest.mark.parametrize(("name", "argument"), [("Conv2dTranspose", "dtype"), ("Conv2dTranspose", "param_dtype"),
                                                ("ConvTranspose2d", "dtype"), ("ConvTranspose2d", "compute_dtype")])
@pytest.mark.parametrize("dtype", [jnp.bool_, jnp.int32, jnp.complex64, "junk"])
def test_non_floating_dtype_arguments_raise_at_construction(name, argument, dtype):
  with pytest.raises(TypeError, match=rf"`{argument}` must be a floating dtype .* or None, but got"):
    getattr(ct, name)(2, 3, 3, **{argument: dtype})
