"""The pure function: hand-checked cases, PyTorch, the adjoint and VJP identities, JAX transformations."""

import functools
import re

import chex
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from hypothesis import assume, given, settings
from jax import export, lax

import convtranspose as ct
from conftest import assert_close, standard_normal
from convtranspose import _arguments, functional

# ---------------------------------------------------------------------------------------------------------
# All-ones cases, checkable by hand: each output element counts the (input, kernel tap) pairs that reach it.


@pytest.mark.parametrize(
    "length, kernel, stride, dilation, pad_mode, padding, expected",
    [
        # valid, dk=3 > s=2: out = 2*2 + 3 - 2 = 5; taps of x0 at 0..2, of x1 at 2..4.
        (2, 3, 2, 1, "valid", 0, [1, 1, 2, 1, 1]),
        # same crops dk - s = 1 position, at the high end (floor(1/2) = 0 from the low end): out = 4.
        (2, 3, 2, 1, "same", 0, [1, 1, 2, 1]),
        # same with dk - s = 3: one off the low end, two off the high end of [1, 1, 2, 2, 1, 1, ...].
        (3, 5, 2, 1, "same", 0, [1, 2, 2, 3, 2, 2]),
        # pad (1, 1) crops one from each end of the valid result.
        (2, 3, 2, 1, "pad", (1, 1), [1, 2, 1]),
        # asymmetric pad (0, 2).
        (2, 3, 2, 1, "pad", (0, 2), [1, 1, 2]),
        # dk = 1 < s = 3: valid and same give L * s rows, the last s - dk of each stride are zeros.
        (2, 1, 3, 1, "valid", 0, [1, 0, 0, 1, 0, 0]),
        (2, 1, 3, 1, "same", 0, [1, 0, 0, 1, 0, 0]),
        # dilation 2: taps at 0 and 2, dk = 3, stride 1, valid: out = 2 + 3 - 1 = 4.
        (2, 2, 1, 2, "valid", 0, [1, 1, 1, 1]),
        # padding larger than dk - 1 crops into the signal: valid [1, 1, 2, 1, 1] minus 3 + 1.
        (2, 3, 2, 1, "pad", (3, 1), [1]),
        # cropped to nothing.
        (1, 1, 1, 1, "pad", (1, 0), []),
    ],
)
def test_all_ones_1d(length, kernel, stride, dilation, pad_mode, padding, expected):
  y = ct.conv1d_transpose(jnp.ones((1, 1, length)), jnp.ones((1, 1, kernel)), None, stride, pad_mode, padding,
                          dilation)
  np.testing.assert_array_equal(y[0, 0], np.array(expected, np.float32))


def test_same_bias_reaches_rows_without_input():
  y = ct.conv1d_transpose(jnp.ones((1, 1, 2)), jnp.ones((1, 1, 1)), jnp.array([0.5]), 3, "valid")
  np.testing.assert_array_equal(y[0, 0], [1.5, 0.5, 0.5, 1.5, 0.5, 0.5])


def test_groups_map_weight_row_blocks_to_output_blocks():
  # in=4, out=2, group=2: input channels {0, 1} -> output channel 0 through weight rows 0-1, {2, 3} -> 1.
  x = jnp.arange(1.0, 5.0).reshape(1, 4, 1, 1)
  weight = jnp.array([1.0, 10.0, 100.0, 1000.0]).reshape(4, 1, 1, 1)
  y = ct.conv2d_transpose(x, weight, group=2)
  np.testing.assert_array_equal(y.reshape(2), [1 * 1 + 2 * 10, 3 * 100 + 4 * 1000])


def test_depthwise():
  x = jnp.arange(1.0, 4.0).reshape(1, 3, 1, 1)
  y = ct.conv2d_transpose(x, jnp.full((3, 1, 2, 2), 2.0), stride=2, pad_mode="valid", group=3)
  np.testing.assert_array_equal(y, 2 * jnp.broadcast_to(x, (1, 3, 2, 2)))


def test_2d_padding_order_is_top_bottom_left_right():
  y = ct.conv2d_transpose(jnp.ones((1, 1, 2, 2)), jnp.ones((1, 1, 3, 3)), None, 2, "pad", (0, 2, 1, 0))
  rows, cols = np.array([1, 1, 2]), np.array([1, 2, 1, 1])  # (0, 2) off H, (1, 0) off W of [1, 1, 2, 1, 1]
  np.testing.assert_array_equal(y[0, 0], np.outer(rows, cols))


# ---------------------------------------------------------------------------------------------------------
# An independent reference: the forward convolution, whose adjoint the layer is.


