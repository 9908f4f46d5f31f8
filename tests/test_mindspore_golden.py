"""The function and the module against real MindSpore 2.10 (fixtures from ``make_mindspore_golden.py``)."""

import functools

import jax
import numpy as np
import pytest

import convtranspose as ct
from conftest import assert_close, load_cases

CONFIGS, ARRAYS = load_cases("mindspore_conv2d_transpose.npz")
SHAPE_CONFIGS, _ = load_cases("mindspore_output_shapes.npz")
CASES = range(len(CONFIGS))


def _case(i):
  config = CONFIGS[i]
  bias = ARRAYS.get(f"bias_{i}")
  assert (bias is not None) == config["has_bias"]
  return config, ARRAYS[f"x_{i}"], ARRAYS[f"weight_{i}"], bias, ARRAYS[f"y_{i}"]


def test_fixtures_cover_the_issue_ranges():
  kernels = {k for c in CONFIGS for k in np.broadcast_to(c["kernel_size"], (2,))}
  strides = {s for c in CONFIGS for s in np.broadcast_to(c["stride"], (2,))}
  dilations = {d for c in CONFIGS for d in np.broadcast_to(c["dilation"], (2,))}
  assert kernels == set(range(1, 8)) and strides == set(range(1, 5)) and dilations == {1, 2, 3}
  assert {c["pad_mode"] for c in CONFIGS} == {"same", "valid", "pad"}
  assert any(c["group"] == c["in_channels"] == c["out_channels"] > 1 for c in CONFIGS)  # depthwise
  assert any(c["group"] > 1 and c["in_channels"] != c["out_channels"] for c in CONFIGS)
  assert any(isinstance(c["padding"], tuple) and len(set(c["padding"])) > 1 for c in CONFIGS)  # asymmetric
  assert {c["has_bias"] for c in CONFIGS} == {True, False}
  assert str(ARRAYS["mindspore_version"]).startswith("2.")


@pytest.mark.parametrize("i", CASES)
def test_function_matches_mindspore(i):
  config, x, weight, bias, expected = _case(i)
  fn = jax.jit(functools.partial(ct.conv2d_transpose, stride=config["stride"], pad_mode=config["pad_mode"],
                                 padding=config["padding"], dilation=config["dilation"], group=config["group"]))
  assert_close(fn(x, weight, bias), expected)


@pytest.mark.parametrize("i", CASES[::10])
def test_function_without_jit_matches_mindspore(i):
  config, x, weight, bias, expected = _case(i)
  y = ct.conv_transpose(x, weight, bias, config["stride"], config["pad_mode"], config["padding"], config["dilation"],
                        config["group"])
  assert_close(y, expected)


@pytest.mark.parametrize("i", CASES)
def test_module_matches_mindspore(i):
  config, x, weight, bias, expected = _case(i)
  layer = ct.Conv2dTranspose(config["in_channels"], config["out_channels"], config["kernel_size"], config["stride"],
                             config["pad_mode"], config["padding"], config["dilation"], config["group"],
                             config["has_bias"], weight_init=weight, bias_init=bias if bias is not None else "zeros")
  variables = layer.init(jax.random.key(0), x)
  np.testing.assert_array_equal(variables["params"]["weight"], weight)  # the array initializer, as given
  assert_close(jax.jit(layer.apply)(variables, x), expected)


def test_output_shape_table_matches_mindspore():
  """1,500 configurations: every MindSpore shape and every MindSpore rejection, from the shape arithmetic alone."""
  checked = rejected = empty = 0
  for config in SHAPE_CONFIGS:
    spatial = (config["height"], config["width"])
    args = (config["kernel_size"], config["stride"], config["pad_mode"], config["padding"], config["dilation"])
    if "error" in config:
      with pytest.raises(ValueError, match="would be negative"):
        ct.conv_transpose_output_shape(spatial, *args)
      rejected += 1
    else:
      shape = ct.conv_transpose_output_shape(spatial, *args)
      assert list(shape) == config["output_shape"][2:], config
      checked += 1
      empty += 0 in shape
  assert checked > 1000 and rejected > 50 and empty > 5


@pytest.mark.parametrize("config", [c for c in SHAPE_CONFIGS if 0 in c.get("output_shape", [1])][:5])
def test_empty_output_like_mindspore(config):
  x = np.ones((1, 1, config["height"], config["width"]), np.float32)
  weight = np.ones((1, 1, *np.broadcast_to(config["kernel_size"], (2,))), np.float32)
  y = ct.conv2d_transpose(x, weight, None, config["stride"], config["pad_mode"], config["padding"], config["dilation"])
  assert list(y.shape) == config["output_shape"] and y.size == 0
