"""docs/ARCHITECTURE.md stays true: every path it cites exists, and every code name it cites is defined.

The page names code in backticks: paths (`softlabels/views/pipeline.py`, `trainer/losses/`), dotted
names (`store.CacheWriter.write`, `models.SOURCES`), calls (`build_cache(config)`) and bare names
(`ReplayDataset`). A path must exist in the repository; a name (each dotted part) must be defined in
`softlabels/` or `trainer/` — as a module, package, class, function, method, attribute or constant.
Flags, shell commands and prose in backticks are not code names and are skipped.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "ARCHITECTURE.md"
PACKAGES = ("softlabels", "trainer")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def spans(text: str) -> list[str]:
    """Every inline code span outside fenced blocks."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.findall(r"`([^`\n]+)`", text)


@cache
def defined_names() -> frozenset[str]:
    """Every module, package, class, function, method, attribute and constant name of the packages."""
    names: set[str] = set(PACKAGES)
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            names.update(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                    names.add(node.name)
                elif isinstance(node, ast.Assign):
                    names.update(t.id for t in node.targets if isinstance(t, ast.Name))
                    names.update(t.attr for t in node.targets if isinstance(t, ast.Attribute))
                elif isinstance(node, ast.AnnAssign):
                    target = node.target
                    names.add(target.id if isinstance(target, ast.Name) else getattr(target, "attr", ""))
    names.discard("__init__")
    return frozenset(names)


def is_path(span: str) -> bool:
    return " " not in span and ("/" in span or span.endswith(".py")) and not span.startswith(("-", "http"))


EXTERNAL = {"os", "nn", "torch", "torchvision", "timm", "h5py", "np", "numpy", "click", "PIL", "sklearn", "json"}
FILE_SUFFIXES = {"pt", "h5", "json", "jsonl", "png", "jpg", "csv", "md", "partial", "safetensors", "py"}


def code_name(span: str) -> list[str] | None:
    """The dotted parts of a span that names code, or None for flags, commands, values and prose."""
    span = re.sub(r"\(.*\)$", "", span.strip())  # `build_cache(config)` names build_cache
    if not re.fullmatch(r"[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*", span):
        return None
    parts = span.split(".")
    if parts[0] in EXTERNAL or parts[-1] in FILE_SUFFIXES:
        return None  # another library's name (`os.replace`), or a file name (`last.pt`)
    looks_like_code = len(parts) > 1 or "_" in span or span[0].isupper() and any(c.islower() for c in span)
    return parts if looks_like_code else None


def page_paths() -> list[str]:
    return [span.split(":")[0] for span in spans(PAGE.read_text()) if is_path(span)]


def page_names() -> list[list[str]]:
    named = []
    for span in spans(PAGE.read_text()):
        if is_path(span) or span.startswith("-") or " " in span.strip():
            continue
        parts = code_name(span)
        if parts:
            named.append(parts)
    return named


# Words of the page that look like code names but name data, not code (dataset paths, attributes of
# the HDF5 file, JSON fields): they are documented in docs/FORMAT.md and checked by its tests.
NOT_CODE = {"views/params", "topk/values", "build_id", "created", "param_names", "sample_kind", "cat/0001.jpg"}
# Other libraries' words the page quotes (timm's config key, torchvision's and torch's API).
NOT_CODE |= {"crop_pct", "weights.transforms", "weights_only"}


def test_every_path_the_page_cites_exists():
    paths = [p for p in page_paths() if p not in NOT_CODE and not p.startswith(("~", "imagefolder", "PATH"))]
    assert len(paths) >= 20, "the page should walk through the code by its paths"
    # `softlabels/views/<name>.py` (where a new thing goes) names a folder that must exist
    missing = sorted({p for p in paths if not (ROOT / p.split("<")[0]).exists()})
    assert missing == [], f"docs/ARCHITECTURE.md cites paths that do not exist: {missing}"


def test_every_code_name_the_page_cites_is_defined():
    names = page_names()
    assert len(names) >= 40, "the page should name the code it walks through"
    defined = defined_names()
    missing = sorted({".".join(parts) for parts in names if not set(parts) <= defined} - NOT_CODE)
    assert missing == [], f"docs/ARCHITECTURE.md names code that does not exist: {missing}"


def test_the_check_catches_a_stale_name(tmp_path):
    """The check itself can fail: a name that is not defined anywhere is reported."""
    defined = defined_names()
    assert {"ReplayDataset", "resolve_input", "views"} <= defined
    assert not {"load_build_teacher", "get_augment"} & defined  # names the page once cited, since gone
    assert code_name("build_cache(config)") == ["build_cache"]
    assert code_name("--views") is None and code_name("cache") is None
    assert code_name("os.replace") is None and code_name("last.pt") is None
