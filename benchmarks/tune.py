"""The CPU's shipped tuning table, and how `algorithm='auto'` does with it.

    python benchmarks/tune.py --table convtranspose/tables/<name>.json --out benchmarks/results/cpu-auto.json

For every layer of the extended suite (`bench.LAYERS` and the grouped, depthwise, dilated and
``output_padding`` layers of `accelerator_programs.SUITE`) and ten layers outside it (`OUTSIDE`, chosen before
any of them was timed), in both layouts and in float32 and bfloat16, one process:

1. times every candidate's forward pass and training step as `convtranspose.autotune` does
   (`convtranspose.tuning.median_times`: medians, in rounds, compilation excluded; the training step is
   `jax.value_and_grad` of the mean squared error w.r.t. input and weight);
2. writes the suite's measurements as the table `algorithm='auto'` reads for this processor (``--table``);
3. compiles ``auto`` with that table active (on the suite it takes the table's choice, outside it the rule,
   `convtranspose.functional._choose_algorithm`) and times it side by side with every candidate again,
   reporting ``auto`` over the fastest candidate, and the rule's choice over the fastest.
"""

import argparse
import itertools
import json
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parent))

from accelerator_programs import SUITE, Layer

import convtranspose as ct
from convtranspose import _arguments, functional, tuning

FEATURES = ("grouped 16x256->256 32x32 k4 s2 g8", "depthwise 8x128->128 32x32 k4 s2",
            "dilated 8x64->64 16x16 k3 s2 d2", "output_padding 8x128->64 16x16 k3 s2")
# Ten layers outside the suite, picked for what models use before any was timed: the rule serves them.
OUTSIDE = {
    "DCGAN mid 8x256->128 16x16 k4 s2": Layer(8, 256, 128, (16, 16), 4, 2, 1),
    "U-Net deep 4x512->256 8x8 k2 s2": Layer(4, 512, 256, (8, 8), 2, 2, 0),
    "decoder 16x32->16 64x64 k4 s2": Layer(16, 32, 16, (64, 64), 4, 2, 1),
    "output_padding 2x64->32 128x128 k3 s2": Layer(2, 64, 32, (128, 128), 3, 2, 1, output_padding=1),
    "output 8x128->1 32x32 k4 s2": Layer(8, 128, 1, (32, 32), 4, 2, 1),
    "1-D 16x32->16 L512 k4 s2": Layer(16, 32, 16, (512,), 4, 2, 1),
    "WaveGAN-like 1-D 4x256->128 L128 k25 s4": Layer(4, 256, 128, (128,), 25, 4, 11, output_padding=1),
    "3-D 1x64->32 8^3 k2 s2": Layer(1, 64, 32, (8, 8, 8), 2, 2, 0),
    "stride 1 4x32->32 32x32 k5": Layer(4, 32, 32, (32, 32), 5, 1, 2),
    "decoder 4x96->48 28x28 k4 s2": Layer(4, 96, 48, (28, 28), 4, 2, 1),
}
DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def suite() -> dict[str, Layer]:
  import bench
  layers = {name: Layer(b, c_in, c_out, spatial, k, s, p) for name, (b, c_in, c_out, spatial, k, s, p)
            in bench.LAYERS.items()}
  return {**layers, **{name: SUITE[name] for name in FEATURES}}


