"""The converters, proved by building each peer's layer with converted weights and padding: Flax (both
``transpose_kernel`` settings), `jax.lax.conv_transpose`, Keras 3 on its JAX backend (``conftest.py`` sets
``KERAS_BACKEND``), PyTorch. Each row of the conversion table (docs/frameworks.md) is one of these tests."""

import flax.linen as nn
import keras
import numpy as np
import pytest
import torch
from jax import lax

import convtranspose as ct
from conftest import assert_close
from convtranspose import convert

CHANNELS_LAST = {1: "NLC", 2: "NHWC", 3: "NDHWC"}

# (kernel, stride, dilation, pad_mode, padding, output_padding); ranks 1-3 drawn from the 2-D entries.
CONFIGS = [
    ((3, 3), (2, 2), (1, 1), "same", 0, 0),  # odd dk - s: the extra row is cropped at the end
    ((4, 4), (2, 2), (1, 1), "same", 0, 0),
    ((2, 5), (3, 2), (1, 1), "same", 0, 0),  # dk < s along the first axis
    ((3, 2), (2, 2), (2, 1), "same", 0, 0),
    ((4, 4), (2, 2), (1, 1), "pad", 1, 0),  # DCGAN
    ((3, 3), (2, 2), (1, 1), "pad", 1, 1),  # U-Net's exact doubling
    ((4, 3), (2, 3), (1, 1), "pad", (1, 2, 0, 1), (1, 0)),  # asymmetric: Keras and PyTorch cannot
    ((3, 3), (1, 2), (2, 1), "pad", (2, 1, 1, 1), (1, 1)),
    ((5, 2), (3, 2), (1, 1), "valid", 0, 0),
    ((2, 2), (2, 2), (1, 1), "valid", 0, 0),
    ((3, 3), (1, 1), (1, 1), "pad", 0, 0),
]


def _config(i, n):
  kernel, stride, dilation, pad_mode, padding, output_padding = CONFIGS[i]
  take = (lambda v: (v * 2)[:n]) if n == 3 else (lambda v: v[:n])
  if isinstance(padding, tuple):
    padding = (padding * 2)[:2 * n] if n == 3 else padding[:2 * n]
  if isinstance(output_padding, tuple):
    output_padding = take(output_padding)
  return take(kernel), take(stride), take(dilation), pad_mode, padding, output_padding


def _operands(kernel, n, seed=0):
  rng = np.random.default_rng(seed)
  weight = rng.normal(size=(3, 4, *kernel)).astype(np.float32)
  bias = rng.normal(size=4).astype(np.float32)
  x = rng.normal(size=(2, *(5, 4, 3)[:n], 3)).astype(np.float32)  # channels-last, as Flax and Keras take it
  return weight, bias, x


def _ours(x, weight, bias, kernel, stride, dilation, pad_mode, padding, output_padding):
  return ct.conv_transpose(x, weight, bias, stride, pad_mode, padding, dilation, output_padding=output_padding,
                           data_format=CHANNELS_LAST[weight.ndim - 2], precision="highest")


CASES = [(i, n) for n in (1, 2, 3) for i in range(len(CONFIGS))]


@pytest.mark.parametrize("transpose_kernel", [False, True])
@pytest.mark.parametrize("i, n", CASES)
def test_flax_conv_transpose(i, n, transpose_kernel):
  kernel, stride, dilation, pad_mode, padding, output_padding = _config(i, n)
  weight, bias, x = _operands(kernel, n)
  expected = _ours(x, weight, bias, kernel, stride, dilation, pad_mode, padding, output_padding)
  layer = nn.ConvTranspose(4, kernel, stride, padding=convert.flax_padding(pad_mode, padding, kernel, stride, dilation,
                                                                           output_padding=output_padding),
                           kernel_dilation=dilation, transpose_kernel=transpose_kernel, precision="highest")
  kernel_array = convert.flax_kernel(weight, transpose_kernel)
  assert_close(layer.apply({"params": {"kernel": kernel_array, "bias": bias}}, x), expected)
  np.testing.assert_array_equal(convert.from_flax_kernel(kernel_array, transpose_kernel), weight)


@pytest.mark.parametrize("i, n", CASES)
def test_lax_conv_transpose(i, n):
  kernel, stride, dilation, pad_mode, padding, output_padding = _config(i, n)
  weight, _, x = _operands(kernel, n)
  expected = _ours(x, weight, None, kernel, stride, dilation, pad_mode, padding, output_padding)
  spec = CHANNELS_LAST[n].replace("N", "").replace("C", "")
  actual = lax.conv_transpose(x, convert.flax_kernel(weight), stride,
                              convert.flax_padding(pad_mode, padding, kernel, stride, dilation,
                                                   output_padding=output_padding),
                              rhs_dilation=dilation, dimension_numbers=(CHANNELS_LAST[n], spec + "IO", CHANNELS_LAST[n]),
                              precision="highest")
  assert_close(actual, expected)


def _keras_expressible(i, n):
  kernel, stride, dilation, pad_mode, padding, output_padding = _config(i, n)
  try:
    convert.keras_padding(pad_mode, padding, kernel, stride, dilation, output_padding=output_padding)
  except ValueError:
    return False
  return True


