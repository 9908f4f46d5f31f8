"""``padding_mode``: the adjoint of the forward convolution whose input ``jnp.pad`` pads in that mode."""

import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings

import convtranspose as ct
from conftest import assert_close
from test_functional import ALGORITHMS, apply, forward_conv, forward_padding, layers, random_operands

NUMPY_MODES = {"zeros": "constant", "circular": "wrap", "reflect": "reflect", "replicate": "edge"}
MODES = tuple(NUMPY_MODES)


def padded_forward(layer, z, weight, padding_mode):
  """The forward convolution, written from the definition: crop where MindSpore's padding is negative, pad
  the rest with ``jnp.pad(mode=...)``, convolve without padding, keep the layer's input length."""
  pads = forward_padding(layer["kernel"], layer["stride"], layer["dilation"], layer["pad_mode"], layer["padding"])
  crop = tuple(slice(max(-lo, 0), size - max(-hi, 0)) for (lo, hi), size in zip(pads, z.shape[2:]))
  z = jnp.pad(z[(slice(None), slice(None), *crop)], [(0, 0), (0, 0), *((max(lo, 0), max(hi, 0)) for lo, hi in pads)],
              mode=NUMPY_MODES[padding_mode])
  y = forward_conv(z, weight, layer["stride"], layer["dilation"], [(0, 0)] * layer["n"], layer["group"])
  return y[(slice(None), slice(None), *(slice(0, length) for length in layer["lengths"]))]


def _has_rows_to_pad(layer):
  pads = forward_padding(layer["kernel"], layer["stride"], layer["dilation"], layer["pad_mode"], layer["padding"])
  return all(size - max(-lo, 0) - max(-hi, 0) > 0 for (lo, hi), size in zip(pads, layer["out"]))


@settings(deadline=None, max_examples=30)
@given(layer=layers(), seed=st.integers(0, 2**16), padding_mode=st.sampled_from(MODES),
       algorithm=st.sampled_from(ALGORITHMS))
def test_equals_vjp_of_the_padded_forward_conv(layer, seed, padding_mode, algorithm):
  """Ranks 1-3, every pad_mode but 'valid', asymmetric padding, groups, dilation and output_padding."""
  assume(layer["pad_mode"] != "valid" and _has_rows_to_pad(layer))
  x, weight, z = random_operands(layer, seed)
  conv_z, vjp = jax.vjp(lambda z: padded_forward(layer, z, weight, padding_mode), z)
  assert conv_z.shape == x.shape
  (expected,) = vjp(x)
  actual = apply(layer, x, weight, padding_mode=padding_mode, algorithm=algorithm)
  assert_close(actual, expected)
  np.testing.assert_allclose(jnp.vdot(conv_z, x), jnp.vdot(z, actual), rtol=1e-4,
                             atol=1e-4 * float(jnp.linalg.norm(x) * jnp.linalg.norm(z)))


@settings(deadline=None, max_examples=8)
@given(layer=layers(max_rank=2), seed=st.integers(0, 2**16), padding_mode=st.sampled_from(MODES[1:]))
def test_gradients_equal_those_of_the_reference(layer, seed, padding_mode):
  assume(layer["pad_mode"] != "valid" and _has_rows_to_pad(layer))
  x, weight, z = random_operands(layer, seed)

  def reference(x, weight):
    return jax.vjp(lambda z: padded_forward(layer, z, weight, padding_mode), z)[1](x)[0]

  def loss(fn):
    return lambda x, weight: jnp.sum(fn(x, weight) * z)

  expected = jax.grad(loss(reference), argnums=(0, 1))(x, weight)
  actual = jax.grad(loss(lambda x, w: apply(layer, x, w, padding_mode=padding_mode)), argnums=(0, 1))(x, weight)
  jax.tree.map(assert_close, actual, expected)


