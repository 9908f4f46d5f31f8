"""The TPU tuning tables shipped in the package, from XLA:TPU's cost model (compile-only: estimates, not times).

    python benchmarks/tpu_tables.py  # after pip install -e '.[accelerators]'; JAX_PLATFORMS=cpu

For TPU v5e and v6e, every one-group-or-grouped layer of `accelerator_programs.SUITE`, in both layouts, float32:
each candidate's forward pass and training step (`peers.training_step`) compiled for the chip, priced as the sum
of its kernels' ``estimated_cycles``. Writes ``convtranspose/tables/tpu-<chip>.json`` (unit ``cycles``, keyed by
the chip's `device_kind`, so that on a TPU host each chip takes its own choice) and
``benchmarks/results/tpu-auto.json``: per layer the candidates, the table's choice, the rule's plan (``ours auto``)
and Flax's own program, from ``accelerator-programs.json``.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import jax

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import accelerator_programs as programs  # noqa: E402
from tune import layer_call  # noqa: E402

import convtranspose as ct  # noqa: E402
from convtranspose import tuning  # noqa: E402

TABLES = HERE.parent / "convtranspose" / "tables"


def cycles(layer: programs.Layer, algorithm: str, channels_last: bool, chip: str, train: bool) -> int:
  n = len(layer.spatial)
  data_format = (programs.CHANNELS_LAST if channels_last else programs.CHANNELS_FIRST)[n]
  compiled = programs.compile_program(layer.function(data_format, algorithm), layer, jax.numpy.float32,
                                      channels_last, chip, train=train)
  return programs.tpu_program(compiled, layer, 3 if train else 1)["cycles"]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--chips", nargs="+", default=["v5e", "v6e"])
  parser.add_argument("--layers", nargs="+", default=list(programs.SUITE), choices=list(programs.SUITE))
  parser.add_argument("--out", type=Path, default=HERE / "results" / "tpu-auto.json")
  args = parser.parse_args()
  saved = json.loads((HERE / "results" / "accelerator-programs.json").read_text())["layers"]
  results = {"jax": jax.__version__, "rows": []}
  for chip in args.chips:
    kind = programs.device(chip).device_kind
    table = ct.Tuning(kind, None, unit="cycles",
                      source="benchmarks/tpu_tables.py: XLA:TPU's estimated cycles, compile-only (estimates, not times)")
    for name in args.layers:
      layer = programs.SUITE[name]
      for channels_last in (False, True):
        start = time.perf_counter()
        call = layer_call(layer, channels_last, "float32")
        forward = {a: cycles(layer, a, channels_last, chip, False) for a in tuning.FORWARD_CANDIDATES}
        training = {a: cycles(layer, a, channels_last, chip, True) for a in tuning.TRAINING_CANDIDATES}
        measured = tuning.Measured(call.signature, forward, training)
        table.layers[call.signature] = measured
        rule = {f"{row['pass']}": row["cycles"] for row in saved.get(name, []) if row["chip"] == chip and
                row["dtype"] == "fp32" and row["implementation"] == ("ours auto NHWC" if channels_last else "ours auto")}
        flax = {f"{row['pass']}": row["cycles"] for row in saved.get(name, []) if row["chip"] == chip and
                row["dtype"] == "fp32" and row["implementation"] == "flax"}
        row = dict(chip=chip, device_kind=kind, layer=name, layout="channels-last" if channels_last else "NCHW",
                   forward=forward, training=training, value=measured.value, trained=measured.trained,
                   table={"forward": forward[measured.value], "train": training[measured.trained]},
                   rule=rule, flax=flax)
        results["rows"].append(row)
        print(f"{chip} {name:40} {row['layout']:13} fwd {forward} train {training} -> {measured.value} / "
              f"{measured.trained}; rule {rule}, flax {flax} ({time.perf_counter() - start:.0f} s)", flush=True)
        args.out.write_text(json.dumps(results, indent=1))
    table.save(TABLES / f"tpu-{chip}.json")


if __name__ == "__main__":
  main()
