"""Checks of a cache against what lies outside it (the file's own integrity is `softlabels.store`'s):

- `samples`: the samples it says it describes (keys added, removed, renamed or relabelled since);
- `teacher`: the teacher it says produced it (a few samples recomputed from their replayed views);
- `verify`: `softlabels verify`, which runs them after the file's checksums.
"""

from softlabels.audit.samples import SampleDiff, check_against_dataset, compare_samples, require_same_samples
from softlabels.audit.teacher import Recomputed, recompute
from softlabels.audit.verify import VerifyConfig, VerifyReport, content_digests, verify_cache

__all__ = [
    "SampleDiff",
    "check_against_dataset",
    "compare_samples",
    "require_same_samples",
    "Recomputed",
    "recompute",
    "VerifyConfig",
    "VerifyReport",
    "content_digests",
    "verify_cache",
]
