"""``algorithm='hybrid'``: one formulation's value, the other's derivatives, each the platform's faster.

* On CPU with a stride, the reference value (`convtranspose._dilated`) with the phase decomposition's
  derivatives: for layers whose forward pass XLA's CPU backend computes faster from the dilated input, while
  the phase derivatives stay on its fast matrix products (`_dilated_value`).
* On CPU at stride 1, the other way round: the phases' value (for few output channels, the col2im product,
  which multiplies each input value once) with the reference's derivatives, XLA's own convolutions, which at
  stride 1 have no inserted zeros and a fast weight gradient (`_phase_value_on_cpu`).
* Elsewhere, the phase value with the reference's derivatives in their accelerator form
  (`convtranspose._dilated.adjoint_tangent`): on TPU the phase convolution runs at matrix speed by XLA:TPU's
  cost model while the lhs-dilated one does not, and the strided forward convolution (input gradient) and
  the forward convolution's weight gradient are cheap, whereas the phase derivatives pay a space-to-depth
  copy of the cotangent (``Plan('phase', 'phase', 'adjoint')``; `benchmarks/accelerator_programs.py` has the
  cycles). With groups it is `convtranspose._phase.phase`, derivatives included: their accelerator form would
  be a convolution with ``batch_group_count``, which XLA partitions wrongly, and the reference's products
  (`convtranspose._grouped`) multiply the inserted zeros.

A `Plan` chooses the accelerator form's three parts apart, as `algorithm='auto'`'s rule does on TPU: the value
nobody differentiates, the value under differentiation and the derivatives (`convtranspose.functional._tpu_plan`).
A `Chosen` pairs any two algorithms, one for the value and one for the training step, as a tuning table chooses
them (`convtranspose.tuning`).

Either way the value and the derivatives are the layer's, to float rounding.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_derivatives import SymbolicZero

from convtranspose import _arguments
from convtranspose._dilated import adjoint_tangent, lhs_dilated, lhs_dilated_convolution
from convtranspose._phase import phase

Array = jax.Array


def hybrid(x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
           precision: lax.PrecisionLike, platform: str) -> Array:
  """On CPU `_dilated_value`, or `_phase_value_on_cpu` at stride 1; elsewhere the phases' value with the adjoint's
  derivatives (a `Plan`; with groups, `convtranspose._phase.phase`)."""
  if platform != "cpu":
    if geometry.group > 1:
      return phase(x, weight, geometry, out_spatial, precision, platform)
    return Plan("phase", "phase", "adjoint")(x, weight, geometry, out_spatial, precision, platform)
  if all(s == 1 for s in geometry.stride):
    return _phase_value_on_cpu(x, weight, geometry, out_spatial, precision, platform)
  return _dilated_value(x, weight, geometry, out_spatial, precision, platform)


def bilinear_tangent(f, x: Array, weight: Array, x_dot: Array | SymbolicZero, weight_dot: Array | SymbolicZero,
                     y: Array) -> Array:
  """``df = f(dx, W) + f(x, dW)`` of a bilinear ``f`` with ``y = f(x, W)``; a tangent JAX knows to be zero
  (an argument not differentiated) costs nothing."""
  terms = []
  if not isinstance(x_dot, SymbolicZero):
    terms.append(f(x_dot, weight))
  if not isinstance(weight_dot, SymbolicZero):
    terms.append(f(x, weight_dot))
  return functools.reduce(jnp.add, terms) if terms else jnp.zeros_like(y)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _dilated_value(x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
                   precision: lax.PrecisionLike, platform: str) -> Array:
  """`lhs_dilated` as a value; differentiated, `phase` (see `_phase_jvp`)."""
  return lhs_dilated(x, weight, geometry, out_spatial, precision, platform)


@functools.partial(_dilated_value.defjvp, symbolic_zeros=True)
def _phase_jvp(geometry, out_spatial, precision, platform, primals, tangents):
  """Every term of the `bilinear_tangent` by the phase decomposition.

  The value is recomputed by the phases too, so that reverse mode shares their patches between the value
  and the weight gradient, as `phase` alone would; the dilated value is only for undifferentiated calls.
  """
  (x, weight), (x_dot, weight_dot) = primals, tangents
  compute = functools.partial(phase, geometry=geometry, out_spatial=out_spatial, precision=precision,
                              platform=platform)
  y = compute(x, weight)
  return y, bilinear_tangent(compute, x, weight, x_dot, weight_dot, y)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5))
def _phase_value_on_cpu(x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
                        precision: lax.PrecisionLike, platform: str) -> Array:
  """`phase` as a value; differentiated, `lhs_dilated` (`_reference_jvp`)."""
  return phase(x, weight, geometry, out_spatial, precision, platform)


@functools.partial(_phase_value_on_cpu.defjvp, symbolic_zeros=True)
def _reference_jvp(geometry, out_spatial, precision, platform, primals, tangents):
  """Every term of the `bilinear_tangent` by the reference, so that reverse mode transposes XLA's
  convolutions: the input gradient a forward convolution of the cotangent, the weight gradient XLA's."""
  (x, weight), (x_dot, weight_dot) = primals, tangents
  y = _phase_value_on_cpu(x, weight, geometry, out_spatial, precision, platform)
  compute = functools.partial(lhs_dilated, geometry=geometry, out_spatial=out_spatial, precision=precision,
                              platform=platform)
  return y, bilinear_tangent(compute, x, weight, x_dot, weight_dot, y)


