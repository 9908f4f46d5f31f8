"""The functions and the modules against real MindSpore 2.10 (fixtures from ``make_mindspore_golden.py``).

The functions are compiled and run on every case with ``'auto'`` and, in the exhaustive tier (``pytest -m
exhaustive``), with each algorithm. A module is the function with its parameters: each module test checks the
parameters it initializes (the given arrays) and that its program, in linen and in NNX, is the very program of
the function with ``'auto'`` (`conftest.lowered_text`), which the function's test of that case checks against
MindSpore.
"""

import functools

import jax
import numpy as np
import pytest

import convtranspose as ct
from conftest import FRAMEWORKS, assert_close, layer_program, load_cases, lowered_text

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


ALGORITHMS = ("dilated", "phase", "auto")
# 'auto' on every case in the test tier, each algorithm on every case in the exhaustive one.
TIERED = [pytest.param(a, marks=pytest.mark.exhaustive) if a != "auto" else a for a in ALGORITHMS]


def _params(weight, bias) -> dict:
  return {"weight": weight} if bias is None else {"weight": weight, "bias": bias}


def _check_module(name, args, x, weight, bias, function):
  """In linen and NNX, the layer's parameters are the given arrays (a 1-D layer's weight with MindSpore's extra
  axis of one), and its program is ``function``'s, given those parameters as a module is given them."""
  function_program = None
  for framework in FRAMEWORKS:
    params, program = layer_program(framework, name, *args, x=x)
    assert set(params) == set(_params(weight, bias))
    np.testing.assert_array_equal(params["weight"].reshape(weight.shape), weight)  # the array initializer
    if bias is not None:
      np.testing.assert_array_equal(params["bias"], bias)
    function_program = function_program or lowered_text(
        lambda params, x: function(x, params["weight"].reshape(weight.shape), params.get("bias")), params, x)
    assert program == function_program, framework


def _function_2d(config, algorithm="auto", **kwargs):
  return functools.partial(ct.conv2d_transpose, stride=config["stride"], pad_mode=config["pad_mode"],
                           padding=config["padding"], dilation=config["dilation"], group=config["group"],
                           algorithm=algorithm, **kwargs)


@pytest.mark.parametrize("algorithm", TIERED)
@pytest.mark.parametrize("i", CASES)
def test_function_matches_mindspore(i, algorithm):
  config, x, weight, bias, expected = _case(i)
  assert_close(jax.jit(_function_2d(config, algorithm))(x, weight, bias), expected)


@pytest.mark.parametrize("i", [i if i % 100 == 0 else pytest.param(i, marks=pytest.mark.exhaustive)
                               for i in CASES[::10]])  # op by op, every operation compiled on its own
def test_function_without_jit_matches_mindspore(i):
  config, x, weight, bias, expected = _case(i)
  y = ct.conv_transpose(x, weight, bias, config["stride"], config["pad_mode"], config["padding"], config["dilation"],
                        config["group"])
  assert_close(y, expected)


@pytest.mark.parametrize("i", CASES)
def test_module_matches_mindspore(i):
  """In linen and NNX; its program is the function's with 'auto': `test_function_matches_mindspore[auto-i]`."""
  config, x, weight, bias, _ = _case(i)
  args = (config["in_channels"], config["out_channels"], config["kernel_size"], config["stride"], config["pad_mode"],
          config["padding"], config["dilation"], config["group"], config["has_bias"], weight,
          bias if bias is not None else "zeros")
  _check_module("Conv2dTranspose", args, x, weight, bias, _function_2d(config))


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


# ---------------------------------------------------------------------------------------------------------
# The 1-D and 3-D layers (3-D with output_padding, which MindSpore's 3-D layer computes by convolution).

FAMILY = {n: load_cases(f"mindspore_conv{n}d_transpose.npz") for n in (1, 3)}
FAMILY_CASES = [(n, i) for n in (1, 3) for i in range(len(FAMILY[n][0]))]
MODULES = {1: ct.Conv1dTranspose, 3: ct.Conv3dTranspose}


def _family_case(n, i):
  configs, arrays = FAMILY[n]
  config = configs[i]
  bias = arrays.get(f"bias_{i}")
  assert (bias is not None) == config["has_bias"]
  return config, arrays[f"x_{i}"], arrays[f"weight_{i}"], bias, arrays[f"y_{i}"]


