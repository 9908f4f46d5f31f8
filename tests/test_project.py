"""The README contract and the lint: what a newcomer runs must work."""

import pathlib
import shutil
import subprocess
import sys

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
