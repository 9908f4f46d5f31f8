"""The GPU and TPU formulations, computed here: the same numbers and derivatives as the reference.

Off the CPU, ``'dilated'`` is differentiated through the forward convolution's adjoint
(`convtranspose._dilated.adjoint_tangent`), ``'hybrid'`` is the phase value with those derivatives, and
``'auto'`` picks per layer (`convtranspose.functional._choose_algorithm`). XLA lowers them only for an
accelerator; here `functional._by_platform` is replaced so that the CPU runs the accelerator branch, and
every result is checked against JAX's own VJP of the forward convolution (the independent answer).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import convtranspose as ct
from conftest import assert_close, standard_normal
from convtranspose import _hybrid, functional
from test_functional import apply, layer_forward, layers, random_operands

ALGORITHMS = ("auto", "dilated", "phase", "hybrid")


def run_as(monkeypatch, platform: str) -> None:
  monkeypatch.setattr(functional, "_by_platform", lambda x, weight, compute: compute(x, weight, platform=platform))


@pytest.fixture(params=["gpu", "tpu"])
def platform(request, monkeypatch):
  """Every call in the test computes what XLA would be given for this platform (the same for every example)."""
  run_as(monkeypatch, request.param)
  return request.param


def reference_vjp(layer, z):
  """The layer as JAX's VJP of its forward convolution: ``x, W -> d<conv(z', W), x>/dz'``."""
  def layer_of(x, weight):
    return jax.vjp(lambda z_: layer_forward(layer, z_, weight), z)[1](x)[0]
  return layer_of


@pytest.mark.exhaustive  # the fast tier: the plans on a fixed layer, Jacobians both ways, vmap and bias below
@settings(deadline=None, max_examples=20, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layer=layers(), seed=st.integers(0, 2**16), algorithm=st.sampled_from(ALGORITHMS))
def test_value_gradients_jvp_and_second_order_equal_the_reference(platform, layer, seed, algorithm):
  x, weight, z = random_operands(layer, seed)
  ours, reference = functools.partial(apply, layer, algorithm=algorithm), reference_vjp(layer, z)
  assert_close(jax.jit(ours)(x, weight), reference(x, weight))

  def loss_of(fn):
    return lambda x, w: jnp.vdot(z, jnp.sin(fn(x, w)))

  # Each side's derivatives as one program (op by op, every operation would be compiled on its own).
  def derivatives(fn, tangents):
    def second_order(w):  # d/dW of |d loss / dx|^2
      return jax.grad(lambda w: jnp.sum(jax.grad(loss_of(fn))(x, w) ** 2))(w)
    return jax.grad(loss_of(fn), (0, 1))(x, weight), jax.jvp(fn, (x, weight), tangents), second_order(weight)

  tangents = standard_normal(seed, x.shape), jnp.flip(weight)
  jax.tree.map(assert_close, jax.jit(derivatives, static_argnums=0)(ours, tangents),
               jax.jit(derivatives, static_argnums=0)(reference, tangents))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_jacobians_in_both_modes(platform, algorithm):
  """`jax.jacfwd` and `jax.jacrev` agree with each other and with the reference's Jacobian."""
  layer = dict(n=2, group=2, in_channels=4, out_channels=2, kernel=(3, 2), stride=(2, 3), dilation=(1, 2),
               pad_mode="pad", padding=(1, 0, 0, 1), output_padding=(1, 0), lengths=(3, 2))
  layer["out"] = functional.conv_transpose_output_shape((3, 2), (3, 2), (2, 3), "pad", (1, 0, 0, 1), (1, 2),
                                                       output_padding=(1, 0))
  x, weight, z = random_operands(layer, 0, batch=1)
  ours, reference = functools.partial(apply, layer, algorithm=algorithm), reference_vjp(layer, z)
  assert ours(x, weight).shape == (1, 2, 7, 5)  # (L - 1) * s + d * (k - 1) + 1 - lo - hi + op
  for argnum in (0, 1):
    expected = jax.jacrev(reference, argnum)(x, weight)
    assert_close(jax.jacfwd(ours, argnum)(x, weight), expected)
    assert_close(jax.jacrev(ours, argnum)(x, weight), expected)


PLANS = [_hybrid.Plan(value, trained_value, derivatives) for value in ("phase", "dilated")
         for trained_value in ("phase", "dilated") for derivatives in ("adjoint", "reference")]
# A layer whose phases all hold every tap, and one with holes, output_padding, several groups and a dilation.
PLAN_LAYERS = {
    "2-D k4 s2": dict(n=2, group=1, in_channels=3, out_channels=2, kernel=(4, 4), stride=(2, 2), dilation=(1, 1),
                      pad_mode="pad", padding=(1, 1, 1, 1), output_padding=0, lengths=(3, 4)),
    "1-D k3 s2 d3 g2": dict(n=1, group=2, in_channels=4, out_channels=2, kernel=(3,), stride=(2,), dilation=(3,),
                            pad_mode="pad", padding=(1, 2), output_padding=(1,), lengths=(5,)),
}


