"""The README contract and the lint: what a newcomer runs must work."""

import os
import pathlib
import shutil
import subprocess
import sys

import convtranspose as ct

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_demo_prints_the_seed_example_shape_and_nothing_of_cuda_or_tpus():
  """The demo as a newcomer runs it (no JAX_PLATFORMS set). The accelerator compilers live in their own
  environment: in this one (the test extra, a CPU host) no JAX process reports a missing CUDA driver or TPU, as
  about 30 lines did."""
  environment = {key: value for key, value in os.environ.items() if key not in ("JAX_PLATFORMS",
                                                                                   "ALLOW_MULTIPLE_LIBTPU_LOAD")}
  result = subprocess.run([sys.executable, "-m", "convtranspose"], capture_output=True, text=True, cwd=ROOT,
                          timeout=600, env=environment)
  assert result.returncode == 0, result.stderr
  assert "output: (1, 64, 19, 53)" in result.stdout
  assert "convtranspose:            (1, 1, 5, 24)" in result.stdout
  noise = [line for line in result.stderr.splitlines() if any(word in line for word in ("CUDA", "cuda", "TPU", "tpu"))]
  assert not noise, result.stderr


def test_readme_has_the_two_commands_and_ci_runs_the_test_command():
  readme = (ROOT / "README.md").read_text()
  ci = (ROOT / ".ci" / "run").read_text()
  demo = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python -m convtranspose"
  tests = ("python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest -n 2 && "
           "python3 -m venv .venv-accelerators && .venv-accelerators/bin/pip install -e '.[accelerator-tests]' && "
           ".venv-accelerators/bin/python -m pytest -n 2 -m accelerators tests/test_accelerator_programs.py")
  exhaustive = ".venv/bin/python -m pytest -n 2 -m exhaustive"
  assert demo in readme and tests in readme and f"```bash\n{exhaustive}\n```" in readme
  assert tests in ci and f"{tests} && {exhaustive} )" in ci


def test_public_api_is_what_init_exports():
  public = {name for name in dir(ct) if not name.startswith("_")}
  modules = {"functional", "modules", "initializers"}  # submodules Python itself binds on import
  assert public - modules == set(ct.__all__) - modules


def test_readme_example_runs(tmp_path, monkeypatch):
  """The README's fifteen lines, run as written (in a scratch directory: they write a checkpoint)."""
  readme = (ROOT / "README.md").read_text()
  section = readme[readme.index("## In fifteen lines"):]
  code = section[section.index("```python\n") + len("```python\n"):]
  code = code[:code.index("```\n")]
  assert len(code.splitlines()) <= 16
  monkeypatch.chdir(tmp_path)
  namespace = {}
  exec(compile(code, "README.md", "exec"), namespace)
  assert namespace["y"].shape == (1, 64, 33, 101)  # (16 - 1) * 2 - 2 * 1 + 4 + 1
  assert namespace["head"].weight[...].shape == (64, 3, 4, 4)
  assert namespace["params"]["weight"].shape == (3, 64, 4, 4)


def test_there_is_a_notebook():
  """Every notebook runs top to bottom in the documentation build (tests/test_docs.py)."""
  assert NOTEBOOKS


def test_ruff_is_clean():
  ruff = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("ruff")
  assert ruff, "ruff is in the test extra"
  result = subprocess.run([ruff, "check", "convtranspose", "tests", "benchmarks"], capture_output=True, text=True,
                          cwd=ROOT)
  assert result.returncode == 0, result.stdout + result.stderr


def test_wheel_and_sdist_build_and_the_wheel_runs_the_demo(tmp_path):
  """``python -m build`` makes both; the wheel carries what an index shows (license, classifiers, URLs, the
  tested lower bounds) and py.typed, and the demo runs from it (its dependencies from this environment)."""
  import email
  import tarfile
  import zipfile

  result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(tmp_path / "dist"), str(ROOT)],
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  (wheel,), (sdist,) = (tmp_path / "dist").glob("*.whl"), (tmp_path / "dist").glob("*.tar.gz")
  with zipfile.ZipFile(wheel) as archive:
    names = archive.namelist()
    metadata = email.message_from_bytes(archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
  assert "convtranspose/py.typed" in names and not any(n.startswith(("tests/", "docs/")) for n in names)
  assert any(n.startswith("convtranspose/tables/") and n.endswith(".json") for n in names)  # the tuning tables
  assert metadata["License-Expression"] == "Apache-2.0" and metadata["Requires-Python"] == ">=3.11"
  assert "Programming Language :: Python :: 3.11" in metadata.get_all("Classifier")
  assert any(url.startswith("Documentation, ") for url in metadata.get_all("Project-URL"))
  assert {"jax>=0.8.1", "jaxlib>=0.8.1", "flax>=0.12.1"} <= set(metadata.get_all("Requires-Dist"))
  with tarfile.open(sdist) as archive:
    members = {name.split("/", 1)[-1] for name in archive.getnames()}
  assert {"LICENSE", "README.md", "pyproject.toml", "convtranspose/functional.py", "convtranspose/py.typed"} <= members

  installed = tmp_path / "site"
  subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(installed),
                  str(wheel)], check=True, timeout=300)
  demo = subprocess.run([sys.executable, "-c", "import convtranspose, runpy; print(convtranspose.__file__); "
                         "runpy.run_module('convtranspose', run_name='__main__')"], capture_output=True, text=True,
                        cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(installed)}, timeout=600)
  assert demo.returncode == 0, demo.stderr[-3000:]
  assert demo.stdout.splitlines()[0].startswith(str(installed))  # the wheel's copy, not this checkout
  assert "output: (1, 64, 19, 53)" in demo.stdout