@pytest.mark.parametrize("i, n", [case for case in CASES if _keras_expressible(*case)])
def test_keras_conv_transpose(i, n):
  kernel, stride, dilation, pad_mode, padding, output_padding = _config(i, n)
  weight, bias, x = _operands(kernel, n)
  expected = _ours(x, weight, bias, kernel, stride, dilation, pad_mode, padding, output_padding)
  keras_mode, keras_extra = convert.keras_padding(pad_mode, padding, kernel, stride, dilation,
                                                  output_padding=output_padding)
  layer = getattr(keras.layers, f"Conv{n}DTranspose")(4, kernel, stride, padding=keras_mode,
                                                       output_padding=keras_extra, dilation_rate=dilation)
  layer.build(x.shape)
  layer.set_weights([convert.keras_kernel(weight), bias])
  assert_close(np.asarray(layer(x)), expected)
  np.testing.assert_array_equal(convert.from_keras_kernel(convert.keras_kernel(weight)), weight)


def test_keras_expresses_same_valid_and_symmetric_padding_only():
  expressible = {CONFIGS[i][3:] for i in range(len(CONFIGS)) if _keras_expressible(i, 2)}
  assert ("same", 0, 0) in expressible and ("valid", 0, 0) in expressible and ("pad", 1, 0) in expressible
  with pytest.raises(ValueError, match=r"Keras 3 cannot express this layer: it takes no strides > 1 with "
                                       r"dilation_rate > 1"):
    convert.keras_padding("same", 0, (3,), 2, 2)
  with pytest.raises(ValueError, match=r"Keras 3 cannot express this layer: it needs the dilated input padded by "
                                       r"\(\(2, 2\), \(2, 1\)\)"):
    convert.keras_padding("pad", (1, 2, 0, 1), (4, 3), (2, 3), output_padding=(1, 0))


@pytest.mark.parametrize("i, n", CASES)
def test_pytorch_conv_transpose(i, n):
  kernel, stride, dilation, pad_mode, padding, output_padding = _config(i, n)
  weight, bias, x = _operands(kernel, n)
  expected = _ours(x, weight, bias, kernel, stride, dilation, pad_mode, padding, output_padding)
  try:
    torch_pad, torch_extra = convert.torch_padding(pad_mode, padding, kernel, stride, dilation,
                                                   output_padding=output_padding)
  except ValueError as error:  # the forward padding is larger at the high end, which PyTorch cannot express
    assert "PyTorch cannot express the forward padding" in str(error)
    dilated_pads = convert.flax_padding(pad_mode, padding, kernel, stride, dilation, output_padding=output_padding)
    edges = [d * (k - 1) for k, d in zip(kernel, dilation)]
    forward = [(edge - lo, edge - hi) for (lo, hi), edge in zip(dilated_pads, edges)]
    assert any(not 0 <= lo - hi < max(s, d) for (lo, hi), s, d in zip(forward, stride, dilation))
    return
  conv = getattr(torch.nn.functional, f"conv_transpose{n}d")
  actual = conv(torch.from_numpy(np.moveaxis(x, -1, 1)), torch.from_numpy(weight), torch.from_numpy(bias), stride,
                torch_pad, torch_extra, 1, dilation)
  assert_close(np.moveaxis(actual.numpy(), 1, -1), expected)


def test_pytorch_cannot_express_mindspores_odd_same():
  with pytest.raises(ValueError, match=r"PyTorch cannot express the forward padding \(0, 1\) along spatial "
                                       r"dimension 0: it pads \(p, p - output_padding\)"):
    convert.torch_padding("same", 0, (3, 3), (2, 2))


def test_same_and_valid_mean_the_same_in_mindspore_flax_and_keras():
  """MindSpore's 'same'/'valid' equal Flax's (lax's) 'SAME'/'VALID' and Keras's 'same'/'valid' (output_padding
  None) for every kernel, stride and dilation: 'same' crops the odd row of dk - s at the end (bottom/right),
  'valid' gives L * s + max(dk - s, 0) rows."""
  for k in range(1, 6):
    for s in range(1, 4):
      for d in (1, 2):
        weight, _, x = _operands((k,), 1, seed=k * 10 + s)
        for mode in ("same", "valid"):
          ours = _ours(x, weight, None, (k,), (s,), (d,), mode, 0, 0)
          flax = nn.ConvTranspose(4, (k,), (s,), padding=mode.upper(), kernel_dilation=(d,), use_bias=False,
                                  precision="highest").apply({"params": {"kernel": convert.flax_kernel(weight)}}, x)
          assert_close(flax, ours)
          if s == 1 or d == 1:  # Keras takes no dilation with strides
            layer = keras.layers.Conv1DTranspose(4, k, s, padding=mode, dilation_rate=d, use_bias=False)
            layer.build(x.shape)
            layer.set_weights([convert.keras_kernel(weight)])
            assert_close(np.asarray(layer(x)), ours)


def test_converters_check_their_arguments():
  with pytest.raises(TypeError, match=r"`kernel_size` must be a tuple, one int per spatial dimension"):
    convert.flax_padding("same", 0, 3)
  with pytest.raises(ValueError, match=r"`weight` must have two channel axes and at least one spatial axis"):
    convert.flax_kernel(np.zeros((3, 4)))
  with pytest.raises(ValueError, match=r"`output_padding` must be 0 when `pad_mode` is 'same'"):
    convert.keras_padding("same", 0, (3,), 2, output_padding=1)
