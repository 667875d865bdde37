"""Loader workers ignore stop signals (the main process decides when to stop); a process must still
exit when one of its loaders was never closed."""

import subprocess
import sys
import textwrap

LINGERING_LOADER = """
from torch.utils.data import DataLoader
from softlabels.stopping import ignore_in_worker

loader = DataLoader(list(range(100)), batch_size=2, num_workers=1, worker_init_fn=ignore_in_worker)
iterator = iter(loader)
next(iterator)
KEPT = [iterator]  # alive at interpreter exit, as an iterator held by a stored traceback is
print("done", flush=True)
"""


def test_a_process_with_an_unclosed_loader_still_exits(tmp_path):
    """Multiprocessing ends the children still alive at exit with SIGTERM and then waits for them: a
    worker that ignores SIGTERM used to hang the exit forever (seen as a CI run that never ended)."""
    script = tmp_path / "lingering.py"
    script.write_text(textwrap.dedent(LINGERING_LOADER))
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout == "done\n", done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr
