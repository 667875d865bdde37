"""The README's Python API example runs as written."""

import re
import subprocess
import sys
from pathlib import Path

from softlabels.build import BuildConfig, build_cache

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(image_folder, teacher_weights, tmp_path):
    section = README.read_text().split("## Python API", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert len(code.strip().splitlines()) <= 16
    assert image_folder == tmp_path / "images"
    build_cache(
        BuildConfig.from_options(
            dataset=f"imagefolder:{image_folder}",
            teacher="small_cnn",
            weights=str(teacher_weights),
            out=str(tmp_path / "cache.h5"),
            workers=0,
            progress=False,
        )
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={"TQDM_DISABLE": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "test accuracy" in done.stdout and "['cat', 'dog', 'frog']" in done.stdout