@dataclasses.dataclass(frozen=True)
class Plan:
  """An accelerator program chosen in three parts (`convtranspose.functional._choose_algorithm` on TPU).

  Attributes:
    value: ``'phase'`` or ``'dilated'``: the formulation of the value nobody differentiates (inference).
    trained_value: the formulation of the value under `jax.grad`, `jax.vjp` or `jax.jvp`, where it feeds a loss
      rather than the caller (XLA fuses the reference's result into the loss; the phases' interleave stays a
      copy).
    derivatives: ``'adjoint'`` (`convtranspose._dilated.adjoint_tangent`: the strided forward convolution of the
      cotangent, the forward convolution's weight gradient) or ``'reference'`` (JAX's derivatives of the
      lhs-dilated convolution, as Flax's layer is differentiated).

  Called as an algorithm of `convtranspose.functional` (``plan(x, weight, geometry, out_spatial, precision,
  platform)``); every part computes the layer, to float rounding.
  """

  value: str
  trained_value: str
  derivatives: str

  def __call__(self, x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
               precision: lax.PrecisionLike, platform: str) -> Array:
    return _planned(x, weight, geometry, out_spatial, precision, platform, self)


def _formulation(name: str, x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
                 precision: lax.PrecisionLike, platform: str) -> Array:
  if name == "phase":
    return phase(x, weight, geometry, out_spatial, precision, platform)
  return lhs_dilated_convolution(x, weight, geometry, out_spatial, precision, on_cpu=False)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def _planned(x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
             precision: lax.PrecisionLike, platform: str, plan: Plan) -> Array:
  """``plan.value``; differentiated, `_planned_jvp`."""
  return _formulation(plan.value, x, weight, geometry, out_spatial, precision, platform)


@functools.partial(_planned.defjvp, symbolic_zeros=True)
def _planned_jvp(geometry, out_spatial, precision, platform, plan, primals, tangents):
  """``plan.trained_value`` and the `bilinear_tangent` of ``plan.derivatives``."""
  (x, weight), (x_dot, weight_dot) = primals, tangents
  y = _formulation(plan.trained_value, x, weight, geometry, out_spatial, precision, platform)
  if plan.derivatives == "adjoint":
    return y, adjoint_tangent(x, weight, x_dot, weight_dot, geometry, out_spatial, y, precision)
  reference = functools.partial(lhs_dilated_convolution, geometry=geometry, out_spatial=out_spatial,
                                precision=precision, on_cpu=False)
  return y, bilinear_tangent(reference, x, weight, x_dot, weight_dot, y)


@dataclasses.dataclass(frozen=True)
class Chosen:
  """A layer computed by one algorithm and differentiated by another, each a name of `FORMULATIONS`.

  Attributes:
    value: the algorithm of the value nobody differentiates (inference).
    training: the algorithm whose value and derivatives serve under `jax.grad`, `jax.vjp` or `jax.jvp` (the
      training step), value included, so that reverse mode shares its intermediates.

  Called as an algorithm of `convtranspose.functional`; both compute the layer, to float rounding.
  """

  value: str
  training: str

  def __call__(self, x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
               precision: lax.PrecisionLike, platform: str) -> Array:
    if self.value == self.training:
      return FORMULATIONS[self.value](x, weight, geometry, out_spatial, precision, platform)
    return _chosen(x, weight, geometry, out_spatial, precision, platform, self)


@functools.partial(jax.custom_jvp, nondiff_argnums=(2, 3, 4, 5, 6))
def _chosen(x: Array, weight: Array, geometry: _arguments.Geometry, out_spatial: tuple[int, ...],
            precision: lax.PrecisionLike, platform: str, chosen: Chosen) -> Array:
  """``chosen.value``; differentiated, `_chosen_jvp`."""
  return FORMULATIONS[chosen.value](x, weight, geometry, out_spatial, precision, platform)


@functools.partial(_chosen.defjvp, symbolic_zeros=True)
def _chosen_jvp(geometry, out_spatial, precision, platform, chosen, primals, tangents):
  """The JVP of ``chosen.training``, with respect to the arguments JAX differentiates only."""
  (x, weight), (x_dot, weight_dot) = primals, tangents
  training = FORMULATIONS[chosen.training]

  def layer(x: Array, weight: Array) -> Array:
    return training(x, weight, geometry, out_spatial, precision, platform)

  if isinstance(x_dot, SymbolicZero) and isinstance(weight_dot, SymbolicZero):
    y = layer(x, weight)
    return y, jnp.zeros_like(y)
  if isinstance(x_dot, SymbolicZero):
    return jax.jvp(lambda weight: layer(x, weight), (weight,), (weight_dot,))
  if isinstance(weight_dot, SymbolicZero):
    return jax.jvp(lambda x: layer(x, weight), (x,), (x_dot,))
  return jax.jvp(layer, (x, weight), (x_dot, weight_dot))


# The algorithms by name, as `algorithm=` takes them.
FORMULATIONS = {"dilated": lhs_dilated, "phase": phase, "hybrid": hybrid}