def forward_padding(kernel, stride, dilation, pad_mode, padding):
  """MindSpore's forward-convolution padding per dimension, written from its documentation."""
  pads = []
  for i, (k, s, d) in enumerate(zip(kernel, stride, dilation)):
    dk = d * (k - 1) + 1
    if pad_mode == "same":
      pads.append((max(dk - s, 0) // 2, dk - s - max(dk - s, 0) // 2))
    elif pad_mode == "valid":
      pads.append((0, min(dk - s, 0)))
    else:
      pads.append((padding[2 * i], padding[2 * i + 1]))
  return pads


def forward_conv(z, weight, stride, dilation, pads, group):
  """Ordinary convolution from the transposed layer's output space back to its input space."""
  n = weight.ndim - 2
  spec = "NC" + "DHW"[-n:]
  return lax.conv_general_dilated(z, weight, stride, pads, rhs_dilation=dilation,
                                  dimension_numbers=(spec, "OI" + spec[2:], spec), feature_group_count=group,
                                  precision=lax.Precision.HIGHEST)


def layer_forward(layer, z, weight):
  """The forward convolution the layer is the adjoint of: MindSpore's padding, over the layer's output
  space; with ``output_padding`` that space is longer and the convolution's output is cut to the layer's
  input length (its last outputs would read only the added rows and padding)."""
  pads = forward_padding(layer["kernel"], layer["stride"], layer["dilation"], layer["pad_mode"], layer["padding"])

  @jax.jit
  def forward(z, weight):
    y = forward_conv(z, weight, layer["stride"], layer["dilation"], pads, layer["group"])
    return y[(slice(None), slice(None), *(slice(0, length) for length in layer["lengths"]))]

  return forward(z, weight)


@st.composite
def layers(draw, max_rank=3):
  n = draw(st.integers(1, max_rank))
  group = draw(st.sampled_from([1, 1, 2]))
  in_channels, out_channels = group * draw(st.integers(1, 3)), group * draw(st.integers(1, 3))
  kernel = tuple(draw(st.integers(1, 4)) for _ in range(n))
  stride = tuple(draw(st.integers(1, 3)) for _ in range(n))
  dilation = tuple(draw(st.integers(1, 2)) for _ in range(n))
  pad_mode = draw(st.sampled_from(["same", "valid", "pad"]))
  padding = tuple(draw(st.integers(0, 3)) for _ in range(2 * n)) if pad_mode == "pad" else 0
  output_padding = 0
  if pad_mode == "pad" and draw(st.booleans()):
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
  lengths = tuple(draw(st.integers(1, 5)) for _ in range(n))
  try:
    out = ct.conv_transpose_output_shape(lengths, kernel, stride, pad_mode, padding, dilation,
                                         output_padding=output_padding)
  except ValueError:
    out = (0,)
  assume(min(out) > 0)
  return dict(n=n, group=group, in_channels=in_channels, out_channels=out_channels, kernel=kernel, stride=stride,
              dilation=dilation, pad_mode=pad_mode, padding=padding, output_padding=output_padding, lengths=lengths,
              out=out)


def random_operands(layer, seed, batch=2):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((batch, layer["in_channels"], *layer["lengths"]), np.float32)
  weight = rng.standard_normal((layer["in_channels"], layer["out_channels"] // layer["group"], *layer["kernel"]),
                               np.float32)
  z = rng.standard_normal((batch, layer["out_channels"], *layer["out"]), np.float32)
  return jnp.asarray(x), jnp.asarray(weight), jnp.asarray(z)


ALGORITHMS = ("dilated", "phase", "hybrid")


def apply(layer, x, weight, bias=None, **kwargs):
  """The layer as one jitted program (op by op, each of its operations would be compiled on its own)."""
  return jax.jit(functools.partial(
      ct.conv_transpose, stride=layer["stride"], pad_mode=layer["pad_mode"], padding=layer["padding"],
      dilation=layer["dilation"], group=layer["group"], output_padding=layer["output_padding"],
      precision=lax.Precision.HIGHEST, **kwargs))(x, weight, bias)


@settings(deadline=None, max_examples=40)
@given(layer=layers(), seed=st.integers(0, 2**16), algorithm=st.sampled_from(ALGORITHMS))
def test_adjoint_identity(layer, seed, algorithm):
  """<conv(z, W), x> == <z, conv_transpose(x, W)> for every rank, mode, group and output_padding."""
  x, weight, z = random_operands(layer, seed)
  conv_z = layer_forward(layer, z, weight)
  assert conv_z.shape == x.shape
  lhs = jnp.vdot(conv_z, x)
  rhs = jnp.vdot(z, apply(layer, x, weight, algorithm=algorithm))
  np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-4 * float(jnp.linalg.norm(x) * jnp.linalg.norm(z)))


@settings(deadline=None, max_examples=40)
@given(layer=layers(), seed=st.integers(0, 2**16), algorithm=st.sampled_from(ALGORITHMS))
def test_equals_vjp_of_forward_conv(layer, seed, algorithm):
  x, weight, z = random_operands(layer, seed)
  _, vjp = jax.vjp(lambda z: layer_forward(layer, z, weight), z)
  (expected,) = vjp(x)
  assert_close(apply(layer, x, weight, algorithm=algorithm), expected)


@settings(deadline=None, max_examples=25)
@given(layer=layers(max_rank=2), seed=st.integers(0, 2**16), algorithm=st.sampled_from(ALGORITHMS))
def test_gradients_are_those_of_the_adjoint(layer, seed, algorithm):
  """d/dx and d/dW of <z, conv_transpose(x, W)> equal those of <conv(z, W), x>, computed by JAX's own rules."""
  x, weight, z = random_operands(layer, seed)
  ours = jax.jit(jax.grad(lambda x, w: jnp.vdot(z, apply(layer, x, w, algorithm=algorithm)), argnums=(0, 1)))(
      x, weight)
  theirs = jax.jit(jax.grad(lambda x, w: jnp.vdot(layer_forward(layer, z, w), x), argnums=(0, 1)))(x, weight)
  for a, b in zip(ours, theirs):
    assert_close(a, b)


# ---------------------------------------------------------------------------------------------------------
# PyTorch as a second oracle for explicit padding, dilation and groups (and bias).

TORCH_FUNCTIONS = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
                   3: torch.nn.functional.conv_transpose3d}


def torch_reference(layer, x, weight, bias):
  """PyTorch's transposed convolution; asymmetric padding as an unpadded one cropped (PyTorch pads evenly)."""
  lo_hi = [(layer["padding"][2 * i], layer["padding"][2 * i + 1]) for i in range(layer["n"])]
  symmetric = all(lo == hi for lo, hi in lo_hi)
  y = TORCH_FUNCTIONS[layer["n"]](
      torch.tensor(np.asarray(x)), torch.tensor(np.asarray(weight)),
      None if bias is None else torch.tensor(np.asarray(bias)), stride=layer["stride"],
      padding=tuple(lo for lo, _ in lo_hi) if symmetric else 0, output_padding=layer["output_padding"],
      groups=layer["group"], dilation=layer["dilation"])
  if not symmetric:
    y = y[(slice(None), slice(None), *(slice(lo, y.shape[2 + i] - hi) for i, (lo, hi) in enumerate(lo_hi)))]
  return y.numpy()


@settings(deadline=None, max_examples=35)
@given(layer=layers(), seed=st.integers(0, 2**16), has_bias=st.booleans(), algorithm=st.sampled_from(ALGORITHMS))
def test_pad_mode_matches_pytorch(layer, seed, has_bias, algorithm):
  if layer["pad_mode"] != "pad":
    layer = dict(layer, pad_mode="pad", padding=(0,) * (2 * layer["n"]), output_padding=0)
    layer["out"] = ct.conv_transpose_output_shape(layer["lengths"], layer["kernel"], layer["stride"], "pad", 0,
                                                  layer["dilation"])
  x, weight, _ = random_operands(layer, seed)
  bias = standard_normal(seed + 1, (layer["out_channels"],)) if has_bias else None
  assert_close(apply(layer, x, weight, bias, algorithm=algorithm), torch_reference(layer, x, weight, bias))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize(
    "kernel, stride, dilation, group, padding, output_padding",
    [
        (3, 2, 2, 2, 1, 1),  # dilation and groups with output_padding
        (4, 3, 1, 1, 2, 2),  # output_padding up to stride - 1
        (2, 1, 3, 3, 0, 2),  # output_padding up to dilation - 1 (stride 1)
        (3, 2, 1, 6, 1, 1),  # depthwise
        (5, 2, 2, 1, 3, 0),
    ],
)
def test_grid_matches_pytorch(n, kernel, stride, dilation, group, padding, output_padding, algorithm):
  """A fixed grid, so every rank meets dilation, groups and output_padding whatever hypothesis draws."""
  layer = dict(n=n, group=group, in_channels=6, out_channels=6, kernel=(kernel,) * n, stride=(stride,) * n,
               dilation=(dilation,) * n, pad_mode="pad", padding=(padding,) * (2 * n),
               output_padding=output_padding, lengths=(4,) * n)
  x, weight, _ = random_operands(dict(layer, out=(1,) * n), seed=kernel * 10 + n)
  bias = jnp.linspace(-1.0, 1.0, 6)
  assert_close(apply(layer, x, weight, bias, algorithm=algorithm), torch_reference(layer, x, weight, bias))


@pytest.mark.parametrize("algorithm", ["phase", "hybrid", "auto"])
@pytest.mark.parametrize(
    "n, kernel, stride, dilation, padding, output_padding, out_channels",
    [
        (1, 8, 4, 1, 2, 0, 1),
        (2, 4, 2, 1, 1, 1, 1),
        (2, 5, 2, 1, 2, 1, 3),  # taps leave holes in the phases
        (2, 3, 1, 1, 1, 0, 1),  # stride 1
        (2, 3, 2, 2, 1, 1, 2),  # a dilation sharing the stride's factor: one phase of two holds taps
        (2, 2, 3, 1, 4, 2, 1),  # dk < s, and padding that crops into the signal
        (3, 4, 2, 1, 1, 1, 1),
        (3, 3, 2, 1, 0, 0, 1),
    ],
)
def test_few_output_channels_multiply_first_and_match_pytorch(n, kernel, stride, dilation, padding, output_padding,
                                                               out_channels, algorithm):
  """Output layers (``C_out`` far below ``C_in``) take the phases' col2im product on CPU
  (`convtranspose._phase.padded_convolution`): the program multiplies the input itself as it lies, ``C_in`` = 16
  values per product column (im2col would multiply ``prod(K) * 16``). The value matches PyTorch; the gradients, the JVP and a second
  derivative match JAX's own derivatives of the lhs-dilated reference."""
  layer = dict(n=n, group=1, in_channels=16, out_channels=out_channels, kernel=(kernel,) * n, stride=(stride,) * n,
               dilation=(dilation,) * n, pad_mode="pad", padding=(padding,) * (2 * n), output_padding=output_padding,
               lengths=(5, 4, 3)[:n])
  out = ct.conv_transpose_output_shape(layer["lengths"], kernel, stride, "pad", padding, dilation,
                                       output_padding=output_padding)
  x, weight, z = random_operands(dict(layer, out=out), seed=kernel * 10 + n)
  bias = jnp.linspace(-1.0, 1.0, out_channels)
  ours = functools.partial(apply, layer, algorithm=algorithm)
  assert_close(ours(x, weight, bias), torch_reference(layer, x, weight, bias))

  @functools.partial(jax.jit, static_argnums=0)  # each algorithm's derivatives as one program
  def derivatives(algorithm):
    def loss(x, w):
      return jnp.vdot(z, jnp.sin(apply(layer, x, w, algorithm=algorithm)))
    tangents = (jnp.cos(x), jnp.flip(weight))
    second_order = jax.grad(lambda w: jnp.sum(jax.grad(loss)(x, w) ** 2))(weight)  # d/dW of |d loss / dx|^2
    return (jax.grad(loss, argnums=(0, 1))(x, weight),
            jax.jvp(functools.partial(apply, layer, algorithm=algorithm), (x, weight), tangents), second_order)

  jax.tree.map(assert_close, derivatives(algorithm), derivatives("dilated"))
  if algorithm != "hybrid":  # hybrid's value is the reference's convolution on CPU
    program = _stablehlo(ours, x, weight, platform="cpu")
    # channels-first: the kernel's transpose broadcast to (N, prod(K) * M, 16) times (N, 16, prod(L)), batched
    assert re.search(r"dot_general.*\(tensor<\d+x\d+x16xf32>, tensor<\d+x16x\d+xf32>\)", program), program


# ---------------------------------------------------------------------------------------------------------
# output_padding, layouts and unbatched inputs.


def test_output_padding_rows_hold_convolution_values():
  # x = [1, 1], k = 3 ones, s = 2, pad (1, 1): full result [1, 1, 2, 1, 1] cropped to [1, 2, 1]; one more
  # row at the high end is the full result's next position, 1 (PyTorch: the same), not a zero.
  y = ct.conv1d_transpose(jnp.ones((1, 1, 2)), jnp.ones((1, 1, 3)), None, 2, "pad", 1, output_padding=1)
  np.testing.assert_array_equal(y[0, 0], [1, 2, 1, 1])
  # Beyond the full result, the added row receives no input: zero (plus the bias).
  y = ct.conv1d_transpose(jnp.ones((1, 1, 2)), jnp.ones((1, 1, 3)), jnp.array([0.5]), 2, "pad", 0,
                          output_padding=1)
  np.testing.assert_array_equal(y[0, 0], [1.5, 1.5, 2.5, 1.5, 1.5, 0.5])


CHANNELS_LAST = {1: "NLC", 2: "NHWC", 3: "NDHWC"}
CHANNELS_FIRST = {1: "NCL", 2: "NCHW", 3: "NCDHW"}


@settings(deadline=None, max_examples=20)
@given(layer=layers(), seed=st.integers(0, 2**16), has_bias=st.booleans(), algorithm=st.sampled_from(ALGORITHMS))
def test_every_layout_equals_channels_first(layer, seed, has_bias, algorithm):
  x, weight, _ = random_operands(layer, seed)
  bias = standard_normal(seed + 1, (layer["out_channels"],)) if has_bias else None
  n = layer["n"]
  expected = apply(layer, x, weight, bias, algorithm=algorithm)
  np.testing.assert_array_equal(apply(layer, x, weight, bias, data_format=CHANNELS_FIRST[n], algorithm=algorithm),
                                expected)
  channels_last = apply(layer, jnp.moveaxis(x, 1, -1), weight, bias, data_format=CHANNELS_LAST[n],
                        algorithm=algorithm)
  assert_close(jnp.moveaxis(channels_last, -1, 1), expected)


@settings(deadline=None, max_examples=15)
@given(layer=layers(), seed=st.integers(0, 2**16), channels_last=st.booleans(), algorithm=st.sampled_from(ALGORITHMS))
def test_unbatched_input_is_one_example_of_a_batch(layer, seed, channels_last, algorithm):
  x, weight, _ = random_operands(layer, seed, batch=1)
  data_format = CHANNELS_LAST[layer["n"]] if channels_last else None
  if channels_last:
    x = jnp.moveaxis(x, 1, -1)
  batched = apply(layer, x, weight, data_format=data_format, algorithm=algorithm)
  np.testing.assert_array_equal(apply(layer, x[0], weight, data_format=data_format, algorithm=algorithm), batched[0])


def test_unbatched_under_jit_grad_and_vmap():
  x, weight = jnp.ones((3, 4, 4)), jnp.ones((3, 2, 3, 3))
  fn = jax.jit(functools.partial(ct.conv2d_transpose, stride=2, pad_mode="pad", padding=1, output_padding=1))
  assert fn(x, weight).shape == (2, 8, 8)
  grad = jax.grad(lambda x: fn(x, weight).sum())(x)
  assert_close(grad, jax.grad(lambda x: fn(x[None], weight).sum())(x))
  assert jax.vmap(fn, in_axes=(0, None))(jnp.ones((5, 3, 4, 4)), weight).shape == (5, 2, 8, 8)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_empty_output_in_every_layout(n):
  x, weight, bias = jnp.ones((2, *(1,) * n, 3)), jnp.ones((3, 4, *(1,) * n)), jnp.arange(4.0)
  y = ct.conv_transpose(x, weight, bias, pad_mode="pad", padding=(1, 0) * n, data_format=CHANNELS_LAST[n])
  assert y.shape == (2, *(0,) * n, 4)


# ---------------------------------------------------------------------------------------------------------
# JAX transformations and dtypes.


@pytest.mark.parametrize("transform", [jax.jit, lambda fn: fn], ids=["jit", "eager"])
def test_jit_and_eager_match_the_vjp(transform):
  x = jax.random.normal(jax.random.key(0), (2, 4, 5, 6))
  weight = jax.random.normal(jax.random.key(1), (4, 3, 3, 2))
  fn = functools.partial(ct.conv2d_transpose, stride=(2, 3), pad_mode="pad", padding=(1, 0, 2, 1), dilation=(1, 2))
  y = transform(fn)(x, weight)
  pads = [(1, 0), (2, 1)]
  _, vjp = jax.vjp(lambda z: forward_conv(z, weight, (2, 3), (1, 2), pads, 1), jnp.zeros(y.shape))
  assert_close(y, vjp(x)[0])


def test_jit_compiles_once_per_shape():
  fn = ct.conv2d_transpose
  counted = chex.assert_max_traces(lambda x, w: fn(x, w, stride=2), n=1)
  jitted = jax.jit(counted)
  for seed in range(3):
    jitted(jax.random.normal(jax.random.key(seed), (1, 2, 3, 3)), jnp.ones((2, 2, 2, 2)))


def test_vmap_over_an_extra_batch_axis():
  x = jax.random.normal(jax.random.key(0), (5, 2, 3, 4, 4))
  weight = jax.random.normal(jax.random.key(1), (3, 2, 3, 3))
  fn = functools.partial(ct.conv2d_transpose, stride=2, pad_mode="same")
  batched = jax.vmap(fn, in_axes=(0, None))(x, weight)
  assert_close(batched.reshape(10, 2, 8, 8), fn(x.reshape(10, 3, 4, 4), weight))


def test_vmap_over_weights():
  x = jax.random.normal(jax.random.key(0), (2, 3, 4, 4))
  weights = jax.random.normal(jax.random.key(1), (4, 3, 2, 3, 3))
  batched = jax.vmap(lambda w: ct.conv2d_transpose(x, w, stride=2))(weights)
  for i in range(4):
    assert_close(batched[i], ct.conv2d_transpose(x, weights[i], stride=2))


def test_eval_shape_needs_no_computation():
  x = jax.ShapeDtypeStruct((8, 3, 16, 50), jnp.bfloat16)
  weight = jax.ShapeDtypeStruct((3, 64, 4, 4), jnp.bfloat16)
  out = jax.eval_shape(functools.partial(ct.conv2d_transpose, pad_mode="pad"), x, weight)
  assert out.shape == (8, 64, 19, 53) and out.dtype == jnp.bfloat16


def test_grad_through_bias():
  x = jnp.ones((1, 1, 2, 2))
  grad = jax.grad(lambda b: ct.conv2d_transpose(x, jnp.ones((1, 3, 2, 2)), b, stride=2).sum())(jnp.zeros(3))
  np.testing.assert_array_equal(grad, [16.0, 16.0, 16.0])  # each bias element reaches 4 x 4 outputs


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
def test_low_precision_inputs(dtype):
  x = jax.random.normal(jax.random.key(0), (2, 4, 5, 5))
  weight = 0.2 * jax.random.normal(jax.random.key(1), (4, 3, 3, 3))
  y = ct.conv2d_transpose(x.astype(dtype), weight.astype(dtype), stride=2, pad_mode="pad", padding=1)
  assert y.dtype == dtype
  exact = ct.conv2d_transpose(x.astype(dtype).astype(jnp.float32), weight.astype(dtype).astype(jnp.float32), stride=2,
                              pad_mode="pad", padding=1, precision=lax.Precision.HIGHEST)
  assert_close(y, exact, dtype)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16])
