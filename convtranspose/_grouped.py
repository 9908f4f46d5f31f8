"""Grouped convolutions as matrix products batched over the groups, which XLA partitions correctly.

Every convolution of a layer with ``group > 1`` (the phases' product, the reference's convolution of the
dilated input, and through them every derivative) is computed here, on every platform, never by XLA's
grouped convolution. XLA's SPMD partitioner mishandles that convolution when the batch is sharded
(``docs/reliability.md``): the weight gradient of a grouped convolution is a convolution with
``batch_group_count``, which it sums over every mesh axis instead of the batch's, so that on a ``(4, 2)``
mesh with the batch over the first axis each weight gradient comes out twice its value (jaxlib 0.8.1 to
0.10.2, Auto and Explicit axes alike, depthwise layers too); and it all-gathers the batch for the grouped
forward convolution and computes the whole batch on every device (openxla/xla#47945). A matrix product
with the groups as a batch dimension is partitioned as any other: the batch stays sharded, and the weight
gradient, a product contracting the batch, is summed over the batch's mesh axes only.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

Array = jax.Array


def convolution(x: Array, kernel: Array, group: int, precision: lax.PrecisionLike,
                dilation: tuple[int, ...] | None = None, accumulation: Any = None) -> Array:
  """Unpadded stride-1 convolution of ``x`` ``(N, *L, C)`` with ``kernel`` ``(*K, C // G, M)``, channels-last.

  ``y[p, g, m] = sum_{t, c} x[p + d * t, g, c] * kernel[t, c, g, m]`` for ``G = group`` groups, input
  channels ``(G, C // G)`` and output channels ``(G, M // G)`` group-major (XLA's convention), taps ``t``
  spaced by the ``dilation`` ``d``: ``(N, *Q, M)`` with ``Q = L - d * (K - 1)``. Each group's product is
  one matrix product of its shifted windows side by side (im2col), all groups in one `jax.lax.dot_general`
  with the group as a batch dimension; where a group has one input channel (depthwise) there is nothing to
  contract over the channels, and each tap is a broadcast product, summed over the taps, which XLA fuses
  into one pass with no copies of the windows. The products accumulate in ``accumulation`` (None: ``x``'s
  dtype), and the result is rounded to ``x``'s dtype once.
  """
  n = kernel.ndim - 2
  kernel_size, (channels, columns) = kernel.shape[:n], kernel.shape[n:]
  dilation = dilation or (1,) * n
  batch = x.shape[0]
  lengths = [length - d * (k - 1) for length, k, d in zip(x.shape[1:-1], kernel_size, dilation)]
  taps = int(np.prod(kernel_size))
  kernel = kernel.reshape(taps, channels, group, columns // group)

  def window(tap: tuple[int, ...]) -> Array:  # (N, *Q, G, C // G)
    start = [d * t for d, t in zip(dilation, tap)]
    block = lax.slice(x, (0, *start, 0), (batch, *(s + q for s, q in zip(start, lengths)), x.shape[-1]))
    return block.reshape(batch, *lengths, group, channels)

  if channels == 1:  # (N, *Q, G, 1) . (G, 1, M // G) per tap: contracting nothing, (G, N, *Q, M // G)
    terms = [lax.dot_general(window(tap), kernel[t], (((n + 2,), (0,)), ((n + 1,), (1,))), precision=precision,
                             preferred_element_type=accumulation) for t, tap in enumerate(np.ndindex(*kernel_size))]
    y = functools.reduce(jnp.add, terms)
  else:  # (N, *Q, T, G, C // G) . (T, C // G, G, M // G): (G, N, *Q, M // G)
    patches = jnp.stack([window(tap) for tap in np.ndindex(*kernel_size)], axis=n + 1)
    y = lax.dot_general(patches, kernel, (((n + 1, n + 3), (0, 1)), ((n + 2,), (2,))), precision=precision,
                        preferred_element_type=accumulation)
  return jnp.moveaxis(y, 0, -2).reshape(batch, *lengths, columns).astype(x.dtype)
