"""UCR/UEA time-series classification with default flags, beside 1-NN baselines and LSTM-FCN's
published accuracy: one ``rnnlab train classify --dataset ucr:NAME`` per set, JSON out.

    OMP_NUM_THREADS=1 python benchmarks/ucr_classify.py [--sets GunPoint,ArrowHead] [--data-dir DIR]
        [--json docs/data/results-classify.json] [--out runs/bench-ucr] [--threads 1] [--smoke]
        [--protocol default|published] [--ensemble N]

Every set is trained with the command's defaults (only ``--out --threads --quiet --no-report
--json`` added), so each row is reproduced by ``rnnlab train classify --dataset ucr:NAME``. The
sets are read from ``--data-dir`` or the installed aeon / sktime package (see
``rnnlab.data.ucr``). Rows are merged into the JSON file after each set, so sets can run in
separate invocations; CPU seconds are the training command's process time (training, then the
baselines, counted apart).
``--smoke`` trains a few steps per set, to check the script, not the figures.

``--protocol published`` trains the four 2015-archive sets with a published LSTM-FCN figure under
that figure's training protocol instead of the defaults: one model on the whole training split, 2000
epochs of Adam at 1e-3 in batches of 128, the checkpoint chosen by the loss on the training split
(``--valid`` is the training file), and the test split scored once at the end. Its rows go under
``published_protocol`` in the same JSON file.

``--ensemble N`` adds ``--ensemble N`` to the default flags (N models per fold from different
initialisations, their class probabilities averaged), on the sets with a published LSTM-FCN
figure unless ``--sets`` names others; its rows go under ``ensemble``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

from rnnlab.cli.main import main as rnnlab
from rnnlab.data.ts_format import load_ts
from rnnlab.data.ucr import ucr_path

# The nine sets the aeon 1.6 wheel ships (sktime 1.2: all but PickupGestureWiimoteZ), smallest first.
SETS = ("ItalyPowerDemand", "GunPoint", "ArrowHead", "BasicMotions", "PickupGestureWiimoteZ", "JapaneseVowels",
        "ACSF1", "OSULeaf", "PLAID")
# LSTM-FCN test accuracy as its authors published it for the 2015 UCR archive, checkpoint chosen
# by training loss (Karim et al., "Insights into LSTM fully convolutional networks for time series
# classification", IEEE Access 2019; github.com/titu1994/LSTM-FCN, Results/train_loss_old_datasets.csv).
# JapaneseVowels (the same 270 / 370 split, from UCI): the same authors' LSTM-FCN column in their
# multivariate paper (Karim, Majumdar, Darabi and Harford, "Multivariate LSTM-FCNs for time series
# classification", Neural Networks 2019; github.com/titu1994/MLSTM-FCN, README's results tables),
# given to two digits and trained under another protocol (250 epochs), so ``--protocol published``
# retrains only the 2015-archive four.
# The other four sets (the 2018 archive's and BasicMotions) have no LSTM-FCN figure in either.
PUBLISHED_LSTM_FCN = {"ArrowHead": 0.89714, "GunPoint": 1.0, "ItalyPowerDemand": 0.9621, "OSULeaf": 0.98347,
                      "JapaneseVowels": 0.99}
PUBLISHED_SOURCE = {name: "mlstm-fcn-2019" if name == "JapaneseVowels" else "ieee-access-2019"
                    for name in PUBLISHED_LSTM_FCN}
PUBLISHED_PROTOCOL_SETS = [name for name, source in PUBLISHED_SOURCE.items() if source == "ieee-access-2019"]
# Digits the figure is given to, where that is coarser than one test series (the results page then
# compares the model's accuracy rounded to as many digits).
PUBLISHED_DIGITS = {"JapaneseVowels": 2}
COMMAND = "rnnlab train classify --dataset ucr:{name}"
# The published figures' protocol (Karim et al.'s code: 2000 epochs, batch 128, Adam 1e-3, the
# checkpoint of lowest training loss), as rnnlab flags; the .ts files are the set's own splits.
PUBLISHED_FLAGS = ["--batch-size", "128", "--max-epochs", "2000", "--lr", "1e-3"]
PUBLISHED_COMMAND = ("rnnlab train classify --train {name}_TRAIN.ts --valid {name}_TRAIN.ts --test {name}_TEST.ts "
                     + " ".join(PUBLISHED_FLAGS))


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "python": platform.python_version()}


def describe(name: str, data_dir: str) -> dict:
    train = load_ts(ucr_path(f"ucr:{name}", "train", data_dir), None, "error", True)
    test = load_ts(ucr_path(f"ucr:{name}", "test", data_dir), train.label_map, "error", True)
    lengths = [len(s) for s in train.seqs + test.seqs]
    return {"n_train": len(train.seqs), "n_test": len(test.seqs), "dims": train.dims, "classes": len(train.label_map),
            "length_min": min(lengths), "length_max": max(lengths)}


def section_name(args: argparse.Namespace) -> str | None:
    """Where a run's rows go in the JSON file: None for the default flags' top-level rows."""
    if args.protocol == "published":
        return "published_protocol"
    return "ensemble" if args.ensemble > 1 else None


def run_set(name: str, args: argparse.Namespace) -> dict:
    published = args.protocol == "published"
    out = Path(args.out) / (f"{name}-published" if published else name)
    if published:
        train, test = (str(ucr_path(f"ucr:{name}", split, args.data_dir or "")) for split in ("train", "test"))
        cmd = ["train", "classify", "--train", train, "--valid", train, "--test", test, *PUBLISHED_FLAGS]
    else:
        cmd = ["train", "classify", "--dataset", f"ucr:{name}"] + (["--data-dir", args.data_dir] if args.data_dir else [])
    command = (PUBLISHED_COMMAND if published else COMMAND).format(name=name)
    if args.ensemble > 1:
        out = out.with_name(f"{out.name}-ensemble{args.ensemble}")
        cmd += ["--ensemble", str(args.ensemble)]
        command += f" --ensemble {args.ensemble}"
    if args.max_len:
        cmd += ["--max-len", str(args.max_len)]
        command += f" --max-len {args.max_len}"
    cmd += ["--out", str(out), "--overwrite", "--threads", str(args.threads), "--quiet", "--no-report", "--json"]
    if args.smoke:
        cmd += ["--max-steps", "3"]
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        code = rnnlab(cmd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    if code != 0:
        sys.exit(f"failed ({code}): rnnlab {' '.join(cmd)}")
    result = json.loads(buf.getvalue().strip().splitlines()[-1])
    rows = {r["name"]: r["acc"] for r in result["baselines"]["rows"]}
    return {
        "set": name, **describe(name, args.data_dir or ""),
        "command": command, "ensemble": args.ensemble,
        "validation": result["baselines"]["validation"],
        "steps": result["steps"], "best_step": result.get("best_step"), "stop_reason": result["stop_reason"],
        "model_acc": rows["model"], "majority_acc": rows["majority class"],
        "nn1_euclidean_acc": rows.get("1-NN Euclidean"), "nn1_dtw_acc": rows.get("1-NN DTW"),
        "dtw_backend": result["baselines"]["dtw"],
        "published_lstm_fcn_acc": PUBLISHED_LSTM_FCN.get(name),
        "published_source": PUBLISHED_SOURCE.get(name), "published_digits": PUBLISHED_DIGITS.get(name),
        "cpu_s": round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1),
        "train_cpu_s": result["timing"]["train_cpu_s"], "baselines_cpu_s": result["timing"]["baselines_cpu_s"],
        "wall_s": round(wall, 1), "load_avg_1min_end": round(os.getloadavg()[0], 2),
        # per row: rows merged from invocations on different machines each name their own
        "machine": machine(), "threads": args.threads,
        "smoke": bool(args.smoke),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sets", default=",".join(SETS), help="comma-separated set names (default: the nine)")
    p.add_argument("--data-dir", default="", help="folder of NAME/NAME_TRAIN.ts files (default: aeon's or sktime's)")
    p.add_argument("--json", default="docs/data/results-classify.json", help="results file (rows merged by set)")
    p.add_argument("--out", default="runs/bench-ucr", help="run folders")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-len", type=int, default=0,
                   help="rnnlab's --max-len for every set (default 0: rnnlab's own default, not passed)")
    p.add_argument("--smoke", action="store_true", help="a few steps per set: checks the script, not the figures")
    p.add_argument("--protocol", choices=("default", "published"), default="default",
                   help="published: the sets with a published LSTM-FCN figure, under its training protocol")
    p.add_argument("--ensemble", type=int, default=1,
                   help="models per fold (rnnlab's --ensemble); above 1 the rows go under 'ensemble', and the sets "
                        "are those with a published LSTM-FCN figure unless --sets names others")
    args = p.parse_args(argv)
    if args.ensemble < 1:
        p.error("--ensemble: expected an integer >= 1")
    if args.ensemble > 1 and args.protocol == "published":
        p.error("--ensemble: the published protocol trains one model; use it with --protocol default")
    path = Path(args.json)
    names = [s.strip() for s in args.sets.split(",") if s.strip()]
    if args.sets == p.get_default("sets") and section_name(args):
        names = [n for n in SETS if n in (PUBLISHED_PROTOCOL_SETS if args.protocol == "published" else PUBLISHED_LSTM_FCN)]
    if args.protocol == "published":
        if set(names) - set(PUBLISHED_PROTOCOL_SETS):
            p.error(f"--protocol published: expected sets with a published figure under that protocol "
                    f"({', '.join(PUBLISHED_PROTOCOL_SETS)})")
    for name in names:
        row = run_set(name, args)
        # read again: another invocation (other sets) may have written the file meanwhile
        data = json.loads(path.read_text()) if path.exists() else {"rows": []}
        # default-flag rows at the top level; the published protocol's and the ensembles' in their own sections
        section = data.setdefault(section_name(args), {"rows": []}) if section_name(args) else data
        section["rows"] = [r for r in section["rows"] if r["set"] != name] + [row]
        section["rows"].sort(key=lambda r: SETS.index(r["set"]) if r["set"] in SETS else len(SETS))
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")
        dtw = row["nn1_dtw_acc"]
        print(f"{name:<22} model {row['model_acc']:.4f}  majority {row['majority_acc']:.4f}  "
              f"1NN-ED {row['nn1_euclidean_acc']:.4f}  1NN-DTW {'n/a' if dtw is None else f'{dtw:.4f}'}  "
              f"CPU {row['cpu_s']:.0f} s  wall {row['wall_s']:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
