"""Progress where stderr is not a terminal (SLURM logs, pipes, CI): plain lines, not carriage returns."""

import io

import pytest
import torch

from softlabels import progress
from softlabels.progress import LineProgress


def test_plain_lines_count_and_finish():
    out = io.StringIO()
    bar = LineProgress(range(5), total=5, desc="labels", unit="img", stream=out, every=0)
    assert list(bar) == [0, 1, 2, 3, 4]
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("labels: 1/5 img (20%), ") and " left" in lines[0]
    assert lines[-1].startswith("labels: 5/5 img (100%), ") and lines[-1].endswith("elapsed (done)")
    assert "\r" not in out.getvalue()


def test_a_multi_view_teacher_pass_counts_views(capsys, monkeypatch):
    """The build counts images and shows views (tqdm's unit_scale): 4 images x 8 views = 32 views."""
    monkeypatch.delenv("TQDM_DISABLE")  # the suite's default: quiet
    bar = progress.bar(total=4, desc="teacher pass", unit="view", unit_scale=8)
    assert isinstance(bar, LineProgress)  # pytest's captured stderr is not a terminal
    bar.update(4)
    bar.close()
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("teacher pass: 32/32 view (100%), ") and " view/s" in last


def test_quiet_bars_print_nothing(capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE")
    bar = progress.bar(range(3), total=3, desc="x", enabled=False)
    assert list(bar) == [0, 1, 2]
    assert capsys.readouterr().err == ""


class _Logged(torch.utils.data.Dataset):
    """Appends one line to `log` per sample read, from whichever process reads it."""

    def __init__(self, log):
        self.log = log

    def __len__(self):
        return 32

    def __getitem__(self, index):
        with open(self.log, "a") as f:
            f.write(f"{index}\n")
        return index


@pytest.mark.parametrize("enabled", [True, False])
def test_a_bar_over_a_loader_with_persistent_workers_reads_each_sample_once(tmp_path, monkeypatch, enabled):
    """tqdm.auto's bar calls iter() twice; a persistent worker would decode its prefetched batches for nothing."""
    monkeypatch.delenv("TQDM_DISABLE")
    log = tmp_path / "reads"
    loader = torch.utils.data.DataLoader(_Logged(log), batch_size=4, num_workers=1, persistent_workers=True)
    for _ in range(2):  # epochs
        assert sum(len(batch) for batch in progress.bar(loader, desc="epoch", enabled=enabled)) == 32
    assert len(log.read_text().splitlines()) == 64