@pytest.mark.parametrize(("n", "stride", "kernel"), [(1, 4, 8), (1, 1, 3), (2, 2, 3), (2, 2, 4), (3, 2, 3)])
def test_low_precision_is_rounded_once_from_a_float32_sum(n, stride, kernel, dtype, algorithm):
  """Narrow inputs are multiplied exactly and summed in float32, then rounded once: against PyTorch in float64
  on the same values, the error is half a unit in the last place of the result plus float32 rounding of the
  sum of |terms| (PyTorch's transposed convolution of |x| and |W|), and no more."""
  x = jax.random.normal(jax.random.key(n), (2, 32, *(6,) * n)).astype(dtype)
  weight = (0.2 * jax.random.normal(jax.random.key(kernel), (32, 16, *(kernel,) * n))).astype(dtype)
  y = ct.conv_transpose(x, weight, None, stride, "pad", 1, algorithm=algorithm)
  assert y.dtype == dtype
  exact, absolute = (TORCH_FUNCTIONS[n](torch.tensor(np.asarray(a, np.float64)), torch.tensor(np.asarray(w, np.float64)),
                                        stride=stride, padding=1).numpy()
                     for a, w in ((x, weight), (jnp.abs(x), jnp.abs(weight))))
  half_unit = np.abs(exact) * 2.0 ** -(jnp.finfo(dtype).nmant + 1)
  np.testing.assert_array_less(np.abs(np.asarray(y, np.float64) - exact), half_unit + 2.0**-20 * absolute + 1e-30)


