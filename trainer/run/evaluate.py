"""Evaluation after each phase: CNN and NME top-1 on all seen classes, split by the phase each class
arrived in (a row of the accuracy matrix), on D_0^test, and old vs new classes."""
from __future__ import annotations

import torch

from core.protocol import PhasePlan
from exemplars.features import class_means, extract_features, nme_scores
from trainer.engine import distributed


def _pct(correct: torch.Tensor) -> float | None:
    return round(100.0 * correct.float().mean().item(), 4) if len(correct) else None


@torch.no_grad()
def predict_all(strategy, model, images: torch.Tensor, device, batch_size: int, topk: int = 1) -> torch.Tensor:
    """Top-1 predictions (N,), or with topk > 1 the best min(topk, classes) classes (N, k), best first."""
    model.eval()
    preds = []
    for i in range(0, len(images), batch_size):
        x = images[i: i + batch_size].to(device).float().div_(255)
        scores = strategy.predict(model, x)
        preds.append((scores.argmax(1) if topk == 1 else scores.topk(min(topk, scores.shape[1]), 1).indices).cpu())
    if preds:
        return torch.cat(preds)
    return torch.empty((0,) if topk == 1 else (0, topk), dtype=torch.int64)


@torch.no_grad()
def predict_nme(model, images, means: torch.Tensor, device, batch_size: int) -> torch.Tensor:
    return nme_scores(extract_features(model, images, device, batch_size), means).argmax(1)


# Evaluation decodes the test set in chunks of classes of at most this many bytes (ImageNet-1k val at
# 224 px is 7.5 GB): a chunk is decoded, predicted and dropped unless the set fits data.cache_max_gb.
CHUNK_BYTES = 1 << 30


def evaluate(model, strategy, test, labels: torch.Tensor, plan: PhasePlan, phase: int, memory,
             device, batch_size: int, nme: bool, flip: bool, dist_info, chunk_bytes: int = CHUNK_BYTES) -> dict:
    """`test`: the seen classes' test images (a PhaseImages, decoded chunk by chunk of classes), `labels`
    their incremental labels. Each rank predicts a strided slice of every chunk; predictions are
    gathered so every rank returns the same dict."""
    rank, world = dist_info.rank, dist_info.world
    seen = plan.seen_labels(phase)
    # None when a seen class has no exemplars: then there is no NME accuracy
    means = class_means(model, memory, seen, device, flip, batch_size) if nme and memory is not None else None
    use_nme = means is not None
    parts_idx, parts_top, parts_nme = [], [], []
    for ids in test.chunks(chunk_bytes):
        span = test.span(ids)
        local = torch.arange(len(span))[rank::world]
        if not len(local):
            continue
        images = test.classes(ids)[local]
        parts_idx.append(span[local])
        parts_top.append(predict_all(strategy, model, images, device, batch_size, topk=5))
        if use_nme:
            parts_nme.append(predict_nme(model, images, means, device, batch_size))
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
