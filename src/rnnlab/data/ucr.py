"""Named UCR/UEA classification sets: ``ucr:NAME`` -> the ``NAME_TRAIN.ts`` / ``NAME_TEST.ts`` files.

Nothing is downloaded: the files are looked up, in order, in

1. ``data_dir`` when given (``--data-dir``): a folder holding ``NAME/NAME_TRAIN.ts`` (the
   archive's own layout) or ``NAME_TRAIN.ts`` directly;
2. ``$RNNLAB_UCR_DIR``, the same layouts;
3. the data folder of an installed ``aeon`` or ``sktime`` package, whose wheels ship a few sets
   (aeon 1.6: ACSF1, ArrowHead, BasicMotions, GunPoint, ItalyPowerDemand, JapaneseVowels,
   OSULeaf, PLAID, PickupGestureWiimoteZ; sktime 1.2: the same but PickupGestureWiimoteZ).
   The packages are located, not imported (importing them takes seconds).

A wheel's data folder can also be used without installing it: ``pip download aeon --no-deps``,
unzip, and pass ``--data-dir .../aeon/datasets/data``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from rnnlab.errors import DataError, expected

PREFIX = "ucr:"
ENV = "RNNLAB_UCR_DIR"
PACKAGES = ("aeon", "sktime")   # searched in this order: aeon ships more sets
SPLITS = {"train": "TRAIN", "test": "TEST"}


def is_ucr(name: str) -> bool:
    return name.startswith(PREFIX)


def package_data_dirs() -> list[Path]:
    """The ``datasets/data`` folders of the installed aeon / sktime packages."""
    out = []
    for pkg in PACKAGES:
        try:
            spec = importlib.util.find_spec(pkg)
        except (ImportError, ValueError):
            spec = None
        for root in (spec.submodule_search_locations or []) if spec is not None else []:
            d = Path(root) / "datasets" / "data"
            if d.is_dir():
                out.append(d)
    return out


def search_dirs(data_dir: str = "") -> list[Path]:
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get(ENV):
        dirs.append(Path(os.environ[ENV]))
    return dirs + package_data_dirs()


def ucr_path(dataset: str, split: str, data_dir: str = "") -> str:
    """The ``.ts`` file of ``split`` ("train" or "test") of ``ucr:NAME``; DataError naming where it looked."""
    name = dataset[len(PREFIX):] if is_ucr(dataset) else dataset
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise DataError(expected("UCR data set", "ucr:NAME (for example ucr:GunPoint)", repr(dataset)))
    if split not in SPLITS:
        raise DataError(expected(f"{dataset}: split", "train or test", repr(split)))
    file = f"{name}_{SPLITS[split]}.ts"
    dirs = search_dirs(data_dir)
    for d in dirs:
        for p in (d / name / file, d / file):
            if p.is_file():
                return str(p)
    where = ", ".join(str(d) for d in dirs) or "nowhere (no --data-dir, no $RNNLAB_UCR_DIR, neither aeon nor sktime installed)"
    raise DataError(expected(f"{dataset}: {file}", f"a file in one of: {where}", "none found; install the ucr "
                             "extra (pip install 'rnnlab[ucr]') or pass --data-dir FOLDER"))


def available(data_dir: str = "") -> list[str]:
    """The set names with both files found (sorted), for messages and the benchmark."""
    names = set()
    for d in search_dirs(data_dir):
        if not d.is_dir():
            continue
        for p in d.glob("*/*_TRAIN.ts"):
            if (p.parent / p.name.replace("_TRAIN.ts", "_TEST.ts")).is_file():
                names.add(p.name[: -len("_TRAIN.ts")])
        for p in d.glob("*_TRAIN.ts"):
            if (d / p.name.replace("_TRAIN.ts", "_TEST.ts")).is_file():
                names.add(p.name[: -len("_TRAIN.ts")])
    return sorted(names)
