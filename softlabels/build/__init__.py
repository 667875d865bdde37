"""The build: run teachers once over a dataset and write their outputs (logits, embeddings) to a cache.

- `config`: `BuildConfig`, every option of `softlabels build` declared once, and `BuildResult` (no torch);
- `inputs`: `TeacherInputs`, each sample decoded once and its views made by the one pipeline;
- `members`: the teachers, loaded, probed, checked to agree, and recorded in the cache's metadata;
- `forward`: what the pass takes from its teachers (`--targets`): probed once, then run on every batch;
- `teacher_pass`: `build_cache`, the pass itself (one process, a shard, or every rank of torchrun);
- `shards`: rank shards and merges of caches built apart (rows, views, teachers).

Names are imported on first use, so reading the options (`softlabels --help`) does not import torch.
"""

from __future__ import annotations

from softlabels.lazy import lazy_exports

# public name -> module that defines it
_EXPORTS = {
    "BuildConfig": "softlabels.build.config",
    "BuildResult": "softlabels.build.config",
    "build_cache": "softlabels.build.teacher_pass",
    "BuildInterrupted": "softlabels.build.teacher_pass",
    "TeacherInputs": "softlabels.build.inputs",
    "make_loader": "softlabels.build.inputs",
    "load_build_teachers": "softlabels.build.members",
    "teacher_record": "softlabels.build.members",
    "merge": "softlabels.build.shards",
    "merge_caches": "softlabels.build.shards",
    "merge_views": "softlabels.build.shards",
}

__all__ = list(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
