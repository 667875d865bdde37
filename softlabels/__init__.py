"""softlabels: run a teacher once, keep its logits in a trustworthy HDF5 cache (docs/FORMAT.md).

What a training loop of your own needs:

    import softlabels
    cache = softlabels.open_cache("cache.h5")        # len, .keys, .labels, .classes
    cache.check_dataset("cifar10")                   # the images are the cache's, or a clear error
    soft = cache.targets(index_or_key, temperature=2.0)

Names are imported on first use, so `import softlabels` stays fast (no torch until you build).
"""

from __future__ import annotations

from softlabels.lazy import lazy_exports
from softlabels.version import __version__

# public name -> module that defines it
_EXPORTS = {
    "open_cache": "softlabels.cache",
    "Cache": "softlabels.cache",
    "verify": "softlabels.store",
    "read_info": "softlabels.store",
    "CacheInfo": "softlabels.store",
    "CacheError": "softlabels.store",
    "Preprocessing": "softlabels.models.preprocessing",
    "resolve_input": "softlabels.models.inputs",
    "ViewPipeline": "softlabels.views",
    "Normalize": "softlabels.views",
    "parse_augment": "softlabels.views",
    "build_cache": "softlabels.build",
    "BuildConfig": "softlabels.build",
    "open_dataset": "softlabels.data",
    "SampleError": "softlabels.data.sample_errors",
}

__all__ = ["__version__", *_EXPORTS]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
