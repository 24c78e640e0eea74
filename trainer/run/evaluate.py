"""Evaluation after each phase: CNN and NME top-1 on all seen classes, split by the phase each class
arrived in (a row of the accuracy matrix), on D_0^test, and old vs new classes."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from core.protocol import PhasePlan
from core.ranks import SINGLE, DistInfo
from exemplars.features import class_means, nme_scores
from trainer.engine import distributed


def _pct(correct: torch.Tensor) -> float | None:
    return round(100.0 * correct.float().mean().item(), 4) if len(correct) else None


# Evaluation decodes the test set in chunks of classes of at most this many bytes (ImageNet-1k val at
# 224 px is 7.5 GB): a chunk is decoded, predicted and dropped unless the set fits data.cache_max_gb.
CHUNK_BYTES = 1 << 30
# `EvalBatches(test, indices, batch_size)`: float [0,1] batches of the test samples at `indices`, in
# order and `batch_size` at a time, on the device (the DALI eval pipeline: loaders.eval_batches)
EvalBatches = Callable[[object, torch.Tensor, int], Iterator[torch.Tensor]]


@dataclass(frozen=True)
class EvalOptions:
    batch_size: int = 256                # eval.batch_size
    nme: bool = True                     # eval.nme: also the nearest-mean-of-exemplars accuracy
    flip: bool = False                   # class means average the mirrored exemplars (where the preset flips)
    chunk_bytes: int = CHUNK_BYTES
    decoded: EvalBatches | None = None   # the DALI eval pipeline (loaders.eval_batches), else the in-memory reader


def _local_chunks(test, dist: DistInfo, options: EvalOptions) -> Iterator[Iterator[tuple[torch.Tensor, torch.Tensor]]]:
    """This rank's part of every class of `test` (every world-th sample), as chunks, each an iterator of
    (sample indices, float images on the rank's device) batches: one batch is on the device at a time. Only
    that part is decoded: by `options.decoded` where given (all in one chunk: nothing is held), else class
    chunk by class chunk (test.part, uint8 on the host)."""
    rank, world, batch_size = dist.rank, dist.world, options.batch_size
    if options.decoded is not None:
        idx = test.part_span(test.ids, rank, world)
        if len(idx):
            yield zip(idx.split(batch_size), options.decoded(test, idx, batch_size))
        return
    for ids in test.chunks(options.chunk_bytes):
        idx = test.part_span(ids, rank, world)
        if not len(idx):
            continue
        images = test.part(ids, rank, world)
        yield ((idx[i: i + batch_size], images[i: i + batch_size].to(dist.device).float().div_(255))
               for i in range(0, len(idx), batch_size))


@torch.no_grad()
def _predict_chunk(strategy, model, batches, means: torch.Tensor | None) -> tuple:
    """(indices, CNN top-5 (n, k), NME top-1 or None) of one chunk's batches."""
    model.eval()
    idx, top, feats = [], [], []
    for i, x in batches:
        scores = strategy.predict(model, x)
        idx.append(i)
        top.append(scores.topk(min(5, scores.shape[1]), 1).indices.cpu())
        if means is not None:
            feats.append(torch.nn.functional.normalize(model.features(x.float()), dim=1).float().cpu())
    nme = nme_scores(torch.cat(feats), means).argmax(1) if means is not None else None
    return torch.cat(idx), torch.cat(top), nme


def evaluate(model, strategy, test, plan: PhasePlan, phase: int, memory, options: EvalOptions,
             dist: DistInfo = SINGLE) -> dict:
    """`test`: the seen classes' test images (a PhaseImages, decoded chunk by chunk of classes); `memory`: the
    exemplars whose class means the NME classifier uses (None: no NME). Each rank predicts its part of every
    class; predictions are gathered so every rank returns the same dict."""
    labels = plan.labels_of(test.class_ids)
    seen = plan.seen_labels(phase)
    # None when a seen class has no exemplars: then there is no NME accuracy
    means = class_means(model, memory.view(seen), seen, dist.device, options.flip, options.batch_size) \
        if options.nme and memory is not None else None
    use_nme = means is not None
    parts_idx, parts_top, parts_nme = [], [], []
    for batches in _local_chunks(test, dist, options):
        i, top, nme_pred = _predict_chunk(strategy, model, batches, means)
        parts_idx.append(i)
        parts_top.append(top)
        if use_nme:
            parts_nme.append(nme_pred)
    idx = torch.cat(parts_idx) if parts_idx else torch.empty(0, dtype=torch.int64)
    top = torch.cat(parts_top) if parts_top else torch.empty((0, 5), dtype=torch.int64)
    mine = {"idx": idx, "cnn": top[:, 0], "top5": (top == labels[idx, None]).any(1)}
    if use_nme:
        mine["nme"] = torch.cat(parts_nme) if parts_nme else torch.empty(0, dtype=torch.int64)
    parts = distributed.all_gather_object(mine)
    order = torch.cat([p["idx"] for p in parts])
    result = {}
    for kind in ("cnn", "nme") if use_nme else ("cnn",):
        pred = torch.empty(len(labels), dtype=torch.int64)
        pred[order] = torch.cat([p[kind] for p in parts])
        correct = pred == labels
        suffix = "" if kind == "cnn" else "_nme"
        result[f"accuracy{suffix}"] = _pct(correct)
        base = labels < plan.phase_sizes[0]
        result[f"accuracy_base{suffix}"] = _pct(correct[base])
        old = labels < len(plan.old_labels(phase))
        result[f"accuracy_old{suffix}"] = _pct(correct[old])
        result[f"accuracy_new{suffix}"] = _pct(correct[~old])
        row = []
        for j in range(phase + 1):
            group = torch.isin(labels, torch.tensor(plan.new_labels(j)))
            row.append(_pct(correct[group]))
        result[f"acc_row{suffix}"] = row
    hit = torch.empty(len(labels), dtype=torch.bool)
    hit[order] = torch.cat([p["top5"] for p in parts])
    result["accuracy_top5"] = _pct(hit)                  # CNN top-5 (LwM's iILSVRC-small protocol)
    model.train()
    return result