def layer_call(layer: Layer, channels_last: bool, dtype: str) -> tuning.LayerCall:
  n = len(layer.spatial)
  geometry = _arguments.geometry(n, (layer.k,) * n, layer.s, "pad", layer.p, layer.d, layer.group,
                                 layer.output_padding, _arguments.DATA_FORMATS[n][channels_last])
  x_shape = ((layer.batch, *layer.spatial, layer.c_in) if channels_last
             else (layer.batch, layer.c_in, *layer.spatial))
  return tuning.LayerCall(geometry, x_shape, (layer.c_in, layer.c_out // layer.group, *(layer.k,) * n), dtype)


def rule_choice(call: tuning.LayerCall) -> str:
  """The algorithm the rule takes for ``call`` on CPU (a name there)."""
  batch, spatial = call.input_shape[0], (call.input_shape[1:-1] if call.geometry.channels_last
                                         else call.input_shape[2:])
  out_channels = call.weight_shape[1] * call.geometry.group
  return functional._choose_algorithm("auto", call.geometry, call.weight_shape[0], out_channels, call.dtype, "cpu",
                                      batch, tuple(spatial))


def forward_of(algorithm: str, call: tuning.LayerCall) -> str:
  """The formulation of ``algorithm``'s value on CPU: `hybrid`'s is the phases' at stride 1, else the reference's."""
  if algorithm != "hybrid":
    return algorithm
  return "phase" if all(s == 1 for s in call.geometry.stride) else "dilated"


def decoder_autotune_seconds() -> tuple[float, ct.Tuning]:
  """Wall time of `convtranspose.autotune` on the training step of a five-layer NNX decoder (DCGAN's generator
  shape: 8 examples, 256 channels at 4x4 to 3 at 128x128, k4 s2), compilation of the candidates included."""
  import jax.numpy as jnp
  from flax import nnx

  class Decoder(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
      widths = (256, 128, 64, 32, 16, 3)
      self.layers = nnx.List([ct.nnx.ConvTranspose2d(a, b, 4, stride=2, padding=1, rngs=rngs)
                              for a, b in itertools.pairwise(widths)])

    def __call__(self, x):
      for layer in self.layers[:-1]:
        x = jax.nn.relu(layer(x))
      return jnp.tanh(self.layers[-1](x))

  model = Decoder(nnx.Rngs(0))
  x, target = jnp.ones((8, 256, 4, 4)), jnp.zeros((8, 3, 128, 128))

  @nnx.jit
  def train_step(model, x, target):
    return nnx.value_and_grad(lambda model: jnp.mean((model(x) - target) ** 2))(model)

  start = time.perf_counter()
  result = ct.autotune(train_step, model, x, target)
  return time.perf_counter() - start, result


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--decoder", action="store_true", help="only time autotune on a five-layer decoder")
  parser.add_argument("--table", type=Path, help="where to write the suite's table")
  parser.add_argument("--out", type=Path, help="the results (JSON)")
  parser.add_argument("--repeats", type=int, default=5)
  parser.add_argument("--quick", action="store_true", help="two layers of each kind, fp32 NCHW only")
  args = parser.parse_args()
  if args.decoder:
    seconds, result = decoder_autotune_seconds()
    print(result)
    print(f"convtranspose.autotune of a five-layer decoder's training step: {seconds:.1f} s")
    if args.out:
      import bench
      args.out.write_text(json.dumps(dict(machine=bench.machine_description(), seconds=seconds,
                                          tuning=result.to_json()), indent=1))
    return
  layers = {"suite": suite(), "outside": OUTSIDE}
  if args.quick:
    layers = {kind: dict(list(named.items())[:2]) for kind, named in layers.items()}
  table = ct.Tuning(*tuning.device_of("cpu"), source="benchmarks/tune.py (the extended suite)")
  rows = []
  start = time.perf_counter()
  for dtype_name, dtype in DTYPES.items():
    for channels_last in (False, True):
      for kind, named in layers.items():
        for name, layer in named.items():
          if args.quick and (dtype_name != "fp32" or channels_last):
            continue
          call = layer_call(layer, channels_last, dtype)
          operands, programs = tuning.step_operands(call), tuning.candidate_programs(call)
          first = {train: tuning.median_times(programs[train], operands[train], args.repeats)
                   for train in (False, True)}
          measured = tuning.Measured(call.signature, first[False], first[True])
          if kind == "suite":
            table.layers[measured.signature] = measured
          with ct.Tuning(*table.device, {measured.signature: measured} if kind == "suite" else {}):
            auto = {train: tuning.program(call, "auto", train) for train in (False, True)}
          # Side by side again, auto among the candidates: auto over the fastest, the rule's choice over it.
          again = {train: tuning.median_times({**programs[train], "auto": auto[train]}, operands[train],
                                              args.repeats) for train in (False, True)}
          rule = rule_choice(call)
          row = dict(layer=name, kind=kind, dtype=dtype_name, layout="channels-last" if channels_last else "NCHW",
                     signature=measured.signature, forward_s=measured.forward, training_s=measured.training,
                     side_by_side_forward_s=again[False], side_by_side_training_s=again[True], rule=rule,
                     table={"value": measured.value, "trained": measured.trained} if kind == "suite" else None)
          for step, train in (("forward", False), ("training", True)):
            times = again[train]
            best = min(t for name, t in times.items() if name != "auto")
            row[f"auto_over_fastest_{step}"] = times["auto"] / best
            row[f"rule_over_fastest_{step}"] = times[forward_of(rule, call) if step == "forward" else rule] / best
          rows.append(row)
          print(f"{dtype_name} {row['layout']:13} {kind:7} {name:42} fwd " +
                " ".join(f"{k} {v * 1e3:.2f}" for k, v in again[False].items()) + " | train " +
                " ".join(f"{k} {v * 1e3:.2f}" for k, v in again[True].items()) + f" | rule {rule}", flush=True)
          if args.out:
            save(rows, args.out, time.perf_counter() - start)
  if args.table:
    table.save(args.table)
  for kind in layers:
    for step in ("forward", "training"):
      ratios = [row[f"auto_over_fastest_{step}"] for row in rows if row["kind"] == kind]
      rule = [row[f"rule_over_fastest_{step}"] for row in rows if row["kind"] == kind]
      print(f"{kind} {step}: auto / fastest geomean {statistics.geometric_mean(ratios):.3f}, worst "
            f"{max(ratios):.3f}; rule / fastest geomean {statistics.geometric_mean(rule):.3f}, worst {max(rule):.3f}")


def save(rows: list, path: Path, seconds: float) -> None:
  import bench
  path.parent.mkdir(parents=True, exist_ok=True)
  summary = {}
  for kind in sorted({r["kind"] for r in rows}):
    for step in ("forward", "training"):
      auto = [r[f"auto_over_fastest_{step}"] for r in rows if r["kind"] == kind]
      rule = [r[f"rule_over_fastest_{step}"] for r in rows if r["kind"] == kind]
      summary[f"{kind} {step}"] = dict(auto_geomean=statistics.geometric_mean(auto), auto_worst=max(auto),
                                       rule_geomean=statistics.geometric_mean(rule))
  path.write_text(json.dumps(dict(machine=bench.machine_description(), seconds=seconds, over_fastest=summary,
                                  rows=rows), indent=1))

if __name__ == "__main__":
  jax.config.update("jax_platforms", "cpu")
  main()
