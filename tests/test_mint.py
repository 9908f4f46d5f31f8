"""The mint vocabulary: MindSpore's ``mint.nn.ConvTranspose2d`` / ``ops.conv_transpose2d`` and PyTorch's
``ConvTranspose{1,2,3}d``, as linen and NNX modules and as functions.

Oracles: MindSpore 2.10's constructor (``fixtures/make_mint_fixtures.py``: parameter names, shapes, dtypes, drawn
values, exception types) and PyTorch 2.13 for the values.
"""

import builtins
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import convtranspose as ct
from conftest import FIXTURES, FRAMEWORKS, assert_close, build

MINT = np.load(FIXTURES / "mindspore_mint.npz")
LAYERS = json.loads(str(MINT["layers"]))
ERRORS = json.loads(str(MINT["errors"]))
TORCH_LAYERS = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}
FUNCTIONS = {1: ct.conv_transpose1d, 2: ct.conv_transpose2d, 3: ct.conv_transpose3d}


def _decode(kwargs: dict) -> dict:
  """The fixture's keyword arguments: tuples were stored as {"tuple": [...]}, dtypes by name."""
  decoded = {k: tuple(v["tuple"]) if isinstance(v, dict) else v for k, v in kwargs.items()}
  if "dtype" in decoded:
    decoded["dtype"] = jnp.dtype(decoded["dtype"])
  return decoded


def _construct(framework: str, kwargs: dict):
  if framework == "linen":
    return ct.ConvTranspose2d(**kwargs)
  return ct.nnx.ConvTranspose2d(**kwargs, rngs=nnx.Rngs(0))


def test_fixture_is_mindsporess_mint():
  assert str(MINT["mindspore_version"]).startswith("2.10")
  assert len(LAYERS) == 4 and sum(case["error"] is None for case in ERRORS) == 7


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("i", range(len(LAYERS)))
def test_parameters_are_mints(i, framework):
  """Names, shapes and dtypes as MindSpore makes them; values from mint's U(-sqrt(k), sqrt(k)),
  k = groups / (C_out * prod(kernel_size)), whose bound MindSpore's own draws reach."""
  kwargs = _decode(LAYERS[i]["kwargs"])
  layer = build(framework, "ConvTranspose2d", **kwargs, x=jnp.ones((1, kwargs["in_channels"], 4, 4)))
  expected = {p["name"]: (tuple(p["shape"]), p["dtype"]) for p in LAYERS[i]["parameters"]}
  assert {name: (value.shape, str(value.dtype)) for name, value in layer.params.items()} == expected
  kernel = np.broadcast_to(kwargs["kernel_size"], (2,))
  bound = math.sqrt(kwargs.get("groups", 1) / (kwargs["out_channels"] * math.prod(kernel)))
  for name in expected:
    for values in (MINT[f"values_{i}_{name}"], np.asarray(layer.params[name])):
      values = values.astype(np.float64)
      assert np.abs(values).max() <= bound * (1 + 1e-3)  # float16 rounds the bound
      if values.size >= 500:  # the draws fill the interval, uniformly
        assert np.abs(values).max() > 0.97 * bound
        assert abs(values.var() / (bound**2 / 3) - 1) < 0.1 and abs(values.mean()) < 0.05 * bound


DEFERRED_BY_MINT = {  # mint accepts these at construction and fails when called; they raise ValueError here
    ("kernel_size", (3, 3, 3)), ("padding", -1), ("padding", (1, 2, 3)), ("output_padding", 5),
    ("output_padding", -1),
}
EXTENDED = {("padding_mode", "reflect")}  # mint takes only 'zeros'; the other three are ours (PyTorch's Conv2d's)


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("case", ERRORS, ids=[str(_decode(c["kwargs"])) for c in ERRORS])
def test_errors_are_mints(case, framework):
  kwargs = _decode(case["kwargs"])
  base = {("in_channels", 4), ("out_channels", 6), ("kernel_size", 3)}
  varied = [(k, tuple(v) if isinstance(v, list) else v) for k, v in kwargs.items()]
  (name, value), = [item for item in varied if item not in base] or [("kernel_size", 3)]
  if (case["error"] is None and (name, value) not in DEFERRED_BY_MINT) or (name, value) in EXTENDED:
    _construct(framework, kwargs)
    return
  error = ValueError if case["error"] is None else getattr(builtins, case["error"]["type"])
  with pytest.raises(error, match=f"`{name}`"):
    _construct(framework, kwargs)


