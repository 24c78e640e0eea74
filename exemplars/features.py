"""Features of a frozen model (eval mode, no augmentation: deterministic, rank-independent), the class
means of the exemplar memory, and the nearest-mean classifier over them."""
from __future__ import annotations

from typing import Mapping

import torch

from core.runs import bounded_runs


@torch.no_grad()
def extract_features(model, images: torch.Tensor, device: torch.device, batch_size: int = 256,
                     flip: bool = False) -> torch.Tensor:
    """L2-normalised features of float/uint8 images; `flip` averages with the mirrored image (iCaRL)."""
    was_training = model.training
    model.eval()
    out = []
    for i in range(0, len(images), batch_size):
        x = images[i: i + batch_size].to(device)
        x = x.float().div_(255) if x.dtype == torch.uint8 else x.float()
        f = torch.nn.functional.normalize(model.features(x), dim=1)
        if flip:
            f = torch.nn.functional.normalize(f + torch.nn.functional.normalize(model.features(x.flip(-1)), dim=1), dim=1)
        out.append(f.float().cpu())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


@torch.no_grad()
def class_means(model, bank: Mapping[int, torch.Tensor], labels, device, flip: bool,
                batch_size: int = 256) -> torch.Tensor | None:
    """NME prototypes, (len(labels), d), of a {label: exemplars} bank (`ExemplarMemory.bank`): per class,
    the mean of the L2-normalised exemplar features, averaged with the mean over the mirrored exemplars when `flip`, then L2-normalised (iCaRL's code,
    as LUCIR's `class_means`). None when a class has no exemplars. Used by evaluation's NME accuracy
    and by iCaRL's classifier, so both report the same prototypes. Classes share full batches (a
    thousand classes of 20 exemplars are 80 batches of 256, not 2,000 batches of 20)."""
    if any(label not in bank or not len(bank[label]) for label in labels):
        return None
    means = []
    for chunk in bounded_runs(labels, lambda label: len(bank[label]), batch_size):
        x = torch.cat([bank[label] for label in chunk]).float()
        counts = [len(bank[label]) for label in chunk]
        f = torch.stack([part.mean(0) for part in extract_features(model, x, device, batch_size).split(counts)])
        if flip:
            fm = extract_features(model, x.flip(-1), device, batch_size).split(counts)
            f = (f + torch.stack([part.mean(0) for part in fm])) / 2
        means.append(torch.nn.functional.normalize(f, dim=1))
    return torch.cat(means)


def nme_scores(features: torch.Tensor, means: torch.Tensor) -> torch.Tensor:
    """The nearest-mean-of-exemplars classifier (iCaRL's prediction, and the NME accuracy of every run):
    cosine similarity of the L2-normalised features to the L2-normalised class means (`class_means`).
    For unit vectors ||f - μ||² = 2 - 2 f·μ, so argmax is the nearest mean."""
    f = torch.nn.functional.normalize(features, dim=1)
    return f @ means.to(f.dtype).T