def test_low_precision_products_accumulate_in_float32_on_cpu():
  """What puts bf16 products on the CPU's matrix units (`convtranspose._phase.valid_convolution`): bf16
  operands, an f32 result, in the program JAX hands to XLA for the CPU."""
  x, weight = jnp.ones((2, 8, 5, 5), jnp.bfloat16), jnp.ones((8, 4, 4, 4), jnp.bfloat16)
  program = _stablehlo(functools.partial(ct.conv2d_transpose, stride=2, pad_mode="pad", padding=1), x, weight,
                       platform="cpu")
  assert re.search(r"dot_general.*\(tensor<\d+x\d+xbf16>, tensor<\d+x\d+xbf16>\) -> tensor<\d+x\d+xf32>",
                   program)


def test_mixed_dtypes_promote():
  y = ct.conv2d_transpose(jnp.ones((1, 1, 2, 2), jnp.bfloat16), jnp.ones((1, 1, 2, 2), jnp.float32))
  assert y.dtype == jnp.float32


def test_zero_batch_and_zero_length_inputs():
  weight, bias = jnp.ones((2, 3, 3, 3)), jnp.arange(3.0)
  assert ct.conv2d_transpose(jnp.ones((0, 2, 4, 4)), weight, bias, stride=2).shape == (0, 3, 8, 8)
  y = ct.conv2d_transpose(jnp.ones((1, 2, 0, 4)), weight, bias, stride=2, pad_mode="valid")
  assert y.shape == (1, 3, 1, 9)  # 0 * 2 + max(3 - 2, 0) rows that no input reaches: bias only
  np.testing.assert_array_equal(y, jnp.broadcast_to(bias.reshape(1, 3, 1, 1), y.shape))


# ---------------------------------------------------------------------------------------------------------
# Errors at call time.