def _random_layer(seed: int) -> tuple[int, dict, tuple]:
  """A random mint layer (groups, dilation, output_padding, padding, lists and tuples) and an input shape."""
  rng = np.random.default_rng(seed)
  n = 1 + seed % 3
  groups = int(rng.choice([1, 1, 2, 3]))
  kernel = [int(k) for k in rng.integers(1, 5, size=n)]
  stride = [int(s) for s in rng.integers(1, 4, size=n)]
  dilation = [int(d) for d in rng.integers(1, 3, size=n)]
  padding = [int(rng.integers(0, d * (k - 1) // 2 + 1)) for k, d in zip(kernel, dilation)]
  output_padding = [int(rng.integers(0, max(s, d))) for s, d in zip(stride, dilation)]
  as_given = tuple if rng.random() < 0.5 else list  # mint (and PyTorch) take both
  kwargs = dict(in_channels=groups * int(rng.integers(1, 3)), out_channels=groups * int(rng.integers(1, 3)),
                kernel_size=as_given(kernel), stride=as_given(stride), padding=as_given(padding),
                output_padding=as_given(output_padding), groups=groups, bias=bool(rng.random() < 0.6),
                dilation=as_given(dilation))
  spatial = tuple(int(length) for length in rng.integers(1, 6, size=n))
  batch = () if rng.random() < 0.3 else (int(rng.integers(1, 3)),)  # unbatched sometimes
  return n, kwargs, (*batch, kwargs["in_channels"], *spatial)


def _torch_layer(n: int, kwargs: dict, seed: int) -> torch.nn.Module:
  torch.manual_seed(seed)
  return TORCH_LAYERS[n](**{k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()})


@pytest.mark.parametrize("framework", [*FRAMEWORKS, "function"])
@pytest.mark.parametrize("seed", range(18))
def test_random_layers_match_pytorch(seed, framework):
  n, kwargs, shape = _random_layer(seed)
  reference = _torch_layer(n, kwargs, seed)
  x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
  expected = reference(torch.tensor(x)).detach().numpy()
  weight = reference.weight.detach().numpy()
  bias = None if reference.bias is None else reference.bias.detach().numpy()
  if framework == "function":
    y = FUNCTIONS[n](x, weight, bias, kwargs["stride"], kwargs["padding"], kwargs["output_padding"],
                     kwargs["groups"], kwargs["dilation"])
  else:
    positional = [kwargs[k] for k in ("in_channels", "out_channels", "kernel_size", "stride", "padding",
                                      "output_padding", "groups", "bias", "dilation")]  # mint's order
    layer = build(framework, f"ConvTranspose{n}d", *positional, weight_init=weight, bias_init=bias, x=x)
    assert layer.params["weight"].shape == weight.shape  # PyTorch's shape, the 1-D one included
    y = layer(x)
  assert_close(y, expected)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_output_size_and_state_dict_like_pytorch(framework):
  """PyTorch's forward(x, output_size) and its state dict, loaded as PyTorch's shapes (no unit height)."""
  for n in (1, 2, 3):
    kwargs = dict(in_channels=4, out_channels=2, kernel_size=3, stride=2, padding=1)
    reference = _torch_layer(n, kwargs, n)
    x = np.random.default_rng(n).normal(size=(1, 4, *(5,) * n)).astype(np.float32)
    params = ct.interop.from_torch_state_dict(reference.state_dict())
    layer = build(framework, f"ConvTranspose{n}d", *kwargs.values(), x=x)
    if framework == "linen":
      layer.variables = {"params": params}
    else:
      ct.interop.load_into_nnx(layer.layer, params)
    for size in ((9,) * n, (10,) * n):
      expected = reference(torch.tensor(x), output_size=list(size)).detach().numpy()
      assert_close(layer(x, output_size=size), expected)


def test_functions_are_the_modules_and_the_legacy_pad_mode():
  """mint's padding p is MindSpore's pad_mode='pad' with (p, p) on every side."""
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
  weight = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)
  bias = rng.normal(size=(6,)).astype(np.float32)
  y = ct.conv_transpose2d(x, weight, bias, stride=(2, 3), padding=(1, 0), output_padding=1, groups=2,
                          dilation=(1, 2))
  legacy = ct.conv2d_transpose(x, weight, bias, (2, 3), "pad", (1, 1, 0, 0), (1, 2), 2, output_padding=1)
  np.testing.assert_array_equal(y, legacy)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_dtype_is_the_parameters_and_compute_dtype_the_computations(framework):
  x = jnp.ones((1, 2, 3, 3), jnp.float32)
  layer = build(framework, "ConvTranspose2d", 2, 4, 3, dtype=jnp.bfloat16, x=x)
  assert {str(v.dtype) for v in layer.params.values()} == {"bfloat16"}
  assert layer(x).dtype == jnp.float32  # promoted, as Flax's layers promote
  mixed = build(framework, "ConvTranspose2d", 2, 4, 3, compute_dtype=jnp.bfloat16, x=x)
  assert {str(v.dtype) for v in mixed.params.values()} == {"float32"} and mixed(x).dtype == jnp.bfloat16


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_padding_modes_beyond_mints_zeros(framework):
  """'circular' (not in mint): the layer is the forward circular convolution's adjoint, as the function is."""
  x = jax.random.normal(jax.random.key(0), (1, 2, 6, 6))
  layer = build(framework, "ConvTranspose2d", 2, 3, 3, padding=1, padding_mode="circular", x=x)
  expected = ct.conv2d_transpose(x, layer.params["weight"], layer.params["bias"], 1, "pad", 1,
                                 padding_mode="circular")
  assert_close(layer(x), expected)
