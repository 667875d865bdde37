"""The optional extras (timm, safetensors, parquet, ...): how every message and doc says to install one.

softlabels is not published on a package registry; it installs from a clone of its repository, so an
extra is `pip install -e '.[timm]'` (or another extra's name) run in that clone. Every error about a
missing optional package forms its hint here, so the spelling cannot drift between messages
(tests/test_docs.py checks the docs against it and each extra's name against pyproject.toml).
"""

from __future__ import annotations


def install_hint(extra: str) -> str:
    """The command that installs an optional extra, e.g. `pip install -e '.[timm]'` (in the clone)."""
    return f"pip install -e '.[{extra}]' (in your softlabels clone)"
