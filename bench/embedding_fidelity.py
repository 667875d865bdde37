"""Embedding targets: fidelity of the stored encodings against the teacher's float32 forward, and their size.

    SOFTLABELS_SHARED=../shared .venv/bin/python -m bench.embedding_fidelity [--per-class 25] [--views 4]

Teacher: cifar_resnet56 fine-tuned on the JPEG copy of CIFAR-10 (../shared); its embedding is the
64-D input of its classifier. The first `--per-class` training images of each class, `--views`
replayed `cifar` views each (250 x 4 = 1,000 views by default), built three times with
`--targets embedding --embedding-dtype float32|float16|int8` (no AMP). The reference is an
independent float32 forward of the teacher, with a plain forward hook on its `linear` layer, over
the views replayed from the cache (`Cache.replay`); the table gives the cosine of each stored
embedding to it over every view, and the stored bytes per view.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from bench.common import DATA, JPEGFT, cifar10_subset, machine, table
from softlabels import open_cache, open_dataset
from softlabels.build import BuildConfig, build_cache
from softlabels.models.teachers import load_teacher
from softlabels.store.embedding import cosine

DTYPES = ("float32", "float16", "int8")


def build(folder, out, dtype: str, views: int):
    options = dict(
        dataset=f"imagefolder:{folder}",
        teacher="cifar_resnet56",
        weights=str(JPEGFT),
        out=str(out),
        views=views,
        augment="cifar",
        targets="embedding",
        embedding_dtype=dtype,
        amp=False,
        device="cpu",
        workers=0,
        overwrite=True,
        progress=False,
    )
    return build_cache(BuildConfig.from_options(**options)).path


def reference(path, folder, views: int) -> np.ndarray:
    """(N, V, 64) float32 features of the replayed views by a plain forward hook on `linear`."""
    model = load_teacher("cifar_resnet56", weights=str(JPEGFT), num_classes=10).model.eval()
    seen = []
    model.linear.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].clone()) and None)
    source = open_dataset(f"imagefolder:{folder}")
    with open_cache(path) as cache, torch.inference_mode():
        for view in range(views):
            images = torch.stack([cache.replay(source, i, view, normalize=True)[0] for i in range(len(cache))])
            for start in range(0, len(images), 256):
                model(images[start : start + 256])
    per_view = torch.cat(seen).view(views, -1, seen[0].shape[1])
    return per_view.transpose(0, 1).numpy()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per-class", type=int, default=25)
    parser.add_argument("--views", type=int, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    folder = cifar10_subset(args.per_class, 1)
    root = DATA / "bench" / "embedding_fidelity"
    root.mkdir(parents=True, exist_ok=True)
    rows, paths = [], {}
    for dtype in DTYPES:
        started = time.perf_counter()
        paths[dtype] = build(folder / "train", root / f"{dtype}.h5", dtype, args.views)
        print(f"built {dtype} in {time.perf_counter() - started:.0f} s", flush=True)
    fresh = reference(paths["float32"], folder / "train", args.views)
    for dtype in DTYPES:
        with open_cache(paths[dtype]) as cache:
            stored = cache.embeddings(list(range(len(cache))), view=None)
            cos = cosine(stored, fresh).ravel()
            bytes_per_view = cache.info.layout.bytes_per_view
        rows.append(
            [dtype, cos.size, f"{cos.min():.6f}", f"{cos.mean():.6f}", f"{(1 - cos).max():.1e}", bytes_per_view]
        )
    print(f"\n{machine()}; cifar_resnet56-jpegft, {fresh.shape[0]} images x {args.views} views, D = {fresh.shape[2]}")
    print(table(["stored as", "views", "min cosine", "mean cosine", "max 1 - cosine", "bytes / view"], rows))


if __name__ == "__main__":
    main()
