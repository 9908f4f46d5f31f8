#!/usr/bin/env bash
# The GPU half of the benchmark suite in one call on a lent GPU machine (the `device` tool's `run`):
#
#   run(command="bash benchmarks/device_run.sh", timeout_s=570)
#
# Its image has jax, flax, torch (CUDA), pytest and matplotlib; nothing is installed, the package is imported
# from the working tree. Results go to $OUT (at most 8 files come back), most important first, each step
# under its own time limit so that a slow one cannot starve the rest:
#   gpu-fp32.json/.png, gpu-bf16.json/.png  benchmarks/bench.py, fp32 (XLA's and PyTorch's TF32 defaults) and bf16
#   gpu-algorithms.txt                      benchmarks/algorithms.py in fp32 and bf16: the data for auto's GPU rule
#   gpu-checks.txt                          the XLA abort guard's tests, the suite's agreement test, an export test
# Copy the files to benchmarks/results/; notebook 05 and the README read them from there.
set -u
out=${OUT:-/tmp/device-out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda,cpu}  # tests/conftest.py defaults to the CPU otherwise
python=python3

{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  $python -c "import jax, flax, torch; print('jax', jax.__version__, jax.devices(), 'flax', flax.__version__,
              'torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/gpu-checks.txt"

for dtype in fp32 bf16; do
  timeout 150 $python benchmarks/bench.py --dtypes "$dtype" --repeats 25 --out "$out/gpu-$dtype.json" \
    || echo "bench.py $dtype: exit $?"
done
for dtype in fp32 bf16; do
  timeout 60 $python benchmarks/algorithms.py --dtype "$dtype" || echo "algorithms.py $dtype: exit $?"
done 2>&1 | tee "$out/gpu-algorithms.txt"
{
  echo "--- on the GPU: the guard against XLA's abort (each case unguarded too), the suite's agreement, exports"
  timeout 60 $python -m pytest -q -p no:cacheprovider -n 4 tests/test_xla_abort.py -k "guard or reported"
  timeout 90 $python -m pytest -q -p no:cacheprovider -n 4 tests/test_benchmarks.py \
    tests/test_functional.py::test_an_export_for_cpu_and_gpu_computes_the_layer_on_cpu
} 2>&1 | tee -a "$out/gpu-checks.txt"
