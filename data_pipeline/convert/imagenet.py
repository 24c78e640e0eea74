"""`mnemo shards imagenet`: ILSVRC2012 train/val folders to class-grouped JPEG shards + DALI indexes.

    mnemo shards imagenet --train ILSVRC2012/train --val ILSVRC2012/val --out data/imagenet \
        [--short-side 256] [--shard-mb 256] [--workers 16] [--subset 100] [--skip-bad]

Layouts (imagenet_layout.py): train is one folder per synset; val is one folder per synset or a flat
folder with a ground-truth file (Kaggle CSV, devkit IDs + meta.mat, TensorFlow synset list,
Caffe-style `<file> <index>`); the form found is printed and recorded in the manifest's created_by.
Class ids are the positions of the (kept) synsets in sorted order; `--subset K` keeps the first K
classes of RandomState(1993).permutation over the sorted synsets (ImageNet-Subset for K=100).

Images are stored as JPEG: a readable RGB/greyscale JPEG that needs no resize is kept byte for byte
(after a full decode that catches truncation); anything else (PNG or CMYK files named .JPEG, images
over --short-side) is decoded, converted to RGB, resized and re-encoded (--quality).

Work is one task per (split, class), spread over processes. Each finished class leaves a record
`<split>/c<class>.done.json` (its shards, sizes, sha256, the conversion settings and a digest of its
source files); a rerun verifies the shards of every recorded class (size and sha256) and skips it,
and redoes classes that are missing, incomplete, corrupted or made with other settings. The
manifest is written last.
"""
from __future__ import annotations

import hashlib
import io
import json
import multiprocessing
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from core import atomic
from core.errors import UserError
from data_pipeline.shards.manifest import MANIFEST, Manifest, ShardInfo, sha256_file

DEFAULT_SHARD_MB = 256
_KEY = re.compile(r"[^A-Za-z0-9_-]")


