"""The peers as their own users write them, and the training step every benchmark compiles or times.

A Flax user keeps Flax's kernel as a parameter, ``(*k, C_in, C_out)`` unflipped (`convtranspose.convert.flax_kernel`
turns a MindSpore weight into it once, at the checkpoint), writes ``padding='SAME'`` where the layer doubles the
input (``L * s`` rows) and the lhs-dilated convolution's pairs otherwise, works in NHWC and sets ``dtype``;
`jax.lax.conv_transpose`'s user does the same with its default ``'...IO'`` kernel spec. Neither sets
``transpose_kernel``, which only serves a weight laid out for a forward convolution. Our layer takes the stored
MindSpore weight ``(C_in, C_out // group, *k)``, as our users' does.

A training step is what an optimizer consumes: `jax.value_and_grad` of a scalar loss of the output (the mean
squared error to a target, in float32) with respect to the input and the weight.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

CHANNELS_LAST = {1: "NLC", 2: "NHWC", 3: "NDHWC"}


def flax_padding(kernel_size: int, stride: int, padding: int, dilation: int = 1, output_padding: int = 0):
  """Flax's padding of a MindSpore ``pad_mode='pad'`` layer, per spatial dimension.

  ``'SAME'`` where the output has ``L * stride`` rows, ``(L - 1) * s + dk - 2 * padding + output_padding`` with
  ``dk = dilation * (kernel_size - 1) + 1``, as a Flax user writes it; otherwise the pair of the lhs-dilated
  convolution, ``(dk - 1 - padding, dk - 1 - padding + output_padding)``.
  """
  dk = dilation * (kernel_size - 1) + 1
  if dk - stride - 2 * padding + output_padding == 0:
    return "SAME"
  return (dk - 1 - padding, dk - 1 - padding + output_padding)


def _padding(n: int, kernel_size: int, stride: int, padding: int, dilation: int, output_padding: int):
  pad = flax_padding(kernel_size, stride, padding, dilation, output_padding)
  return pad if isinstance(pad, str) else [pad] * n


def flax_layer(n: int, c_out: int, kernel_size: int, stride: int, padding: int, dilation: int = 1,
               output_padding: int = 0, dtype=None):
  """``fn(x, kernel)``: Flax's ``nn.ConvTranspose`` on NHWC ``x`` with its own ``kernel`` ``(*k, C_in, C_out)``,
  applied as ``{'params': {'kernel': kernel}}``, so that its gradient is the parameter's."""
  module = nn.ConvTranspose(c_out, (kernel_size,) * n, strides=(stride,) * n,
                            padding=_padding(n, kernel_size, stride, padding, dilation, output_padding),
                            kernel_dilation=(dilation,) * n, use_bias=False, dtype=dtype, param_dtype=dtype)
  return lambda x, kernel: module.apply({"params": {"kernel": kernel}}, x)


def lax_layer(n: int, kernel_size: int, stride: int, padding: int, dilation: int = 1, output_padding: int = 0):
  """``fn(x, kernel)``: `jax.lax.conv_transpose` on NHWC ``x`` with the kernel Flax's takes (``'...IO'``)."""
  spec = "N" + "DHW"[-n:] + "C"
  pad = _padding(n, kernel_size, stride, padding, dilation, output_padding)
  return lambda x, kernel: lax.conv_transpose(x, kernel, (stride,) * n, pad, rhs_dilation=(dilation,) * n,
                                              dimension_numbers=(spec, "DHW"[-n:] + "IO", spec))


def flax_kernel_shape(n: int, c_in: int, c_out: int, kernel_size: int) -> tuple[int, ...]:
  return (kernel_size,) * n + (c_in, c_out)


def loss(y, target):
  """The mean squared error of ``y`` to ``target``, in float32 (as a bfloat16 model computes its loss)."""
  return jnp.mean(jnp.square(y.astype(jnp.float32) - target.astype(jnp.float32)))


def training_step(fn):
  """``(x, weight, target) -> (loss, (dx, dweight))``: `jax.value_and_grad` of `loss` of ``fn(x, weight)``."""
  return jax.value_and_grad(lambda x, weight, target: loss(fn(x, weight), target), argnums=(0, 1))
