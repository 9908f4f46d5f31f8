"""The README contract, the notebooks and the lint: what a newcomer runs must work."""

import pathlib
import shutil
import subprocess
import sys

import nbformat
import pytest
from nbclient import NotebookClient

import convtranspose as ct

ROOT = pathlib.Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def test_demo_prints_the_seed_example_shape():
  result = subprocess.run([sys.executable, "-m", "convtranspose"], capture_output=True, text=True, cwd=ROOT,
                          timeout=600)
  assert result.returncode == 0, result.stderr
  assert "output: (1, 64, 19, 53)" in result.stdout
  assert "convtranspose:            (1, 1, 5, 24)" in result.stdout


def test_readme_has_the_two_commands_and_ci_runs_the_test_command():
  readme = (ROOT / "README.md").read_text()
  ci = (ROOT / ".ci" / "run").read_text()
  demo = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/python -m convtranspose"
  tests = "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest -n 2"
  assert demo in readme and tests in readme
  assert tests in ci


def test_public_api_is_what_init_exports():
  public = {name for name in dir(ct) if not name.startswith("_")}
  modules = {"functional", "modules", "initializers"}  # submodules Python itself binds on import
  assert public - modules == set(ct.__all__) - modules


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path):
  notebook = nbformat.read(path, as_version=4)
  NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()


def test_there_is_a_notebook():
  assert NOTEBOOKS


def test_ruff_is_clean():
  ruff = shutil.which("ruff", path=str(pathlib.Path(sys.executable).parent)) or shutil.which("ruff")
  assert ruff, "ruff is in the test extra"
  result = subprocess.run([ruff, "check", "convtranspose", "tests", "benchmarks"], capture_output=True, text=True,
                          cwd=ROOT)
  assert result.returncode == 0, result.stdout + result.stderr
