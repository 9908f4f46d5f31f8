"""Times the phase decomposition on layers whose phase kernels hold holes, for one checkout of this package.

Run it once per checkout to compare (each prints one JSON line: layer and algorithm -> forward and training-step
medians in ms, float32, NCHW, on the CPU)::

    git worktree add /tmp/before <commit>
    python benchmarks/tap_runs.py /tmp/before
    python benchmarks/tap_runs.py .

The training step is `jax.value_and_grad` of ``sum(y ** 2)`` with respect to input and weight. The results of
2026-12-03 (before and after `convtranspose._phase._products_of_tap_runs`, two runs each, alternating) are in
``benchmarks/results/cpu-phase-tap-runs.json``.
"""

import json
import pathlib
import sys
import time

ROOT = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else ".").resolve()
sys.path.insert(0, str(ROOT))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import convtranspose as ct  # noqa: E402

# name, input shape, weight shape, the mint arguments
LAYERS = [
    ("StyleGAN-like 4x128->128 32x32 k3 s2", (4, 128, 32, 32), (128, 128, 3, 3), dict(stride=2, padding=1,
                                                                                       output_padding=1)),
    ("output_padding 8x128->64 16x16 k3 s2", (8, 128, 16, 16), (128, 64, 3, 3), dict(stride=2, padding=1,
                                                                                      output_padding=1)),
    ("8x16->8 64x64 k3 s2", (8, 16, 64, 64), (16, 8, 3, 3), dict(stride=2, padding=1, output_padding=1)),
    ("output 4x64->3 64x64 k5 s2", (4, 64, 64, 64), (64, 3, 5, 5), dict(stride=2, padding=2, output_padding=1)),
    ("1-D 8x64->32 L1024 k3 s2", (8, 64, 1024), (64, 32, 3), dict(stride=2, padding=1, output_padding=1)),
]


def median_ms(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(fn(*args))
    times.append(time.perf_counter() - start)
  return 1e3 * float(np.median(times))


def main() -> None:
  assert pathlib.Path(ct.__file__).is_relative_to(ROOT), f"imported {ct.__file__}, not the checkout {ROOT}"
  results = {}
  rng = np.random.default_rng(0)
  for name, input_shape, weight_shape, arguments in LAYERS:
    x, weight = (jnp.asarray(rng.random(shape), jnp.float32) for shape in (input_shape, weight_shape))
    layer = getattr(ct, f"conv_transpose{len(weight_shape) - 2}d")
    for algorithm in ("phase", "auto"):
      def forward(x, weight, algorithm=algorithm):
        return layer(x, weight, algorithm=algorithm, **arguments)  # noqa: B023

      train = jax.value_and_grad(lambda x, weight, forward=forward: jnp.sum(forward(x, weight) ** 2), argnums=(0, 1))
      results[f"{name} {algorithm}"] = (round(median_ms(jax.jit(forward), x, weight, repeats=9), 2),
                                        round(median_ms(jax.jit(train), x, weight, repeats=5), 2))
  print(json.dumps(results))


if __name__ == "__main__":
  main()
