"""Benchmark of the embedded data: opening AV-digits from its committed file against rebuilding
it with espeak-ng (timed on a few clips and scaled to the whole set; skipped without espeak-ng),
opening the UCI Multiple Features views (mfeat) from their committed file, and generating the
procedural RGB-D scenes of one default training split."""

from __future__ import annotations

import shutil
import time

from cmkd.data import arrays, avdigits, build_avdigits, mfeat, rgbd_scenes


def _load_all_splits() -> float:
    arrays.embedded_cache_clear()
    start = time.perf_counter()
    for split in avdigits.SPLITS:
        avdigits.AVDigits(split)
    return time.perf_counter() - start


def _load_mfeat() -> float:
    arrays.embedded_cache_clear()
    start = time.perf_counter()
    for split in mfeat.SPLITS:
        mfeat.MFeat(split)
    return time.perf_counter() - start


def run(repeats: int = 3, rebuild_clips: int = 40) -> list[dict]:
    """Rows: benchmark, items, seconds, speed-up (reference time over the committed file's)."""
    load = min(_load_all_splits() for _ in range(repeats))
    n = int(len(avdigits.raw_arrays()["label"]))
    rows = [{"benchmark": "avdigits: open train, val and test from the committed file",
             "items": n, "seconds": load, "speed-up": 1.0}]
    if shutil.which("espeak-ng"):
        start = time.perf_counter()
        build_avdigits.build(limit=rebuild_clips)
        rebuild = (time.perf_counter() - start) * n / rebuild_clips
        rows.append({"benchmark": f"avdigits: rebuild with espeak-ng, scaled from "
                                  f"{rebuild_clips} clips", "items": n, "seconds": rebuild,
                     "speed-up": rebuild / load})
    rows.append({"benchmark": "mfeat: open train, val and test (views fou, kar) from the "
                              "committed file", "items": int(len(mfeat.raw_arrays()["label"])),
                 "seconds": min(_load_mfeat() for _ in range(repeats)), "speed-up": 1.0})
    scenes = rgbd_scenes.RGBDScenes("train")
    start = time.perf_counter()
    scenes.tensors()
    rows.append({"benchmark": "rgbd_scenes: generate the default train split (64x64)",
                 "items": len(scenes), "seconds": time.perf_counter() - start,
                 "speed-up": float("nan")})
    return rows
