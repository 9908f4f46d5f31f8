"""Runs transposed convolutions that could hit XLA's operand-swap CHECK failure; meant for a subprocess.

Usage: ``python tests/xla_abort_probe.py CHUNK NUM_CHUNKS [--unguarded] [--phase] [--platform gpu]`` for a
share of the sweep, or ``python tests/xla_abort_probe.py --config "REPR" [...]`` for one configuration.

For every configuration of its chunk it prints one ``config`` line *before* compiling, then compiles and
runs, in one jitted function, the forward pass and the gradients with respect to the input and the weight.
The last line is ``done N`` when every configuration ran. If XLA aborts, the process dies with SIGABRT and
the last ``config`` line names the culprit. ``--unguarded`` removes the package's guard (to show the abort
is real on this jaxlib). The lhs-dilated algorithm is the one at risk and the one probed; ``--phase`` runs
the phase decomposition instead (no lhs dilation, so XLA's pattern cannot match). ``--platform gpu`` (or
``tpu``) computes, on this CPU, what the package gives XLA for that platform (`functional._by_platform`):
there ``'dilated'`` is differentiated through the forward convolution's adjoint, whose convolutions differ
from JAX's own, so the probe also runs the forward-mode derivative (`jax.jvp`) of each configuration with a
stride above 1 (at stride 1 that platform computes the reference, as swept on the CPU).
"""

import ast
import itertools
import sys

import jax
import jax.numpy as jnp

import convtranspose as ct
from convtranspose import _dilated, functional

# One spatial dimension: input length, kernel, stride, dilation (the ranges the issue names).
LENGTHS, KERNELS, STRIDES, DILATIONS = (1, 2, 3), (1, 2, 3, 4, 5), (1, 2, 3), (1, 2)
# The swap only happens when it looks cheaper: a companion dimension whose kernel is larger than its input
# makes it so, as in the reproducer.
COMPANIONS = {"same": (1, 5, 1, 1, (0, 0)), "valid": (1, 5, 1, 1, (0, 0)), "pad": (1, 4, 1, 1, (1, 0))}


def paddings(mode, kernel, dilation):
  """``pad`` mode: zero, one, and around ``dk - 1`` (where the lhs-dilated convolution is unpadded)."""
  if mode != "pad":
    return ((0, 0),)
  edge = dilation * (kernel - 1)
  pads = {(p, p) for p in (0, 1, edge, edge + 1)} | {(edge, 0), (0, edge), (edge, max(edge - 1, 0))}
  return sorted(pads)


def configurations():
  """``(pad_mode, ((L, k, s, d, pad) per dimension), channels, group[, output_padding, data_format,
  padding_mode])``, every small case, in order. ``output_padding`` moves the high padding, so it is swept with
  the paddings above plus ``(dk - 1, dk - 1 + output_padding)``, which leaves the lhs-dilated convolution
  unpadded, channels-last."""
  for mode in ("same", "valid", "pad"):
    companion = COMPANIONS[mode]
    for length, kernel, stride, dilation in itertools.product(LENGTHS, KERNELS, STRIDES, DILATIONS):
      for pad in paddings(mode, kernel, dilation):
        swept = (length, kernel, stride, dilation, pad)
        yield mode, (swept, companion), 1, 1
        yield mode, (companion, swept), 1, 1
        yield mode, (companion, swept), 2, 2
        yield mode, (swept, swept), 1, 1
      if mode != "valid":  # a padding_mode convolves unpadded (lhs padding dk - 1 on both sides), then folds
        swept = (length, kernel, stride, dilation, (1, 1) if mode == "pad" else (0, 0))
        yield mode, (swept, companion), 1, 1, (0, 0), "NCHW", "circular"
      if mode != "pad":
        continue
      edge = dilation * (kernel - 1)
      for output_padding in range(1, max(stride, dilation)):
        for pad in sorted({*paddings(mode, kernel, dilation), (edge, edge + output_padding)}):
          swept = (length, kernel, stride, dilation, pad)
          yield mode, (swept, companion), 1, 1, (output_padding, 0), "NHWC"
          yield mode, (companion, swept), 2, 2, (0, output_padding), "NHWC"


def run(mode, dims, channels, group, output_padding=(0, 0), data_format="NCHW", padding_mode="zeros",
        algorithm="dilated", forward_mode=False):
  (lengths, kernels, strides, dilations, pads) = zip(*dims)
  padding = tuple(p for pair in pads for p in pair) if mode == "pad" else 0
  x = jnp.ones((1, channels, *lengths))
  if data_format == "NHWC":
    x = jnp.moveaxis(x, 1, -1)
  w = jnp.ones((channels, channels // group, *kernels))

  def loss(x, w):
    y = ct.conv2d_transpose(x, w, None, strides, mode, padding, dilations, group, output_padding=output_padding,
                            padding_mode=padding_mode, data_format=data_format, algorithm=algorithm)
    return jnp.sum(y * y), y

  def program(x, w):  # one compilation per configuration: the forward pass, both gradients[, the JVP]
    value_and_gradients = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, w)
    return (value_and_gradients, jax.jvp(loss, (x, w), (x, w))) if forward_mode else value_and_gradients

  try:
    jax.block_until_ready(jax.jit(program)(x, w))
  except ValueError:
    return  # a negative output length: rejected before XLA sees it


def main():
  args = [a for a in sys.argv[1:] if a not in ("--unguarded", "--phase")]
  if "--unguarded" in sys.argv:
    _dilated.operand_swap_guard = lambda *args: 0
  platform = None
  if "--platform" in args:
    platform = args.pop(args.index("--platform") + 1)
    args.remove("--platform")
    functional._by_platform = lambda x, w, compute: compute(x, w, platform=platform)
  algorithm = "phase" if "--phase" in sys.argv else "dilated"
  if args[0] == "--config":
    chosen = [ast.literal_eval(args[1])]
  else:
    chunk, num_chunks = int(args[0]), int(args[1])
    chosen = [c for i, c in enumerate(configurations()) if i % num_chunks == chunk]
    if platform is not None:  # at stride 1 that platform computes the reference, as swept on the CPU
      chosen = [c for c in chosen if any(dim[2] > 1 for dim in c[1])]
  count = 0
  for config in chosen:
    print("config", config, flush=True)
    run(*config, algorithm=algorithm, forward_mode=platform is not None)
    count += 1
  print("done", count, flush=True)


if __name__ == "__main__":
  main()
