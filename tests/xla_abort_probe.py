"""Compiles transposed convolutions that could hit XLA's operand-swap CHECK failure; meant for a subprocess.

Usage: ``python tests/xla_abort_probe.py CHUNK NUM_CHUNKS`` for a share of the sweep, ``--indices I,J,...``
for some of its configurations, or ``--config "REPR"`` for one; options below (``--help``).

Each configuration is one program: the forward pass and the gradients with respect to the input and the
weight. ``--batch B`` compiles B configurations' programs as one XLA program (disconnected parts: XLA's
simplifier rewrites each convolution on its own, and the optimized convolutions are the same as compiled
apart; `tests/test_xla_abort.py` checks that on a sample). Before compiling a batch the probe prints ``batch
I,J,...`` (the sweep's indices), after running it ``ok I,J,...``, and at the end ``done N``. If XLA aborts,
the process dies with SIGABRT and the last ``batch`` line holds the culprit; the test then compiles that
batch's configurations one by one, so every configuration gets its own verdict.

``--unguarded`` removes the package's guard (to show the abort is real on this jaxlib). The lhs-dilated
algorithm is the one at risk and the one probed; ``--phase`` probes the phase decomposition instead (no lhs
dilation, so XLA's pattern cannot match). ``--platform gpu`` (or ``tpu``) computes, on this CPU, what the
package gives XLA for that platform: there ``'dilated'`` is differentiated through the forward convolution's
adjoint, whose convolutions differ from JAX's own, so the probe also runs the forward-mode derivative
(`jax.jvp`) of each configuration with a stride above 1 (at stride 1 that platform computes the reference, as
swept on the CPU). Either way only that platform's formulation is traced (`functional._by_platform`): XLA
lowering for one platform keeps only its branch of the layer's `lax.platform_dependent`. ``--exact`` traces
the layer as users call it, every platform's branch.
"""

import argparse
import ast
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np

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


def program(mode, dims, channels, group, output_padding=(0, 0), data_format="NCHW", padding_mode="zeros",
            algorithm="dilated", forward_mode=False):
  """The configuration's program (forward pass, both gradients[, the JVP]) with its ``operands`` attached;
  None where the layer rejects the configuration (a negative output length) before XLA sees it."""
  (lengths, kernels, strides, dilations, pads) = zip(*dims)
  padding = tuple(p for pair in pads for p in pair) if mode == "pad" else 0
  x = np.ones((1, channels, *lengths), np.float32)  # NumPy: no program compiled for making an operand
  if data_format == "NHWC":
    x = np.moveaxis(x, 1, -1)
  w = np.ones((channels, channels // group, *kernels), np.float32)

  def layer(x, w):
    return ct.conv2d_transpose(x, w, None, strides, mode, padding, dilations, group, output_padding=output_padding,
                               padding_mode=padding_mode, data_format=data_format, algorithm=algorithm)

  try:
    jax.eval_shape(layer, x, w)
  except ValueError:
    return None

  def loss(x, w):
    y = layer(x, w)
    return jnp.sum(y * y), y

  def run(x, w):
    value_and_gradients = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(x, w)
    return (value_and_gradients, jax.jvp(loss, (x, w), (x, w))) if forward_mode else value_and_gradients

  run.operands = (x, w)
  return run


def convolutions(compiled) -> list[str]:
  """The convolutions of XLA's optimized program, operand names dropped: what its simplifier made of ours."""
  lines = [line.split("=", 1)[1] for line in compiled.as_text().splitlines() if " convolution(" in line]
  return sorted({re.sub(r"%[\w.-]+", "%", line).split(", metadata=")[0].strip() for line in lines})


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("chunk", nargs="?", type=int, help="this share of the sweep (with NUM_CHUNKS)")
  parser.add_argument("num_chunks", nargs="?", type=int)
  parser.add_argument("--indices", help="comma-separated indices into the sweep, instead of a chunk")
  parser.add_argument("--config", help="one configuration, as its repr, instead of the sweep's")
  parser.add_argument("--batch", type=int, default=1, help="configurations compiled in one program")
  parser.add_argument("--platform", default="cpu", help="whose formulation to give this CPU's XLA")
  parser.add_argument("--unguarded", action="store_true", help="remove the package's guard")
  parser.add_argument("--phase", action="store_true", help="probe the phase decomposition instead")
  parser.add_argument("--exact", action="store_true", help="the layer as users call it: every platform traced")
  parser.add_argument("--convolutions", action="store_true", help="print XLA's optimized convolutions")
  args = parser.parse_args()
  if args.exact and args.platform != "cpu":
    parser.error("--exact traces every platform's branch and compiles the CPU's: it needs --platform cpu")
  if args.unguarded:
    _dilated.operand_swap_guard = lambda *args: 0
  if not args.exact:  # trace one platform's formulation, not three: XLA lowering for the CPU keeps only one
    functional._by_platform = lambda x, w, compute: compute(x, w, platform=args.platform)
  sweep = list(configurations())
  if args.config is not None:
    chosen = [(0, ast.literal_eval(args.config))]
  elif args.indices is not None:
    chosen = [(int(i), sweep[int(i)]) for i in args.indices.split(",") if i]
  else:
    chosen = [(i, c) for i, c in enumerate(sweep) if i % args.num_chunks == args.chunk]
  if args.platform != "cpu":  # at stride 1 that platform computes the reference, as swept on the CPU
    chosen = [(i, c) for i, c in chosen if any(dim[2] > 1 for dim in c[1])]
  algorithm = "phase" if args.phase else "dilated"
  programs = [(i, program(*c, algorithm=algorithm, forward_mode=args.platform != "cpu")) for i, c in chosen]
  print("rejected", ",".join(str(i) for i, p in programs if p is None), flush=True)
  programs = [(i, p) for i, p in programs if p is not None]
  count = 0
  for start in range(0, len(programs), args.batch):
    batch = programs[start:start + args.batch]
    print("batch", ",".join(str(i) for i, _ in batch), flush=True)
    runs, operands = [p for _, p in batch], [p.operands for _, p in batch]
    compiled = jax.jit(lambda operands, runs=runs: [run(*o) for run, o in zip(runs, operands)]).lower(
        operands).compile()
    jax.block_until_ready(compiled(operands))
    if args.convolutions:
      for line in convolutions(compiled):
        print("convolution", line, flush=True)
    count += len(batch)
    print("ok", ",".join(str(i) for i, _ in batch), flush=True)
  print("done", count, flush=True)


if __name__ == "__main__":
  main()