@pytest.mark.parametrize("shape", [(8, 8), (8,)])
def test_wrong_input_rank(shape):
  with pytest.raises(ValueError, match=r"`x` must have 4 dimensions .* 3 without N .* got shape " +
                     re.escape(str(shape))):
    ct.conv2d_transpose(jnp.ones(shape), jnp.ones((3, 2, 2, 2)))


@pytest.mark.parametrize("channels_last", [False, True])
def test_several_leading_batch_axes_as_flax_takes_them(channels_last):
  """Flax's layers take ``(*batch, *spatial, features)`` (its own tests feed ``(2, 5, 8, 3)`` to a 1-D layer);
  so do ours, in both layouts, the function and the modules, ``output_size`` a whole shape included. PyTorch,
  given the batch axes flattened, is the oracle."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 5, 8, 3) if channels_last else (2, 5, 3, 8)).astype(np.float32)
  weight, bias = rng.normal(size=(3, 4, 3)).astype(np.float32), rng.normal(size=(4,)).astype(np.float32)
  flat = torch.from_numpy(x.reshape(10, *x.shape[2:]))
  expected = torch.nn.functional.conv_transpose1d(flat.transpose(1, 2) if channels_last else flat,
                                                  torch.from_numpy(weight), torch.from_numpy(bias), stride=2,
                                                  padding=1, output_padding=1).numpy()  # (10, 4, L)
  if channels_last:
    expected = expected.transpose(0, 2, 1)
  expected = expected.reshape(2, 5, *expected.shape[1:])
  data_format = "NLC" if channels_last else None
  y = ct.conv_transpose1d(x, weight, bias, stride=2, padding=1, output_padding=1, data_format=data_format)
  assert_close(y, expected)
  assert_close(ct.conv_transpose1d(x, weight, bias, stride=2, padding=1, data_format=data_format,
                                   output_size=expected.shape), expected)
  module = ct.ConvTranspose1d(3, 4, 3, stride=2, padding=1, output_padding=1, data_format=data_format)
  assert_close(module.apply({"params": {"weight": weight, "bias": bias}}, x), expected)
  layer = ct.nnx.ConvTranspose1d(3, 4, 3, stride=2, padding=1, output_padding=1, data_format=data_format,
                                 rngs=nnx.Rngs(0))
  layer.weight[...], layer.bias[...] = weight, bias
  assert_close(layer(x), expected)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_preferred_element_type_sums_bfloat16_products_in_float32(algorithm):
  """Flax NNX's ``preferred_element_type``: bfloat16 operands, a float32 result, their products summed in
  float32; float64 PyTorch on the same bfloat16 values is the oracle, at float32's rounding (a bfloat16
  result is off by bfloat16's)."""
  rng = np.random.default_rng(0)
  x, weight = (jnp.asarray(rng.normal(size=shape), jnp.bfloat16) for shape in ((2, 16, 6, 6), (16, 8, 3, 3)))
  expected = torch.nn.functional.conv_transpose2d(*(torch.from_numpy(np.asarray(a, np.float64)) for a in (x, weight)),
                                                  stride=2, padding=1, output_padding=1).numpy()
  call = functools.partial(ct.conv_transpose2d, x, weight, stride=2, padding=1, output_padding=1, algorithm=algorithm)
  y = call(preferred_element_type=jnp.float32)
  assert y.dtype == jnp.float32
  np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
  assert call().dtype == jnp.bfloat16
  assert np.max(np.abs(np.asarray(call(), np.float64) - expected)) > 1e-3  # bfloat16's rounding, for contrast
  layer = ct.nnx.ConvTranspose2d(16, 8, 3, stride=2, padding=1, output_padding=1, bias=False, dtype=jnp.bfloat16,
                                 preferred_element_type=jnp.float32, algorithm=algorithm, rngs=nnx.Rngs(0))
  layer.weight[...] = weight
  np.testing.assert_allclose(layer(x), expected, rtol=1e-5, atol=1e-5)
  legacy = ct.Conv2dTranspose(16, 8, 3, 2, "pad", 1, output_padding=1, param_dtype=jnp.bfloat16,
                              preferred_element_type=jnp.float32, algorithm=algorithm)
  np.testing.assert_allclose(legacy.apply({"params": {"weight": weight}}, x), expected, rtol=1e-5, atol=1e-5)
  with pytest.raises(TypeError, match="`preferred_element_type` must be a floating dtype"):
    ct.nnx.ConvTranspose2d(16, 8, 3, preferred_element_type=jnp.int32, rngs=nnx.Rngs(0))


def test_wrong_channel_count():
  with pytest.raises(ValueError, match=r"`x` has 5 channels \(axis 1 of its shape \(1, 5, 8, 8\)\), .* expects C_in = 3"):
    ct.conv2d_transpose(jnp.ones((1, 5, 8, 8)), jnp.ones((3, 2, 2, 2)))
  with pytest.raises(ValueError, match=r"`x` has 2 channels \(axis 0 of its shape \(2, 4, 4\)\), "):  # unbatched
    ct.conv2d_transpose(jnp.ones((2, 4, 4)), jnp.ones((3, 2, 2, 2)))


@pytest.mark.parametrize("name", ["x", "weight", "bias"])
@pytest.mark.parametrize("dtype", [jnp.bool_, jnp.complex64])
def test_bool_and_complex_operands_raise(name, dtype):
  """A bool convolution would be XLA's OR of ANDs (a count of 1 2 3 comes back all True); MindSpore and PyTorch
  refuse bool and complex operands, and so does every function here."""
  operands = dict(x=jnp.ones((1, 1, 4, 4)), weight=jnp.ones((1, 1, 3, 3)), bias=jnp.ones((1,)))
  operands[name] = operands[name].astype(dtype)
  message = rf"`{name}` has dtype {jnp.dtype(dtype)}: a transposed convolution takes floating operands"
  for function in (ct.conv2d_transpose, ct.conv_transpose2d):
    with pytest.raises(TypeError, match=message):
      function(operands["x"], operands["weight"], operands["bias"])


def test_integer_operands_are_promoted_to_the_floating_one():
  x = jax.random.randint(jax.random.key(0), (1, 2, 4, 4), -3, 4)
  weight = jax.random.normal(jax.random.key(1), (2, 3, 3, 3), jnp.bfloat16)
  y = ct.conv2d_transpose(x, weight, stride=2)
  assert y.dtype == jnp.bfloat16
  np.testing.assert_array_equal(y, ct.conv2d_transpose(x.astype(jnp.bfloat16), weight, stride=2))
  with pytest.raises(TypeError, match=r"operands are all integers \(`x` int32, `weight` int32\)"):
    ct.conv2d_transpose(x, jnp.ones((2, 3, 3, 3), jnp.int32))


def test_wrong_weight_rank_for_2d():
  with pytest.raises(ValueError, match=r"`weight` must have 4 dimensions"):
    ct.conv2d_transpose(jnp.ones((1, 3, 8)), jnp.ones((3, 2, 2)))