@pytest.mark.parametrize("padding_mode", ["circular", "reflect", "replicate"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_equals_pytorch_autograd_of_its_padded_conv(n, padding_mode):
  """A second oracle: PyTorch's forward convolution after ``F.pad(mode=...)``, differentiated by autograd."""
  stride, dilation, padding, group = (2, 1, 3)[:n], (1, 2, 1)[:n], (2, 1, 1, 2, 0, 1)[:2 * n], 2
  kernel, lengths = (3, 2, 4)[:n], (4, 5, 3)[:n]
  rng = np.random.default_rng(n)
  x = rng.normal(size=(2, 4, *lengths)).astype(np.float32)
  weight = rng.normal(size=(4, 3, *kernel)).astype(np.float32)
  ours = ct.conv_transpose(x, weight, None, stride, "pad", padding, dilation, group, output_padding=1,
                           padding_mode=padding_mode, precision="highest")
  z = torch.zeros((2, 6, *ours.shape[2:]), dtype=torch.float64, requires_grad=True)
  torch_pad = tuple(p for i in reversed(range(n)) for p in padding[2 * i:2 * i + 2])  # last dimension first
  conv = getattr(torch.nn.functional, f"conv{n}d")
  forward = conv(torch.nn.functional.pad(z, torch_pad, mode=padding_mode), torch.from_numpy(weight).double(),
                 stride=stride, dilation=dilation, groups=group)
  forward = forward[(slice(None), slice(None), *(slice(0, length) for length in lengths))]
  (expected,) = torch.autograd.grad(forward, z, torch.from_numpy(x).double())
  assert_close(ours, expected.numpy())


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_zeros_is_the_default(algorithm):
  x = jax.random.normal(jax.random.key(0), (2, 3, 5, 4))
  weight = jax.random.normal(jax.random.key(1), (3, 2, 3, 3))
  args = (x, weight, None, 2, "pad", (1, 2, 0, 1))
  np.testing.assert_array_equal(ct.conv2d_transpose(*args, padding_mode="zeros", algorithm=algorithm),
                                ct.conv2d_transpose(*args, algorithm=algorithm))


def test_circular_on_a_periodic_domain_by_hand():
  """k = 3, s = 1, padding (1, 1) on 4 points: the transposed layer spreads each input onto its neighbours
  with wrap-around, so a one-hot at the last point reaches the first (the row right of 3 is row 0)."""
  y = ct.conv1d_transpose(jnp.array([[[0.0, 0.0, 0.0, 1.0]]]), jnp.array([[[1.0, 10.0, 100.0]]]), None, 1, "pad",
                          1, padding_mode="circular")
  np.testing.assert_array_equal(y[0, 0], [100.0, 0.0, 1.0, 10.0])
  reflect = ct.conv1d_transpose(jnp.array([[[1.0, 0.0, 0.0, 0.0]]]), jnp.array([[[1.0, 10.0, 100.0]]]), None, 1,
                                "pad", 1, padding_mode="reflect")
  np.testing.assert_array_equal(reflect[0, 0], [10.0, 101.0, 0.0, 0.0])  # the row left of 0 mirrors row 1


@pytest.mark.parametrize("n", [1, 2, 3])
def test_modules_take_padding_mode(n):
  layer = {1: ct.Conv1dTranspose, 2: ct.Conv2dTranspose, 3: ct.Conv3dTranspose}[n](
      2, 4, 3, stride=2, pad_mode="pad", padding=1, output_padding=1, has_bias=True, bias_init="uniform",
      padding_mode="circular")
  x = jax.random.normal(jax.random.key(0), (2, 2, *(3,) * n))
  variables = layer.init(jax.random.key(1), x)
  params = variables["params"]
  expected = ct.conv_transpose(x, params["weight"].reshape(2, 4, *(3,) * n), params["bias"], 2, "pad", 1,
                               output_padding=1, padding_mode="circular")
  assert_close(layer.apply(variables, x), expected)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(padding_mode="mirror"), ValueError,
         r"`padding_mode` must be one of \['zeros', 'circular', 'reflect', 'replicate'\], but got 'mirror'"),
        (dict(padding_mode=None), ValueError, r"`padding_mode` must be one of .* but got None"),
        (dict(pad_mode="valid", padding_mode="reflect"), ValueError,
         r"`padding_mode` 'reflect' needs padding to act on, but `pad_mode` 'valid' pads nothing"),
    ],
)
def test_padding_mode_is_checked_at_construction(kwargs, error, message):
  with pytest.raises(error, match=message):
    ct.Conv2dTranspose(2, 2, 3, **kwargs)
  with pytest.raises(error, match=message):
    ct.conv2d_transpose(jnp.ones((1, 2, 3, 3)), jnp.ones((2, 2, 3, 3)), **kwargs)