def image_bytes(path: Path, short_side: int | None, quality: int) -> bytes:
    """JPEG bytes to store for one source image; raises UserError naming the file if it is unreadable."""
    from PIL import Image

    from data_pipeline.shards.image_codec import encode, resize_short_side

    try:
        data = path.read_bytes()
        img = Image.open(io.BytesIO(data))
        w, h = img.size
        keep = img.format == "JPEG" and img.mode in ("RGB", "L") and (short_side is None or min(w, h) <= short_side)
        if keep:
            img.draft(img.mode, (max(1, w // 8), max(1, h // 8)))   # DCT-scaled: still reads every byte
            img.load()
            return data
        img.load()
    except Exception as e:      # PIL raises many types for truncated/unreadable files
        raise UserError(f"cannot read image {path}: {e}") from None
    img = img.convert("RGB")
    if short_side:
        img = resize_short_side(img, short_side)
    return encode(img, "jpg", quality)


def _keys(files: list[str]) -> list[str]:
    keys, seen = [], set()
    for i, f in enumerate(files):
        k = _KEY.sub("_", Path(f).stem)
        if k in seen:
            k = f"{k}_{i}"
        seen.add(k)
        keys.append(k)
    return keys


def source_digest(files: list[str]) -> str:
    h = hashlib.sha256()
    for f in files:
        st = os.stat(f)
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _record_path(root: Path, split: str, cid: int) -> Path:
    return root / split / f"c{cid:05d}.done.json"


def _check_record(root: Path, split: str, cid: int, params: dict, digest: str) -> tuple[dict | None, str]:
    """(record, "") when the class's finished shards are intact; else (None, why it is redone)."""
    path = _record_path(root, split, cid)
    if not path.is_file():
        return None, ""
    try:
        rec = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None, "unreadable record"
    if rec.get("params") != params:
        return None, "made with other settings"
    if rec.get("source") != digest:
        return None, "source images changed"
    for s in rec["shards"]:
        p = root / s["path"]
        if not p.is_file():
            return None, f"{s['path']} missing"
        if p.stat().st_size != s["bytes"] or sha256_file(p) != s["sha256"]:
            return None, f"{s['path']} corrupted (size or sha256 differs from its record)"
        if not s.get("index") or not (root / s["index"]).is_file():
            return None, f"{s['path']} has no index file"
    return rec, ""


def convert_class(job: dict) -> dict:
    """One (split, class) task, run in a worker: reuse the verified shards, or (re)write them."""
    from data_pipeline.shards.writer import write_class_shards

    root, split, cid, files, params = Path(job["root"]), job["split"], job["cid"], job["files"], job["params"]
    digest = source_digest(files)
    rec, why = _check_record(root, split, cid, params, digest)
    if rec is not None:
        return {**rec, "reused": True, "redo": ""}
    for stale in list((root / split).glob(f"c{cid:05d}-*")) + [_record_path(root, split, cid)]:
        stale.unlink(missing_ok=True)
    skipped: list[dict] = []

    def samples():
        for key, f in zip(_keys(files), files):
            try:
                payload = image_bytes(Path(f), params["short_side"], params["quality"])
            except UserError as e:
                if not params["skip_bad"]:
                    raise UserError(f"{e} (pass --skip-bad to skip unreadable images; they are listed in "
                                    "manifest.json)") from None
                skipped.append({"path": f, "reason": str(e)})
                continue
            yield key, payload

    shards = write_class_shards(root, split, cid, samples(), "jpg", int(params["shard_mb"] * 2**20))
    rec = {"split": split, "class": cid, "params": params, "source": digest, "images": len(files) - len(skipped),
           "shards": [s.to_json() for s in shards], "skipped": skipped}
    atomic.write_json(_record_path(root, split, cid), rec, indent=None)
    return {**rec, "reused": False, "redo": why}


def _run_jobs(jobs: list[dict], workers: int):
    if workers <= 1:
        yield from map(convert_class, jobs)
        return
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    # spawn: no fork of a process that may hold threads; a worker that dies raises BrokenProcessPool
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        pending = {pool.submit(convert_class, j) for j in jobs}
        try:
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    yield f.result()
        finally:
            for f in pending:
                f.cancel()


@dataclass(frozen=True)
class ImagenetOptions:
    """`mnemo shards imagenet`'s options (mnemo/commands/shards.py says what each does)."""
    short_side: int | None = None        # resize larger images to this short side (None: keep their size)
    shard_mb: float = DEFAULT_SHARD_MB   # shard size in MiB
    subset: int | None = None            # ImageNet-Subset: N classes chosen with seed 1993
    workers: int | None = None           # processes (None: all CPUs; 0: in this process)
    skip_bad: bool = False               # skip unreadable images (listed in the manifest) instead of stopping
    quality: int = 90                    # JPEG quality of re-encoded images
    val_labels: str | None = None        # ground-truth file of a flat val folder (None: searched)
    devkit: str | None = None            # ILSVRC2012_devkit_t12 folder (meta.mat) for devkit ground truth
    synset_names_file: str | None = None  # '<synset> <name>' lines (None: searched)


def convert_imagenet(train: Path, val: Path, out: Path, options: ImagenetOptions = ImagenetOptions(),
                     progress=print) -> Manifest:
    o = options
    short_side, shard_mb, subset, workers, skip_bad = o.short_side, o.shard_mb, o.subset, o.workers, o.skip_bad
    quality, val_labels, devkit, synset_names_file = o.quality, o.val_labels, o.devkit, o.synset_names_file
    from data_pipeline.convert.imagenet_layout import (
        list_images,
        subset_synsets,
        synset_names,
        train_synsets,
        val_layout,
    )

    train, val, out = Path(train), Path(val), Path(out)
    if short_side is not None and short_side < 16:
        raise UserError(f"--short-side {short_side} is too small (use e.g. 256 or 160)")
    if shard_mb * 2**20 < 4096:
        raise UserError(f"--shard-mb {shard_mb} is too small (a shard holds at least one image)")
    if not 1 <= quality <= 100:
        raise UserError("--quality must be between 1 and 100")
    all_synsets = train_synsets(train)
    synsets = subset_synsets(all_synsets, subset) if subset else all_synsets
    layout = val_layout(val, all_synsets, train, val_labels, devkit)
    names, names_from = synset_names(synsets, train, val, synset_names_file, devkit)
    progress(f"[shards] imagenet: {len(all_synsets)} train synsets"
             + (f", subset of {len(synsets)} chosen with seed 1993" if subset else "")
             + f"; val: {layout.form}; names: {names_from}")
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)      # not complete until the manifest is rewritten at the end
    params = {"short_side": short_side, "quality": quality, "shard_mb": shard_mb, "skip_bad": skip_bad}
    jobs = []
    for cid, wnid in enumerate(synsets):
        tfiles = list_images(train / wnid)
        if not tfiles:
            raise UserError(f"train synset folder {train / wnid} has no images")
        for split, files in (("train", tfiles), ("test", layout.files.get(wnid, []))):
            if files:
                jobs.append({"root": str(out), "split": split, "cid": cid, "files": [str(f) for f in files],
                             "params": params})
    jobs.sort(key=lambda j: -len(j["files"]))       # longest first: better balance over workers
    workers = max(1, min((os.cpu_count() or 1) if workers is None else workers, len(jobs)))
    total = sum(len(j["files"]) for j in jobs)
    records, done_images, reused, t0 = [], 0, 0, time.perf_counter()
    last = t0
    for rec in _run_jobs(jobs, workers):
        records.append(rec)
        done_images += rec["images"] + len(rec["skipped"])
        reused += rec["reused"]
        if rec["redo"]:
            progress(f"[shards] {rec['split']} class {rec['class']} redone: {rec['redo']}")
        now = time.perf_counter()
        if now - last > 10 or len(records) == len(jobs):
            last = now
            progress(f"[shards] {len(records)}/{len(jobs)} class tasks ({reused} verified and reused), "
                     f"{done_images}/{total} images, {done_images / max(now - t0, 1e-9):.0f} img/s, {workers} workers")
    classes = [{"id": i, "name": names[w], "key": w} for i, w in enumerate(synsets)]
    splits: dict[str, list[ShardInfo]] = {"train": [], "test": []}
    skipped: list[dict] = []
    for rec in sorted(records, key=lambda r: (r["split"], r["class"])):
        splits[rec["split"]].extend(ShardInfo(s["class"], s["path"], s["samples"], s["bytes"], s["sha256"], s["index"])
                                    for s in rec["shards"])
        skipped.extend(rec["skipped"])
    for v in splits.values():
        v.sort(key=lambda s: (s.class_id, s.path))
    dataset = f"imagenet-subset{len(synsets)}" if subset else "imagenet"
    how = (f"mnemo shards imagenet (val: {layout.form}; short side: {short_side or 'original'}; "
           f"subset: {f'{subset} classes, seed 1993' if subset else 'no'})")
    m = Manifest(root=out, dataset=dataset, classes=classes, splits=splits, image_size=None, encoding="jpg",
                 skipped=skipped, created_by=how)
    m.write()
    if skipped:
        progress(f"[shards] skipped {len(skipped)} unreadable images (listed in manifest.json), "
                 f"e.g. {skipped[0]['path']}")
    return m