def test_group_must_divide_weight_rows():
  with pytest.raises(ValueError, match=r"`group` \(=2\) must divide C_in"):
    ct.conv2d_transpose(jnp.ones((1, 3, 4, 4)), jnp.ones((3, 2, 2, 2)), group=2)


def test_bias_shape():
  with pytest.raises(ValueError, match=r"`bias` must have shape \(C_out,\) = \(4,\)"):
    ct.conv2d_transpose(jnp.ones((1, 2, 4, 4)), jnp.ones((2, 2, 2, 2)), jnp.ones(2), group=2)


def test_negative_output_names_the_dimension():
  with pytest.raises(ValueError, match=r"spatial dimension 1 would be negative: .* = 2 \* 1 \+ 2 - 1 - \(3 \+ 3\) = -3"):
    ct.conv2d_transpose(jnp.ones((1, 1, 4, 2)), jnp.ones((1, 1, 2, 2)), pad_mode="pad", padding=(0, 0, 3, 3))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(output_padding=1), ValueError, r"`output_padding` must be 0 when `pad_mode` is 'same'"),
        (dict(pad_mode="pad", output_padding=2), ValueError,
         r"`output_padding` must be in \[0, max\(stride, dilation\)\) = \[0, 2\) along spatial dimension 0 "
         r"\(stride 2, dilation 1\), but got 2"),
        (dict(pad_mode="pad", output_padding=(0, -1)), ValueError, r"`output_padding` must contain ints >= 0"),
        (dict(pad_mode="pad", output_padding=(1, 1, 1)), TypeError, r"`output_padding` must be an int or a tuple of 2"),
        (dict(pad_mode="pad", output_padding=1.0), TypeError, r"`output_padding` must be an int or a tuple of 2"),
        (dict(data_format="NLC"), ValueError, r"`data_format` must be one of \['NCHW', 'NHWC'\] for 2 spatial"),
        (dict(data_format="nhwc"), ValueError, r"`data_format` must be one of \['NCHW', 'NHWC'\]"),
        (dict(data_format=1), TypeError, r"`data_format` must be a str"),
    ],
)
def test_output_padding_and_data_format_errors(kwargs, error, message):
  with pytest.raises(error, match=message):
    ct.conv2d_transpose(jnp.ones((1, 1, 4, 4)), jnp.ones((1, 1, 3, 3)), stride=2, **kwargs)


def test_output_padding_may_reach_the_dilation():
  """``output_padding < max(stride, dilation)``: with dilation 3 and stride 1, up to 2 rows (as PyTorch)."""
  y = ct.conv1d_transpose(jnp.ones((1, 1, 2)), jnp.ones((1, 1, 2)), None, 1, "pad", 0, 3, output_padding=2)
  np.testing.assert_array_equal(y[0, 0], [1, 1, 0, 1, 1, 0, 0])


def test_channels_last_wrong_channel_count_names_the_axis():
  """Unbatched, the message names the shape and axis the caller passed."""
  with pytest.raises(ValueError, match=r"`x` has 4 channels \(axis 2 of its shape \(5, 5, 4\)\)"):
    ct.conv2d_transpose(jnp.ones((5, 5, 4)), jnp.ones((3, 2, 2, 2)), data_format="NHWC")
  with pytest.raises(ValueError, match=r"`x` has 4 channels \(axis 3 of its shape \(1, 5, 5, 4\)\)"):
    ct.conv2d_transpose(jnp.ones((1, 5, 5, 4)), jnp.ones((3, 2, 2, 2)), data_format="NHWC")


# ---------------------------------------------------------------------------------------------------------
# Algorithm selection.


def _exported(fn, *args, platforms: tuple[str, ...]) -> export.Exported:
  """``fn`` jitted and lowered for ``platforms`` (`jax.export` lowers for any platform on any host)."""
  shapes = [jax.ShapeDtypeStruct(np.shape(a), jnp.result_type(a)) for a in args]
  return export.export(jax.jit(fn), platforms=platforms)(*shapes)


def _stablehlo(fn, *args, platform: str) -> str:
  return _exported(fn, *args, platforms=(platform,)).mlir_module()


def test_auto_picks_the_phase_decomposition_for_strides_on_cpu():
  x, weight = jnp.ones((1, 2, 4, 4)), jnp.ones((2, 3, 4, 4))
  layer = functools.partial(ct.conv2d_transpose, stride=2, pad_mode="pad", padding=1)
  assert "lhs_dilate" not in _stablehlo(layer, x, weight, platform="cpu")
  assert "lhs_dilate = [2, 2]" in _stablehlo(functools.partial(layer, algorithm="dilated"), x, weight, platform="cpu")


# What XLA hands to cuDNN's backward-data kernel (the reading of XLA's GPU convolution rewriter): the
# kernel reversed in-graph over every spatial dimension, then a stride-1 convolution of the lhs-dilated input
# with non-negative padding, no window dilation and one feature group.
_REVERSE = re.compile(r"(%\S+) = stablehlo\.reverse %arg1, dims = \[2, 3\]")
_CUDNN_BACKWARD_DATA = re.compile(r"stablehlo\.convolution\(%\S+, (%\S+)\) dim_numbers = [^=]+, "
                                  r"window = \{pad = \[\[\d+, \d+\], \[\d+, \d+\]\], lhs_dilate = \[2, 2\]\} "
                                  r"\{batch_group_count = 1 : i64, feature_group_count = 1 : i64\}")


@pytest.mark.parametrize("platform", ["cuda", "rocm"])
@pytest.mark.parametrize("data_format", ["NCHW", "NHWC"])
def test_gpu_programs_are_the_phases_for_auto_and_cudnns_pattern_for_dilated(platform, data_format):
  """Chosen per platform at lowering (`lax.platform_dependent`), not from this host's default backend. `auto`'s
  GPU forward pass is the phases' (an H100 timed it at 0.24-0.57x the lhs-dilated program at stride 2): a
  convolution of the undilated input. `'dilated'` is the reference, in the caller's layout, shaped for cuDNN's
  backward-data kernel."""
  x = jnp.ones((2, 8, 5, 5) if data_format == "NCHW" else (2, 5, 5, 8))
  layer = functools.partial(ct.conv2d_transpose, stride=2, pad_mode="pad", padding=1, data_format=data_format)
  module = _stablehlo(layer, x, jnp.ones((8, 4, 4, 4)), platform=platform)
  assert "stablehlo.convolution" in module and "lhs_dilate" not in module, module
  module = _stablehlo(functools.partial(layer, algorithm="dilated"), x, jnp.ones((8, 4, 4, 4)), platform=platform)
  reversed_kernel = _REVERSE.search(module)
  convolution = _CUDNN_BACKWARD_DATA.search(module)
  assert reversed_kernel and convolution, module
  assert convolution.group(1) == reversed_kernel.group(1)
  assert "stablehlo.dot_general" not in module and "stablehlo.transpose" not in module


