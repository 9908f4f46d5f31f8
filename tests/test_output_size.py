"""``output_size``: PyTorch's ``forward(x, output_size)`` on the function and the modules, unbatched too."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import convtranspose as ct
from conftest import assert_close

LAYERS = {1: ct.Conv1dTranspose, 2: ct.Conv2dTranspose, 3: ct.Conv3dTranspose}


@pytest.mark.parametrize(
    "n, kernel, stride, dilation, padding",
    [
        (1, 4, 3, 1, 1),
        (2, (3, 4), (2, 3), (1, 1), (1, 0)),
        (2, 3, 1, 3, 2),  # dilation above the stride: output_padding reaches max(s, d) - 1 = 2
        (3, 3, 2, 1, 1),
    ],
)
def test_every_reachable_size_equals_pytorch(n, kernel, stride, dilation, padding):
  """PyTorch's output_size reaches output_padding up to stride - 1 only; its output_padding argument reaches
  max(stride, dilation) - 1, as ours does, and is the oracle for the rest."""
  rng = np.random.default_rng(n)
  torch_layer = getattr(torch.nn, f"ConvTranspose{n}d")(4, 6, kernel, stride, padding, dilation=dilation, groups=2)
  x = rng.normal(size=(2, 4, *(5,) * n)).astype(np.float32)
  weight = torch_layer.weight.detach().numpy()
  bias = torch_layer.bias.detach().numpy()
  spatial = (padding,) * 2 * n if isinstance(padding, int) else tuple(p for p in padding for _ in range(2))
  natural = ct.conv_transpose_output_shape((5,) * n, kernel, stride, "pad", spatial, dilation)
  extra = max(max(s, d) for s, d in zip(*(np.broadcast_to(v, n) for v in (stride, dilation))))
  for size in range(natural[0], natural[0] + extra):
    target = (size, *natural[1:])
    if any(t - m >= max(s, d) for t, m, s, d in zip(target, natural, np.broadcast_to(stride, n),
                                                    np.broadcast_to(dilation, n))):
      continue
    extra_rows = tuple(t - m for t, m in zip(target, natural))
    expected = getattr(torch.nn.functional, f"conv_transpose{n}d")(
        torch.from_numpy(x), torch_layer.weight, torch_layer.bias, stride, padding, extra_rows, 2,
        dilation).detach().numpy()
    if all(e < s for e, s in zip(extra_rows, np.broadcast_to(stride, n))):  # PyTorch's own output_size range
      np.testing.assert_array_equal(torch_layer(torch.from_numpy(x), output_size=target).detach().numpy(), expected)
    actual = ct.conv_transpose(x, weight, bias, stride, "pad", spatial, dilation, 2, output_size=target)
    assert actual.shape == expected.shape
    assert_close(actual, expected)
    module = LAYERS[n](4, 6, kernel, stride, "pad", spatial, dilation, 2, has_bias=True)
    params = {"weight": weight.reshape(module.init(jax.random.key(0), x)["params"]["weight"].shape), "bias": bias}
    assert_close(module.apply({"params": params}, x, output_size=target), expected)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_unbatched_and_whole_shapes(n):
  """PyTorch #75889 read an unbatched output_size wrongly; here the spatial sizes, a whole batched shape and a
  whole unbatched shape all mean the same, in both layouts."""
  x = jax.random.normal(jax.random.key(0), (2, 3, *(4,) * n))
  weight = jax.random.normal(jax.random.key(1), (3, 5, *(3,) * n))
  spatial = (8,) * n  # natural 7 = (4 - 1) * 2 + 3 - 2, plus one row
  call = functools.partial(ct.conv_transpose, weight=weight, stride=2, pad_mode="pad", padding=1)
  expected = call(x, output_padding=1)
  assert expected.shape == (2, 5, *spatial)
  for size in (spatial, (2, 5, *spatial), 8):
    assert_close(call(x, output_size=size), expected)
  for size in (spatial, (5, *spatial)):
    assert_close(call(x[0], output_size=size), expected[0])
  channels_last = ("NLC", "NHWC", "NDHWC")[n - 1]
  x_last = jnp.moveaxis(x, 1, -1)
  for size in (spatial, (2, *spatial, 5)):
    assert_close(jnp.moveaxis(call(x_last, output_size=size, data_format=channels_last), -1, 1), expected)
  assert_close(jnp.moveaxis(call(x_last[0], output_size=(*spatial, 5), data_format=channels_last), -1, 0),
               expected[0])


def test_module_output_size_under_jit():
  net = ct.Conv2dTranspose(3, 2, 4, stride=2, pad_mode="pad", padding=1)
  x = jnp.ones((1, 3, 5, 5))
  variables = net.init(jax.random.key(0), x)
  apply = jax.jit(net.apply, static_argnames="output_size")
  assert apply(variables, x, output_size=(11, 10)).shape == (1, 2, 11, 10)
  assert apply(variables, x[0], output_size=(11, 11)).shape == (2, 11, 11)


@pytest.mark.parametrize(
    "pad_mode, padding, size, message",
    [
        ("pad", 1, (12, 10), r"`output_size` \(12, 10\) cannot be reached along spatial dimension 0: with pad_mode "
                             r"'pad', stride 2 and dilation 1, an input of spatial shape \(5, 5\) gives lengths in "
                             r"\[10, 11\], but got 12"),
        ("pad", 1, (10, 9), r"along spatial dimension 1: .* in \[10, 11\], but got 9"),
        ("same", 0, (10, 11), r"along spatial dimension 1: with pad_mode 'same', .* in \[10, 10\], but got 11"),
    ],
)
def test_unreachable_sizes_name_the_range(pad_mode, padding, size, message):
  x, weight = jnp.ones((1, 1, 5, 5)), jnp.ones((1, 1, 4, 4))
  with pytest.raises(ValueError, match=message):
    ct.conv2d_transpose(x, weight, None, 2, pad_mode, padding, output_size=size)
  net = ct.Conv2dTranspose(1, 1, 4, 2, pad_mode, padding)
  with pytest.raises(ValueError, match=message):
    net.apply(net.init(jax.random.key(0), x), x, output_size=size)


@pytest.mark.parametrize("size", [[5, 5], [6, 5], [6, 6]])
def test_output_size_decides_over_output_padding_and_may_be_a_list(size):
  """PyTorch's ``forward(x, output_size)`` ignores the layer's ``output_padding`` and takes a list (MindSpore's
  ``mint`` page too); ours raised on both."""
  torch.manual_seed(0)
  torch_layer = torch.nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)
  x = np.random.default_rng(0).normal(size=(2, 4, 3, 3)).astype(np.float32)
  expected = torch_layer(torch.from_numpy(x), output_size=size).detach().numpy()
  assert expected.shape == (2, 6, *size)
  params = {"weight": torch_layer.weight.detach().numpy(), "bias": torch_layer.bias.detach().numpy()}
  module = ct.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1)
  assert_close(module.apply({"params": params}, x, output_size=size), expected)
  nnx_module = ct.nnx.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, rngs=nnx.Rngs(0))
  nnx_module.weight[...], nnx_module.bias[...] = params["weight"], params["bias"]
  assert_close(nnx_module(x, output_size=size), expected)
  assert_close(ct.conv_transpose2d(x, *params.values(), stride=2, padding=1, output_padding=1, output_size=size),
               expected)


def test_same_mode_accepts_its_own_size():
  y = ct.conv2d_transpose(jnp.ones((1, 1, 5, 5)), jnp.ones((1, 1, 4, 4)), None, 2, "same", output_size=(10, 10))
  assert y.shape == (1, 1, 10, 10)