@pytest.mark.parametrize("plan", PLANS, ids=lambda plan: f"{plan.value}-{plan.trained_value}-{plan.derivatives}")
@pytest.mark.parametrize("layer_name", PLAN_LAYERS)
def test_every_accelerator_plan_computes_the_layer_and_its_derivatives(monkeypatch, layer_name, plan):
  """Each of the eight programs `auto` may build off the CPU (`_hybrid.Plan`: the inference value, the value
  under differentiation, the derivatives' form) has the reference's value, gradients, tangents and second
  derivatives, whichever `_choose_algorithm` would pick."""
  layer = dict(PLAN_LAYERS[layer_name])
  layer["out"] = functional.conv_transpose_output_shape(layer["lengths"], layer["kernel"], layer["stride"], "pad",
                                                       layer["padding"], layer["dilation"],
                                                       output_padding=layer["output_padding"])
  run_as(monkeypatch, "tpu")
  monkeypatch.setattr(functional, "_choose_algorithm", lambda *args, **kwargs: plan)
  x, weight, z = random_operands(layer, 0)
  ours, reference = functools.partial(apply, layer, algorithm="auto"), reference_vjp(layer, z)
  assert_close(ours(x, weight), reference(x, weight))

  def loss_of(fn):
    return lambda x, w: jnp.vdot(z, jnp.sin(fn(x, w)))

  for argnums in ((0, 1), 0, 1):
    jax.tree.map(assert_close, jax.value_and_grad(loss_of(ours), argnums)(x, weight),
                 jax.value_and_grad(loss_of(reference), argnums)(x, weight))
  tangents = standard_normal(1, x.shape), jnp.flip(weight)
  jax.tree.map(assert_close, jax.jvp(ours, (x, weight), tangents), jax.jvp(reference, (x, weight), tangents))
  second_order = [jax.grad(lambda w, fn=fn: jnp.sum(jax.grad(loss_of(fn))(x, w) ** 2))(weight)
                  for fn in (ours, reference)]
  assert_close(*second_order)


@pytest.mark.parametrize("platform", ["gpu", "tpu"])
@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_vmap_bias_and_padding_modes_equal_the_cpu_branch(monkeypatch, platform, algorithm):
  """vmap over weights, a bias and a non-zero padding mode: the accelerator branch equals the CPU's."""
  x = jax.random.normal(jax.random.key(0), (2, 4, 5, 5))
  weights = jax.random.normal(jax.random.key(1), (3, 4, 3, 3, 3))
  bias = jnp.arange(3.0)
  layer = functools.partial(functional.conv2d_transpose, stride=2, pad_mode="pad", padding=1,
                            padding_mode="circular", precision=jax.lax.Precision.HIGHEST, algorithm=algorithm)

  def values_and_gradients():
    batched = jax.vmap(lambda w: layer(x, w, bias))(weights)
    return batched, jax.grad(lambda w: jnp.sum(jax.vmap(lambda w: layer(x, w, bias))(w) ** 2))(weights)

  expected = values_and_gradients()
  run_as(monkeypatch, platform)
  batched, grads = values_and_gradients()
  for w, y in zip(weights, batched):
    assert_close(y, layer(x, w, bias))  # the batched program differs from the unbatched one in rounding
  jax.tree.map(assert_close, (batched, grads), expected)


# Layers whose phase kernels have holes: k % s != 0, a dilation sharing no factor with the stride (taps two
# positions apart within a phase), a dilation at stride 1, output_padding.
HOLES = {
    1: dict(kernel=3, stride=2, padding=1, dilation=3, output_padding=0),
    2: dict(kernel=3, stride=2, padding=1, dilation=1, output_padding=1),
    3: dict(kernel=3, stride=1, padding=2, dilation=2, output_padding=0),
}


@pytest.mark.parametrize("channels_last", [False, True], ids=["channels-first", "channels-last"])
@pytest.mark.parametrize("n", [1, 2, 3])
def test_nan_and_inf_reach_the_outputs_they_reach_in_pytorch(monkeypatch, n, channels_last):
  """One NaN, one +Inf and one -Inf input value reach exactly the outputs they reach in PyTorch, with its
  signs, for every algorithm as computed for CPU, GPU and TPU: the phase kernels' holes multiply nothing (they
  once made one NaN pixel of a k3 s2 layer 16 NaN outputs per channel, and an Inf 56 NaNs)."""
  layer = HOLES[n]
  rng = np.random.default_rng(n)
  x = rng.normal(size=(2, 3, *(5,) * n)).astype(np.float32)
  x[(0, 0, *(1,) * n)] = np.nan
  x[(0, 1, *(3,) * n)] = np.inf
  x[(1, 2, *(2,) * n)] = -np.inf
  weight = rng.normal(size=(3, 4, *(layer["kernel"],) * n)).astype(np.float32)
  expected = getattr(torch.nn.functional, f"conv_transpose{n}d")(
      torch.from_numpy(x), torch.from_numpy(weight), stride=layer["stride"], padding=layer["padding"],
      output_padding=layer["output_padding"], dilation=layer["dilation"]).numpy()
  assert np.isnan(expected).any() and np.isposinf(expected).any() and np.isneginf(expected).any()
  data = jnp.moveaxis(x, 1, -1) if channels_last else x
  data_format = ("NLC", "NHWC", "NDHWC")[n - 1] if channels_last else None
  for platform in ("cpu", "gpu", "tpu"):
    run_as(monkeypatch, platform)
    for algorithm in ALGORITHMS:
      y = getattr(ct, f"conv_transpose{n}d")(data, weight, stride=layer["stride"], padding=layer["padding"],
                                             output_padding=layer["output_padding"], dilation=layer["dilation"],
                                             data_format=data_format, algorithm=algorithm)
      y = np.asarray(jnp.moveaxis(y, -1, 1) if channels_last else y)
      for mask in (np.isnan, np.isposinf, np.isneginf):
        np.testing.assert_array_equal(mask(y), mask(expected), err_msg=f"{platform} {algorithm} {mask.__name__}")
      finite = np.isfinite(expected)
      assert_close(np.where(finite, y, 0), np.where(finite, expected, 0))