def test_an_export_for_cpu_and_gpu_computes_the_layer_on_cpu():
  """One exported program for both platforms; run here, it takes the CPU branch, bit for bit."""
  x = jax.random.normal(jax.random.key(0), (2, 8, 5, 5))
  weight = jax.random.normal(jax.random.key(1), (8, 4, 3, 3))
  layer = jax.jit(functools.partial(ct.conv2d_transpose, stride=2, pad_mode="pad", padding=1, output_padding=1))
  exported = _exported(layer, x, weight, platforms=("cpu", "cuda"))
  assert exported.platforms == ("cpu", "cuda")
  np.testing.assert_array_equal(exported.call(x, weight), layer(x, weight))


# The custom call behind `_phase._interleave_batch_minor`'s layout pin on TPU; XLA implements it, but `jax.export`
# vouches only for the targets it lists, so an export that includes TPU names it.
TPU_LAYOUT_PIN = export.DisabledSafetyCheck.custom_call("LayoutConstraint")


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("algorithm", ["auto", "autotune", *ALGORITHMS])
def test_an_export_with_symbolic_batch_and_spatial_sizes_computes_the_layer(n, algorithm):
  """`jax.export` with a symbolic batch and symbolic spatial sizes, for every platform at once: the algorithm
  rule reads sizes it cannot compare as unknown (it raised `InconclusiveDimensionOperation` on ``'b' >= '8'``).
  Called here at two batch sizes and two input sizes, it equals the direct call, bit for bit (the CPU branch; to
  float rounding for ``'autotune'``, whose direct call measures the layer and may take another formulation)."""
  weight = jax.random.normal(jax.random.key(1), (4, 3, *(3,) * n))
  layer = functools.partial(ct.conv_transpose, weight=weight, stride=2, pad_mode="pad", padding=1,
                            output_padding=1, algorithm=algorithm)
  shape = export.symbolic_shape(", ".join(["b", "4", *(f"l{axis}" for axis in range(n))]))
  exported = export.export(jax.jit(layer), platforms=("cpu", "cuda", "tpu"), disabled_checks=[TPU_LAYOUT_PIN])(
      jax.ShapeDtypeStruct(shape, jnp.float32))
  for batch, length in ((1, 5), (3, 4)):
    x = jax.random.normal(jax.random.key(batch), (batch, 4, *(length,) * n))
    y = exported.call(x)
    assert y.shape == (batch, 3, *(2 * length,) * n)
    direct = jax.jit(layer)(x)  # one program (op by op, every operation would be compiled on its own)
    if algorithm == "autotune":
      assert_close(y, direct)
    else:
      np.testing.assert_array_equal(y, direct)


def test_phase_gradients_equal_dilated_gradients_in_a_module():
  x = jax.random.normal(jax.random.key(0), (2, 4, 5, 5))
  layers = [ct.Conv2dTranspose(4, 6, 3, 2, "pad", (1, 0, 2, 1), (1, 2), 2, True, "he_normal", "uniform", (1, 1),
                               algorithm=algorithm) for algorithm in ALGORITHMS]
  variables = layers[0].init(jax.random.key(1), x)
  grads = [jax.grad(lambda v, x, layer=layer: jnp.sum(jnp.sin(layer.apply(v, x))), argnums=(0, 1))(variables, x)
           for layer in layers]
  jax.tree.map(assert_close, grads[1], grads[0])


@pytest.mark.exhaustive  # the fast tier: tests/test_tuning.py's every pair of choices, hybrid's among them
@settings(deadline=None, max_examples=12)
@given(layer=layers(), seed=st.integers(0, 2**16))
def test_hybrid_is_dilated_as_a_value_and_phase_under_differentiation(layer, seed):
  """'hybrid' returns the reference's very numbers when not differentiated (at stride 1 the phases': its CPU
  form there is the phases' value with the reference's derivatives); its derivatives, in forward and reverse
  mode and of second order, equal both the phase decomposition's and the reference's."""
  x, weight, z = random_operands(layer, seed)

  def layer_of(algorithm):
    return functools.partial(apply, layer, algorithm=algorithm)

  def loss_of(algorithm):
    return lambda x, w: jnp.vdot(z, jnp.sin(layer_of(algorithm)(x, w)))

  def second_order(algorithm):  # d/dW of |d loss / dx|^2
    return jax.grad(lambda w: jnp.sum(jax.grad(loss_of(algorithm))(x, w) ** 2))(weight)

  @functools.partial(jax.jit, static_argnums=0)
  def derivatives(algorithm, tangents):  # one program per algorithm: forward mode, reverse mode, second order
    return (jax.jvp(layer_of(algorithm), (x, weight), tangents), jax.grad(loss_of(algorithm), (0, 1))(x, weight),
            second_order(algorithm))

  value = "phase" if all(s == 1 for s in layer["stride"]) else "dilated"
  np.testing.assert_array_equal(jax.jit(layer_of("hybrid"))(x, weight), jax.jit(layer_of(value))(x, weight))
  tangents = standard_normal(seed, x.shape), jnp.flip(weight)
  hybrid = derivatives("hybrid", tangents)
  for algorithm in ("phase", "dilated"):
    jax.tree.map(assert_close, hybrid, derivatives(algorithm, tangents))


@pytest.mark.parametrize(("n", "kernel", "stride", "dilation", "group", "channels", "expected"), [
    (2, 3, 2, 1, 1, (128, 128), "hybrid"),  # taps leave holes in the phases, C_in >= C_out
    (2, 5, 2, 1, 1, (128, 64), "hybrid"),
    (2, 3, (2, 1), 1, 1, (128, 128), "hybrid"),  # one dimension with holes suffices
    (2, 3, 2, 1, 1, (64, 128), "phase"),  # more output channels (8x64->256 32x32 k3 s2: 89 vs 70 ms forward)
    (2, 4, 2, 1, 1, (256, 128), "phase"),  # the taps tile the phases
    (2, 2, 2, 2, 1, (128, 128), "hybrid"),  # taps 0 and 2 both in phase 0: phase 1 all zeros
    (2, 2, 2, 3, 1, (128, 128), "hybrid"),  # taps 0 and 3: phase kernels of two slots, one zero each
    (2, 4, 2, 3, 1, (128, 128), "hybrid"),  # taps 0, 3, 6, 9: five slots per phase for two taps
    (2, 4, 2, 1, 1, (8, 8), "phase"),
    (2, 3, 2, 1, 2, (8, 8), "phase"),  # groups: measured only ungrouped
    (1, 3, 2, 1, 1, (128, 64), "phase"),  # one dimension: the phases are faster
    (3, 3, 2, 1, 1, (32, 16), "phase"),  # three: XLA's lhs-dilated convolution is a naive loop on CPU
    (2, 3, 1, 1, 1, (8, 8), "dilated"),  # stride 1: nothing to decompose
    # Few output channels: the phases' col2im product moves fewer values than the input has channels.
    (2, 4, 2, 1, 1, (64, 1), "phase"),  # 2 * 2 phases x 1 channel < 64
    (2, 3, 2, 1, 1, (128, 3), "phase"),  # 12 < 128: not 'hybrid', though the taps leave holes
    (2, 5, 2, 1, 1, (64, 3), "phase"),
    (2, 4, 2, 1, 1, (32, 8), "phase"),  # 32 columns, not fewer than 32 channels: the rule for the rest
    (2, 3, 2, 1, 1, (64, 16), "hybrid"),  # 64 columns, a patch row of 256
    (1, 8, 4, 1, 1, (64, 1), "phase"),
    (3, 4, 2, 1, 1, (32, 1), "phase"),
    (2, 3, 1, 1, 1, (64, 1), "phase"),  # stride 1: 9 taps x 1 channel < 64, vs XLA's convolution
    (2, 7, 1, 1, 1, (32, 3), "dilated"),  # stride 1: 49 taps x 3 channels > 32
    (2, 3, 2, 1, 2, (64, 2), "phase"),  # groups: the rule for the rest
    (2, 3, 2, 1, 1, (16, 8), "phase"),  # holes, but a patch row of 2 * 2 taps x 16 channels < 256 values
])
def test_auto_on_cpu(n, kernel, stride, dilation, group, channels, expected):
  """The rule `functional._choose_algorithm` derives from ``benchmarks/algorithms.py``, as a table (the
  accelerators' rules: tests/test_accelerator_programs.py)."""
  geometry = _arguments.geometry(n, kernel, stride, "pad", 0, dilation, group)
  assert functional._choose_algorithm("auto", geometry, *channels, jnp.float32, platform="cpu") == expected
  assert functional._choose_algorithm("phase", geometry, *channels, jnp.float32, platform="gpu") == "phase"


