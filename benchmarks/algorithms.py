"""Forward and training-step times of the three algorithms on a few layers: the data behind ``'auto'``.

Usage::

    python benchmarks/algorithms.py [--dtype bf16] [--layers 8 9]

Each layer (MindSpore ``pad_mode='pad'``, NCHW input, fp32 unless ``--dtype bf16``) is timed with
``algorithm='dilated'``, ``'phase'`` and ``'hybrid'`` on JAX's default device, then the choice ``'auto'``
makes there is printed beside them, with its time over the fastest algorithm's
(`convtranspose.functional._choose_algorithm` quotes these numbers; the last layers are outside
``benchmarks/bench.py``'s suite, to check the rule on). On
CPU the lhs-dilated training step is XLA's slow weight gradient (hundreds of milliseconds), so ``dilated`` is
timed forward only there, but for stride 1. Each cell ends with the memory XLA's compiled program holds beyond its inputs and
outputs (``memory_analysis().temp_size_in_bytes``), forward / training step: the phase path's patches, or
whatever the device's convolution needs.
"""

import argparse
import functools
import sys

import jax
import jax.numpy as jnp
import peers
from bench import DTYPES, blocking, layer_operands, median_ms, target_of_shape

from convtranspose import _arguments, functional

# (batch, C_in, C_out, spatial input, kernel, stride, padding, output_padding)
LAYERS = [
    (32, 512, 256, (4, 4), 3, 2, 1, 1),
    (8, 128, 128, (16, 16), 3, 2, 1, 1),
    (4, 128, 128, (32, 32), 3, 2, 1, 0),
    (8, 128, 64, (16, 16), 5, 2, 2, 1),
    (16, 64, 32, (32, 32), 3, 2, 1, 1),
    (8, 64, 128, (16, 16), 3, 2, 1, 1),
    (8, 64, 256, (32, 32), 3, 2, 1, 1),
    (8, 64, 64, (32, 32), 4, 2, 1, 0),
    # Taps that tile the stride, on inputs so small that the phases cover many more rows than the input has.
    (32, 256, 128, (8, 8), 4, 2, 1, 0),
    (64, 512, 256, (4, 4), 4, 2, 1, 0),
    (32, 128, 64, (8, 8), 4, 2, 1, 0),
    (16, 256, 128, (16, 16), 4, 2, 1, 0),
    (8, 96, 96, (16, 16), 6, 4, 1, 0),
    (8, 128, 64, (256,), 3, 2, 1, 1),
    (4, 256, 128, (128,), 3, 2, 1, 1),
    (2, 32, 16, (8, 8, 8), 4, 2, 1, 0),
    # Few output channels (the col2im product's rule), then layers outside the benchmark suite to check it on.
    (16, 64, 1, (32, 32), 4, 2, 1, 0),
    (8, 128, 3, (64, 64), 4, 2, 1, 0),
    (4, 64, 3, (64, 64), 5, 2, 2, 0),
    (8, 64, 1, (64, 64), 3, 1, 1, 0),
    (4, 32, 3, (128, 128), 7, 1, 3, 0),
    (8, 16, 3, (64, 64), 5, 1, 2, 0),
    (8, 96, 2, (48, 48), 6, 2, 2, 0),
    (4, 48, 1, (96, 96), 3, 2, 1, 1),
    (16, 256, 3, (16, 16), 4, 2, 1, 0),
    (8, 64, 4, (64, 64), 4, 2, 1, 0),
    (8, 24, 8, (64, 64), 4, 2, 1, 0),
    (8, 32, 1, (2048,), 16, 8, 4, 0),
    (2, 24, 3, (24, 24, 24), 3, 2, 1, 1),
]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--dtype", choices=tuple(DTYPES), default="fp32")
  parser.add_argument("--layers", nargs="+", type=int, help="indices into LAYERS (default: all)")
  args = parser.parse_args()
  dtype = DTYPES[args.dtype][0]
  platform = jax.default_backend()
  on_cpu = platform == "cpu"
  print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}, {jnp.dtype(dtype).name}; milliseconds, "
        "forward / training step")
  chosen = LAYERS if args.layers is None else [LAYERS[i] for i in args.layers]
  for batch, c_in, c_out, spatial, k, s, p, op in chosen:
    x, weight = (jnp.asarray(a, dtype) for a in layer_operands(batch, c_in, c_out, spatial, k))
    cells, timings = [], {}
    for algorithm in ("dilated", "phase", "hybrid"):
      layer = functools.partial(functional.conv_transpose, bias=None, stride=s, pad_mode="pad", padding=p,
                                output_padding=op, algorithm=algorithm)
      # Compiled once: timed, and asked for its temporary buffers (XLA's memory analysis).
      target = jnp.asarray(target_of_shape(jax.eval_shape(layer, x, weight).shape))
      compiled = [jax.jit(layer).lower(x, weight).compile(),
                  jax.jit(peers.training_step(layer)).lower(x, weight, target).compile()]
      forward, train = blocking(compiled[0], x, weight), blocking(compiled[1], x, weight, target)
      times = [min(median_ms(forward, 5) for _ in range(2))]
      if algorithm != "dilated" or not on_cpu or s == 1:  # stride 1: no lhs dilation, JAX's gradient is fast
        times.append(min(median_ms(train, 3) for _ in range(2)))
      timings[algorithm] = times
      memory = [c.memory_analysis().temp_size_in_bytes / 2**20 for c in compiled]
      cells.append(f"{algorithm} " + " / ".join(f"{t:7.2f}" for t in times) + " ms, "
                   + " / ".join(f"{m:.1f}" for m in memory) + " MiB")
    geometry = _arguments.geometry(len(spatial), k, s, "pad", p, 1, 1, output_padding=op)
    auto = functional._choose_algorithm("auto", geometry, c_in, c_out, dtype, platform, batch, spatial)
    # auto's time over the fastest algorithm's, forward / training step (of those timed)
    ratios = [timings[auto][i] / min(t[i] for t in timings.values() if len(t) > i) if len(timings[auto]) > i
              else float("nan") for i in range(2)]
    print(f"{batch}x{c_in}->{c_out} {'x'.join(map(str, spatial))} k{k} s{s}: " + " | ".join(cells)
          + f" | auto: {auto}, {ratios[0]:.2f}x / {ratios[1]:.2f}x the fastest", flush=True)


if __name__ == "__main__":
  sys.exit(main())
