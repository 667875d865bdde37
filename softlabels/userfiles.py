"""User code named on the command line as `FILE.py:FUNC` (datasets, teachers, students)."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType


def import_user_file(path: Path, kind: str) -> ModuleType:
    """Import a user's .py file by path. It is registered in sys.modules (under a name unique to
    its location) so that classes defined there pickle into DataLoader workers, and its folder is
    on sys.path while it runs so it can import its neighbours. `kind` names it in errors."""
    if not path.is_file():
        raise FileNotFoundError(f"{kind} file {str(path)!r} does not exist")
    resolved = path.resolve()
    digest = hashlib.sha1(str(resolved).encode()).hexdigest()[:8]
    stem = re.sub(r"\W", "_", path.stem)
    name = f"softlabels_user_{kind}_{stem}_{digest}"
    module_spec = importlib.util.spec_from_file_location(name, resolved)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"{path} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[name] = module
    sys.path.insert(0, str(resolved.parent))
    try:
        module_spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(name, None)
        raise
    finally:
        sys.path.remove(str(resolved.parent))
    return module
