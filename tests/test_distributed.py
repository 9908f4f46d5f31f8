"""Two processes, as two hosts would be: JAX's own runtime (`jax.distributed` on 127.0.0.1, gloo collectives)
joins two processes of four CPU devices each into one 8-device mesh (``tests/distributed_training.py``)."""

import pathlib
import socket
import subprocess
import sys

import distributed_training
import jax
import numpy as np

from conftest import assert_close

HERE = pathlib.Path(__file__).resolve().parent


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def test_two_processes_train_as_one_device(tmp_path):
  """Linen and NNX decoders of both vocabularies (two groups, depthwise, one group), three SGD steps data
  parallel and data plus model parallel over the two processes, end with one device's parameters; an Orbax
  checkpoint saved from both processes restores the same values in the same shardings."""
  port = _free_port()
  workers = [subprocess.Popen([sys.executable, str(HERE / "distributed_training.py"), str(i), str(port),
                               str(tmp_path)], cwd=HERE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
  outputs = []
  try:
    for worker in workers:
      outputs.append(worker.communicate(timeout=300)[0])
  finally:
    for worker in workers:
      worker.kill()
  for i, (worker, output) in enumerate(zip(workers, outputs)):
    assert worker.returncode == 0, f"process {i} exited with {worker.returncode}:\n{output[-4000:]}"
  trained = dict(np.load(tmp_path / "trained.npz"))
  for framework in ("linen", "nnx"):
    params = distributed_training.train(framework)  # one process, one device
    expected = {jax.tree_util.keystr(path): np.asarray(leaf)
                for path, leaf in jax.tree_util.tree_leaves_with_path(params)}
    for parallelism in distributed_training.PARALLELISM:
      prefix = f"{framework}:{parallelism}"
      assert {key[len(prefix):] for key in trained if key.startswith(prefix + "[")} == set(expected)
      for key, value in expected.items():
        assert_close(trained[prefix + key], value)
  restored = {key.removeprefix("restored:"): value for key, value in trained.items() if key.startswith("restored:")}
  assert restored
  for key, value in restored.items():
    np.testing.assert_array_equal(value, trained[key])
