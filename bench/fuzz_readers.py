"""Coverage-guided fuzzing (atheris, libFuzzer) of the readers of untrusted files: SA-1B records, COCO JSON,
COCO RLE masks and SA-1B tar shards, each for a bounded time.

The documented error of every reader is `ValueError` naming the problem; anything else (another exception, a
crash, a hang past `-timeout`, memory past `-rss_limit_mb`) counts as a crash, and libFuzzer keeps the input
under the work folder (`crash-*`). Each target starts from a seed corpus of valid files (written here) and runs
in its own process. Targets also check properties of what they accept: a record that loads dumps and loads
back equal; an RLE string that decodes gives the same mask as pycocotools and as many pixels as its runs say.

    .venv/bin/python bench/fuzz_readers.py [--seconds 60] [--targets sa1b coco rle shard] [--workdir DIR]

Prints one line per target (runs, runs/s, crashes) and exits 1 if any target crashed.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("sa1b", "coco", "rle", "shard")
MAX_LEN = 8192


# ---- seeds: valid inputs the fuzzer mutates ------------------------------------------------------------------------
def seed_record() -> dict:
    """Return a small valid SA-1B record (a 6 x 5 image with two masks)."""
    import numpy as np

    from dataengine.formats.sa1b import record_from_masks
    from dataengine.service.validation import encode_mask

    masks = []
    for top, left, size in ((0, 0, 2), (2, 1, 3)):
        mask = np.zeros((6, 5), bool)
        mask[top:top + size, left:left + size] = True
        segmentation, area, bbox = encode_mask(mask)
        masks.append({"segmentation": segmentation, "area": area, "bbox": bbox, "predicted_iou": 0.93,
                      "stability_score": 0.97, "crop_box": [0, 0, 5, 6], "point_coords": [[left + 0.5, top + 0.5]]})
    return record_from_masks("seed", 5, 6, masks)


def write_seeds(target: str, corpus: Path) -> None:
    """Write the seed corpus of a target into `corpus`."""
    import io

    from dataengine.formats.coco import coco_from_records
    from dataengine.formats.sa1b import dumps
    from dataengine.formats.shards import write_shard

    corpus.mkdir(parents=True, exist_ok=True)
    record = seed_record()
    if target == "sa1b":
        seeds = [dumps(record), dumps({**record, "annotations": []})]
    elif target == "coco":
        seeds = [json.dumps(coco_from_records([record])).encode()]
    elif target == "rle":
        strings = [a["segmentation"]["counts"] for a in record["annotations"]]
        seeds = [bytes([6, 5]) + s.encode() for s in strings]
        seeds.append(json.dumps({"size": [6, 5], "counts": [0, 2, 4, 2, 22]}).encode())
        seeds.append(json.dumps(record["annotations"][1]["segmentation"]).encode())
    else:
        buffer = io.BytesIO()
        write_shard(buffer, [(record, b"\xff\xd8\xff\xd9")])
        seeds = [buffer.getvalue()]
    for index, seed in enumerate(seeds):
        (corpus / f"seed-{index}").write_bytes(seed)


# ---- the targets (run in the child process) --------------------------------------------------------------------------
def check_sa1b(data: bytes) -> None:
    """SA-1B record reader: `sa1b.loads`; what it accepts dumps and loads back equal."""
    from dataengine.formats import sa1b

    try:
        record = sa1b.loads(data, source="fuzz")
    except ValueError:
        return
    assert sa1b.loads(sa1b.dumps(record)) == record, "a record that loads does not survive dumps/loads"


def check_coco(data: bytes) -> None:
    """COCO reader: `coco.loads`; what it accepts pycocotools indexes."""
    from dataengine.formats import coco

    try:
        loaded = coco.loads(data, source="fuzz")
    except ValueError:
        return
    index = coco.load_coco(loaded)
    assert len(index.anns) == len(loaded["annotations"])


def check_rle(data: bytes) -> None:
    """RLE readers: `coco_decode` / `rle_to_mask` on a JSON RLE, or on (2 size bytes + a counts string)."""
    import numpy as np
    from pycocotools import mask as mask_utils

    from dataengine.masks import coco_decode, rle_runs, rle_to_mask

    if data[:1] == b"{":
        try:
            segmentation = json.loads(data)
        except (ValueError, RecursionError):
            return
        decode = rle_to_mask if isinstance(segmentation, dict) and isinstance(segmentation.get("counts"), list) \
            else coco_decode
        try:
            mask = decode(segmentation)
        except ValueError:
            return
        assert mask.shape == tuple(segmentation["size"])
        return
    if len(data) < 2:
        return
    height, width = data[0] % 64 + 1, data[1] % 64 + 1
    segmentation = {"size": [height, width], "counts": data[2:].decode("latin-1")}
    try:
        mask = coco_decode(segmentation)
    except ValueError:
        return
    _, runs = rle_runs(segmentation)
    assert mask.shape == (height, width) and int(mask.sum()) == int(runs[1::2].sum())
    theirs = mask_utils.decode({"size": [height, width], "counts": data[2:]}).astype(bool)
    assert np.array_equal(mask, theirs), "an accepted RLE string decodes differently from pycocotools"


def check_shard(data: bytes) -> None:
    """SA-1B tar shard reader: `read_shard` (every record validated)."""
    from dataengine.formats.shards import read_shard

    try:
        for record, jpeg in read_shard(data):
            assert isinstance(record, dict) and isinstance(jpeg, bytes)
    except ValueError:
        return


CHECKS = {"sa1b": check_sa1b, "coco": check_coco, "rle": check_rle, "shard": check_shard}


def child(target: str, libfuzzer_args: list[str]) -> None:
    """Fuzz one target in this process (atheris never returns: libFuzzer exits)."""
    import atheris
    import numpy  # noqa: F401  (imported before instrumentation: only the engine's readers are instrumented)
    import pycocotools.mask  # noqa: F401

    with atheris.instrument_imports(include=["dataengine"]):
        import dataengine.formats.coco  # noqa: F401
        import dataengine.formats.sa1b  # noqa: F401
        import dataengine.formats.shards  # noqa: F401
        import dataengine.masks  # noqa: F401
    check = CHECKS[target]
    atheris.Setup([sys.argv[0], *libfuzzer_args], check)
    atheris.Fuzz()


# ---- the driver ------------------------------------------------------------------------------------------------------
def fuzz(target: str, seconds: int, workdir: Path) -> dict:
    """Fuzz `target` for `seconds` in a child process; return {target, runs, runs_per_s, crashes, artefacts, log}."""
    corpus, artefacts = workdir / target / "corpus", workdir / target / "artefacts"
    write_seeds(target, corpus)
    artefacts.mkdir(parents=True, exist_ok=True)
    args = [str(corpus), f"-max_total_time={seconds}", f"-max_len={MAX_LEN}", "-timeout=10", "-rss_limit_mb=3072",
            f"-artifact_prefix={artefacts}/", "-print_final_stats=1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, __file__, "--child", target, "--", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=seconds + 120)
    log = done.stdout + done.stderr
    runs = re.search(r"stat::number_of_executed_units:\s*(\d+)", log) or re.search(r"Done (\d+) runs", log)
    found = sorted(p.name for p in artefacts.iterdir())
    crashed = done.returncode != 0 or bool(found)
    return {"target": target, "seconds": seconds, "runs": int(runs.group(1)) if runs else 0,
            "runs_per_s": round(int(runs.group(1)) / seconds) if runs else 0, "crashes": int(crashed),
            "artefacts": [str(artefacts / name) for name in found], "returncode": done.returncode,
            "log": log[-4000:] if crashed else ""}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=60, help="fuzzing time per target")
    parser.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    parser.add_argument("--workdir", type=Path, default=None, help="corpora and crash inputs (default: a temp dir)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child:
        child(args.child, [a for a in rest if a != "--"])
        return 0
    sys.path.insert(0, str(REPO))
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fuzz-readers-"))
    results = [fuzz(target, args.seconds, workdir) for target in args.targets]
    print(f"{'reader':8} {'seconds':>7} {'runs':>9} {'runs/s':>7} {'crashes':>7}")
    for r in results:
        print(f"{r['target']:8} {r['seconds']:>7} {r['runs']:>9} {r['runs_per_s']:>7} {r['crashes']:>7}")
        if r["crashes"]:
            print(f"  crash inputs: {r['artefacts']}\n{r['log']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 1 if any(r["crashes"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
