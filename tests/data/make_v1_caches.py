"""Make the committed format-version-1 caches of this folder (see README.md here): run once, from the
repository root, with a softlabels whose writer writes version 1:

    .venv/bin/python tests/data/make_v1_caches.py

Never regenerate them with a writer of a later version: they exist so that every later softlabels
is tested against bytes that version 1 actually wrote.
"""

import importlib.util
import json
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from softlabels import store  # noqa: E402
from softlabels.build import BuildConfig, build_cache  # noqa: E402
from softlabels.models.registry import create_model  # noqa: E402

CACHES = {
    "v1-logits-flip2.h5": dict(views=2, augment="flip", seed=3),  # float16 full logits, view params
    "v1-topk2-gzip.h5": dict(topk=2, compression="gzip", dtype="float32"),  # top-k, compressed
}


def main() -> None:
    spec = importlib.util.spec_from_file_location("suite_conftest", HERE.parent / "conftest.py")
    conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(conftest)
    with tempfile.TemporaryDirectory() as tmp:
        images = conftest.make_image_folder(Path(tmp) / "images", per_class=(2, 2, 2), splits=("train",))
        torch.manual_seed(0)
        model = create_model("small_cnn", num_classes=3, in_channels=3, image_size=8)
        weights = Path(tmp) / "teacher.pt"
        torch.save({"state_dict": model.state_dict()}, weights)
        expected = {}
        for name, options in CACHES.items():
            out = HERE / name
            build_cache(
                BuildConfig(
                    dataset=f"imagefolder:{images}",
                    teacher="small_cnn",
                    weights=str(weights),
                    out=str(out),
                    batch_size=4,
                    workers=0,
                    device="cpu",
                    progress=False,
                    overwrite=True,
                    **options,
                )
            )
            expected[name] = _contents(out)
    (HERE / "v1-expected.json").write_text(json.dumps(expected, indent=1) + "\n")


def _contents(path: Path) -> dict:
    """What a reader must get back from the file: keys, labels, dense logits and view parameters."""
    keys, labels = store.read_keys_labels(path)
    targets = store.CacheTargets(path)
    return {
        "keys": keys,
        "labels": labels.tolist(),
        "logits": [targets.logits(i).tolist() for i in range(len(keys))],
        "params": [targets.params(i).tolist() for i in range(len(keys))] if targets.layout.param_names else None,
        "fingerprint": store.read_info(path).fingerprint,
    }


if __name__ == "__main__":
    main()