def test_family_fixtures_cover_the_arguments():
  configs_1d, configs_3d = FAMILY[1][0], FAMILY[3][0]
  assert len(configs_1d) == len(configs_3d) == 150
  assert {c["pad_mode"] for c in configs_1d} == {c["pad_mode"] for c in configs_3d} == {"same", "valid", "pad"}
  assert {c["group"] for c in configs_1d} == {c["group"] for c in configs_3d} == {1, 2}
  assert {c["dilation"] for c in configs_1d} == {1, 2} and any(c["batch"] == 1 for c in configs_1d)
  assert sum(np.any(c["output_padding"]) for c in configs_3d) >= 20
  assert any(max(c["dilation"]) > 1 for c in configs_3d)
  assert any(len(set(c["padding"])) > 1 for c in configs_3d if c["pad_mode"] == "pad")  # asymmetric


def _family_function(config, algorithm="auto"):
  return functools.partial(ct.conv_transpose, stride=config["stride"], pad_mode=config["pad_mode"],
                           padding=config["padding"], dilation=config["dilation"], group=config["group"],
                           output_padding=config.get("output_padding", 0), algorithm=algorithm)


MODULE_CASES = FAMILY_CASES[::3]


@pytest.mark.parametrize("n, i, algorithm", [
    (n, i, "auto") if algorithm == "auto" else pytest.param(n, i, algorithm, marks=pytest.mark.exhaustive)
    for n, i in FAMILY_CASES for algorithm in ALGORITHMS if algorithm != "auto" or (n, i) in MODULE_CASES])
def test_family_function_matches_mindspore(n, i, algorithm):
  config, x, weight, bias, expected = _family_case(n, i)
  assert_close(jax.jit(_family_function(config, algorithm))(x, weight, bias), expected)


@pytest.mark.parametrize("n, i", MODULE_CASES)
def test_family_module_matches_mindspore(n, i):
  """Positional arguments in MindSpore's order: the 3-D layer takes output_padding before has_bias. Its program
  is the function's with 'auto': `test_family_function_matches_mindspore[n-i-auto]`."""
  config, x, weight, bias, _ = _family_case(n, i)
  leading = [config[k] for k in ("in_channels", "out_channels", "kernel_size", "stride", "pad_mode", "padding",
                                 "dilation", "group")]
  bias_init = bias if bias is not None else "zeros"
  if n == 3:
    args = (*leading, config["output_padding"], config["has_bias"], weight, bias_init)
  else:
    args = (*leading, config["has_bias"], weight, bias_init)
  _check_module(f"Conv{n}dTranspose", args, x, weight, bias, _family_function(config))


# ---------------------------------------------------------------------------------------------------------
# MindSpore 2.x's 2-D layer zero-fills the output_padding rows after the bias; ours computes them (PyTorch's
# and MindSpore's 3-D meaning). Everything else agrees.

OP_CONFIGS, OP_ARRAYS = load_cases("mindspore_conv2d_output_padding.npz")


def _output_padding_case(i):
  config = OP_CONFIGS[i]
  return config, OP_ARRAYS[f"x_{i}"], OP_ARRAYS[f"weight_{i}"], OP_ARRAYS.get(f"bias_{i}"), OP_ARRAYS[f"y_{i}"]


@pytest.mark.parametrize("i", range(len(OP_CONFIGS)))
def test_2d_output_padding_differs_from_mindspore_only_in_the_added_rows(i):
  config, x, weight, bias, expected = _output_padding_case(i)
  y = np.asarray(jax.jit(_function_2d(config, output_padding=config["output_padding"]))(x, weight, bias))
  assert y.shape == expected.shape
  rows, cols = (size - op for size, op in zip(y.shape[2:], config["output_padding"]))
  assert_close(y[:, :, :rows, :cols], expected[:, :, :rows, :cols])
  np.testing.assert_array_equal(expected[:, :, rows:], 0)  # MindSpore: zeros, even with a bias
  np.testing.assert_array_equal(expected[:, :, :, cols:], 0)
  unpadded = jax.jit(_function_2d(config))(x, weight, bias)
  assert_close(y[:, :, :rows, :cols], unpadded)  # output_padding only appends


@pytest.mark.parametrize("i", range(len(OP_CONFIGS)))
def test_2d_output_padding_module_is_the_function(i):
  """Its program is the function's: `test_2d_output_padding_differs_from_mindspore_only_in_the_added_rows[i]`."""
  config, x, weight, bias, _ = _output_padding_case(i)
  args = (config["in_channels"], config["out_channels"], config["kernel_size"], config["stride"], config["pad_mode"],
          config["padding"], config["dilation"], config["group"], config["has_bias"], weight,
          bias if bias is not None else "zeros", config["output_padding"])
  _check_module("Conv2dTranspose", args, x, weight, bias, _function_2d(config, output_padding=config["output_padding"]))
