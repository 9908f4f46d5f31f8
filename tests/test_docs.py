"""The documentation site: it builds with warnings as errors and every notebook executed, every public name has
an entry in the API reference, and every link between its pages (and into a page) resolves.

One test, one build: the checks share the built site, and pytest-xdist may run tests of a module on both workers.
"""

import html.parser
import pathlib
import subprocess
import sys
import urllib.parse

from sphinx.util.inventory import InventoryFile

import convtranspose as ct

ROOT = pathlib.Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
NOTEBOOKS = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))


class _Links(html.parser.HTMLParser):
  """The ``id``s a page defines and the ``href``/``src`` targets it points to."""

  def __init__(self):
    super().__init__()
    self.ids, self.targets, self.images = set(), [], []

  def handle_starttag(self, tag, attrs):
    attrs = dict(attrs)
    if "id" in attrs:
      self.ids.add(attrs["id"])
    for name in ("href", "src"):
      if attrs.get(name):
        self.targets.append(attrs[name])
    if tag == "img":
      self.images.append(attrs.get("src", ""))


def _parse(path: pathlib.Path) -> _Links:
  parser = _Links()
  parser.feed(path.read_text(encoding="utf-8"))
  return parser


def _public_names() -> set[str]:
  names = {f"convtranspose.{name}" for name in ct.__all__}
  names |= {f"convtranspose.nnx.{name}" for name in dir(ct.nnx) if name.startswith("Conv")}
  return names


def test_the_site_builds_and_links(tmp_path):
  out = tmp_path / "html"
  result = subprocess.run([sys.executable, "-m", "sphinx", "-b", "html", "-W", "--keep-going", "-q", str(DOCS),
                           str(out)], capture_output=True, text=True, cwd=ROOT, timeout=2400)
  assert result.returncode == 0, result.stderr[-6000:]

  # Every notebook is a page, executed: its plots are images in the page.
  for name in NOTEBOOKS:
    page = _parse(out / "notebooks" / f"{name}.html")
    assert page.targets, name
  plots = sum(len(_parse(out / "notebooks" / f"{name}.html").images) for name in NOTEBOOKS)
  assert plots >= len(NOTEBOOKS) - 1, plots  # all but the seed example draw

  # Every public name has an entry in the API reference (Sphinx's inventory of documented objects).
  with open(out / "objects.inv", "rb") as file:
    inventory = InventoryFile.load(file, "", lambda base, uri: uri)
  documented = {name for domain in ("py:function", "py:class", "py:module") for name in inventory.get(domain, {})}
  assert not _public_names() - documented, sorted(_public_names() - documented)

  # Every internal link and image resolves: the file exists, and so does the anchor in it.
  pages = {path: _parse(path) for path in out.rglob("*.html")}
  broken = []
  for path, page in pages.items():
    for target in page.targets:
      url = urllib.parse.urlsplit(target)
      if url.scheme or url.netloc or target.startswith(("mailto:", "javascript:")):
        continue
      file = (path.parent / urllib.parse.unquote(url.path)).resolve() if url.path else path
      if not file.exists():
        broken.append(f"{path.relative_to(out)} -> {target}")
      elif url.fragment and file.suffix == ".html" and url.fragment not in pages[file].ids:
        broken.append(f"{path.relative_to(out)} -> {target} (no such anchor)")
  assert not broken, broken[:20]

  # The math renders offline: MathJax is served with the site, not fetched.
  assert (out / "_static" / "mathjax" / "tex-chtml.js").exists()
  assert "_static/mathjax/tex-chtml.js" in (out / "semantics.html").read_text(encoding="utf-8")