@pytest.mark.parametrize("spatial, work, expected", [
    ((4, 4), 25 / 16, "hybrid"),  # the phases cover 5x5 rows of a 4x4 input: XLA's dilated forward pass
    ((8, 8), 81 / 64, "hybrid"),
    ((16, 16), 289 / 256, "phase"),
    ((32, 32), 33 ** 2 / 32 ** 2, "phase"),
])
def test_auto_on_cpu_takes_the_reference_value_where_the_phases_cover_many_more_rows(spatial, work, expected):
  """k4 s2 p1, whose taps tile the phases: with ``Q = L + 1`` rows per phase, the phase product does
  ``((L + 1) / L) ** 2`` times the layer's multiply-adds; at 1.2x or more `'hybrid'` keeps the dilated value."""
  geometry = _arguments.geometry(2, 4, 2, "pad", 1, 1, 1)
  assert geometry.phase_work() == 1.0
  assert geometry.phase_work(spatial) == pytest.approx(work)
  assert functional._choose_algorithm("auto", geometry, 256, 128, jnp.float32, "cpu", 32, spatial) == expected
  # the phases' product on the matrix units; more output channels than input
  assert functional._choose_algorithm("auto", geometry, 256, 128, jnp.bfloat16, "cpu", 32, spatial) == "phase"
  assert functional._choose_algorithm("auto", geometry, 128, 256, jnp.float32, "cpu", 32, spatial) == "phase"


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_auto_on_cpu_at_stride_one_takes_the_phase_value_where_its_product_fits(dtype):
  """Few output channels at stride 1, too many taps for `'phase'`'s rule: `'hybrid'` (the phases' col2im value,
  the reference's derivatives) while the product, ``N * prod(L) * prod(K) * C_out`` values of its accumulation
  type (float32 for bf16), stays within glibc's 32 MiB mmap threshold, else `'dilated'`."""
  geometry = _arguments.geometry(2, 5, 1, "pad", 2, 1, 1)
  # 8x16->3 64x64 k5: 9.8 MB
  assert functional._choose_algorithm("auto", geometry, 16, 3, dtype, "cpu", 8, (64, 64)) == "hybrid"
  assert functional._choose_algorithm("auto", geometry, 16, 3, dtype, "cpu", 96, (64, 64)) == "dilated"
  assert functional._choose_algorithm("auto", geometry, 16, 3, dtype, "gpu", 8, (64, 64)) == "dilated"
  seven = _arguments.geometry(2, 7, 1, "pad", 3, 1, 1)  # 4x32->3 128x128 k7: 38.5 MB
  assert functional._choose_algorithm("auto", seven, 32, 3, dtype, "cpu", 4, (128, 128)) == "dilated"


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_auto_on_cpu_in_low_precision_takes_the_phases(dtype):
  """Their product runs on the matrix units in bf16 (`convtranspose._phase.valid_convolution`): no 'hybrid'."""
  for n in (1, 2):
    geometry = _arguments.geometry(n, 3, 2, "pad", 0, 1, 1)
    assert functional._choose_algorithm("auto", geometry, 128, 64, dtype, platform="cpu") == "phase"
  stride_one = _arguments.geometry(2, 3, 1, "pad", 0, 1, 1)
  assert functional._choose_algorithm("auto", stride_one, 8, 8, dtype, platform="cpu") == "dilated"


@pytest.mark.parametrize("algorithm", ["Phase", "fft", None])
def test_unknown_algorithm(algorithm):
  with pytest.raises(ValueError, match=r"`algorithm` must be one of \['auto', 'autotune', 'dilated', 'phase', 'hybrid'\]"):
    ct.conv2d_transpose(jnp.ones((1, 1, 2, 2)), jnp.ones((1, 1, 2, 2)), algorithm=algorithm)
  with pytest.raises(ValueError, match=r"`algorithm` must be one of"):
    ct.Conv2dTranspose(1, 1, 2, algorithm=algorithm)


def test_phase_in_four_spatial_dimensions():
  """The N-d function is not limited to three spatial dimensions, in either algorithm."""
  x = jax.random.normal(jax.random.key(0), (1, 2, 3, 2, 3, 2))
  weight = jax.random.normal(jax.random.key(1), (2, 3, 2, 3, 2, 2))
  results = [ct.conv_transpose(x, weight, None, (2, 1, 3, 2), "pad", (1, 0) * 4, output_padding=(1, 0, 2, 0),
                               algorithm=algorithm, precision=lax.Precision.HIGHEST) for algorithm in ALGORITHMS]
  assert results[0].shape == (1, 3, 6, 3, 9, 3)  # (L - 1) * s + k - lo - hi + output_padding per dimension
  assert_close(results[1], results[0])


@pytest.mark.parametrize("algorithm", ["dilated", "phase", "hybrid", "auto"])
def test_a_bfloat16_bias_gradient_is_summed_in_float32(algorithm):
  """The bias gradient sums the cotangent over the batch and every position: 8192 ones per channel here, which a
  bfloat16 accumulator stops counting at 256 (the next integer it holds after 256 is 258)."""
  x = jnp.ones((8, 4, 16, 16), jnp.bfloat16)
  weight, bias = jnp.ones((4, 2, 4, 4), jnp.bfloat16), jnp.zeros((2,), jnp.bfloat16)
  grad = jax.jit(jax.grad(lambda b: jnp.sum(ct.conv2d_transpose(x, weight, b, stride=2, pad_mode="same",
                                                                algorithm=algorithm).astype(jnp.float32))))(bias)
  np.testing.assert_array_equal(np.asarray(grad, np.float32), [8 * 32 * 32] * 2)
