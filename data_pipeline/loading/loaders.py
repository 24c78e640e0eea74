"""`data.loader: dali | torch | auto`: pick the training loader of a stage.

* torch: PhaseBatches over the phase's images decoded in memory (phase_images.PhaseImages.images).
* dali: DaliPhaseBatches, reading the phase's shards directly (DALI on CPU here, nvJPEG on a GPU).
* auto: dali when nvidia.dali imports and a probe pipeline decodes an image here, else torch.

Both loaders follow the same epoch plan (batch_plan.py), so the choice changes decode/augment speed
and the random augmentation draws, not which samples meet in which batch. The DALI loader reads real
images from the shards when a stage trains on the phase's real data as the driver built it, or on samples of
it that a strategy's stage chose without decoding them (`Stage.data` with phase_images.narrowed: BiC's
held-out split); real data a stage built otherwise (decoded tensors) keeps the in-memory loader.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from core.errors import UserError
from core.ranks import DistInfo
from data_pipeline.loading.augment import AsStored
from data_pipeline.loading.batch_plan import BatchPlan
from data_pipeline.loading.on_device import device_id
from data_pipeline.loading.settings import DataSettings, LoaderOutput

log = logging.getLogger(__name__)
_STATUS: dict[object, str | None] = {}
_WARNED: set[str] = set()          # problems already warned about (the fallback is warned about once)


def dali_problem(device_id: int | None = None) -> str | None:
    """None when DALI works here (import + a probe decode), else why not (cached per device)."""
    if device_id not in _STATUS:
        try:
            from data_pipeline.loading import dali_pipeline

            dali_pipeline.probe(device_id)
            _STATUS[device_id] = None
        except Exception as e:  # ImportError, missing CUDA libraries, a failed build ...
            _STATUS[device_id] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
    return _STATUS[device_id]


def resolve_loader(name: str, device: torch.device = torch.device("cpu")) -> str:
    """'dali' or 'torch' for data.loader=`name`; data.loader=dali without a working DALI is a UserError."""
    if name == "torch":
        return "torch"
    problem = dali_problem(device_id(device))
    if name == "dali" and problem:
        raise UserError(f"data.loader=dali but DALI does not work here ({problem}); install "
                        "nvidia-dali-cuda130 (requirements/stack.txt; a CUDA 12 node: nvidia-dali-cuda120) in the "
                        "run's environment, or use data.loader=torch/auto")
    if name == "auto" and problem:
        if problem not in _WARNED:
            _WARNED.add(problem)
            log.warning("data.loader=auto: DALI does not work here (%s), so the torch loader runs instead: it decodes "
                        "a phase's images into memory (up to data.cache_max_gb, then the run stops) and augments "
                        "them on the CPU in the training process, about 40 images/s per thread at 224 px where "
                        "DALI decodes thousands on a GPU. Install nvidia-dali-cuda130 or set data.loader=dali to "
                        "stop at start instead", problem)
        return "torch"
    return "dali"


@dataclass
class StageData:
    """Training data of a stage: real images (uint8) and exemplar tensors, with labels.

    `real_images` is a uint8 tensor, the run's lazily decoded PhaseImages (indexing it with a mask or index
    tensor decodes only the classes selected; `.images` decodes all of it), or a LazyImages of some of its
    samples (phase_images.narrowed: nothing decoded until a loader needs it). `ex_images` are pixels
    (float16 as stored, or float), or, with `ex_unpack`, the memory's packed form (ExemplarMemory.packed), which the
    loader keeps on the device and unpacks per batch."""
    real_images: object | None
    real_labels: torch.Tensor | None
    ex_images: torch.Tensor | None
    ex_labels: torch.Tensor | None
    ex_unpack: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __len__(self) -> int:
        return sum(len(t) for t in (self.real_labels, self.ex_labels) if t is not None)


def train_batches(loader: str, settings: DataSettings, data: StageData, phase_real, manifest, plan: BatchPlan,
                  label_of: dict[int, int], as_stored: AsStored | None = None):
    """The batches of one training stage: an object with `steps_per_epoch` and `epoch(e)`.

    `loader`: resolve_loader's answer; `phase_real`: the phase's real data as the run read it (a lazily
    decoded PhaseImages). The DALI loader is used when `data.real_images` is that set or a LazyImages of its
    samples, which then are never decoded in memory; exemplar-only stages (balanced fine-tune) need no decoding
    and keep PhaseBatches. Either keeps the exemplars on the plan's device for the stage; call `close()` after it.
    `as_stored`: real images shown as the exemplar memory stores them (augment.AsStored), or None."""
    from data_pipeline.loading.phase_batches import PhaseBatches
    from data_pipeline.loading.phase_images import in_memory

    plan = replace(plan, exemplar_share=settings.exemplar_share)
    exemplars = (data.ex_images, data.ex_labels, data.ex_unpack) if data.ex_labels is not None else None
    streams, index = streamed(data.real_images, phase_real)
    if loader == "dali" and streams:
        from data_pipeline.loading.dali_batches import DaliPhaseBatches

        class_ids = sorted(set(phase_real.class_ids.tolist()))
        out = output(settings, "channels_last", as_stored)            # the model's layout (models/net.py)
        return DaliPhaseBatches(manifest, class_ids, plan, out, exemplars, label_of=label_of, index=index)
    real = (in_memory(data.real_images), data.real_labels) if data.real_labels is not None else None
    return PhaseBatches(real, exemplars, plan, output(settings, as_stored=as_stored))


def streamed(real_images, phase_real) -> tuple[bool, torch.Tensor | None]:
    """(whether a stage's `real_images` can be read from the shards of `phase_real`, the phase's real data as the
    run read it; the positions of its samples in that set, None: all of them)."""
    from data_pipeline.loading.phase_images import LazyImages

    if real_images is not None and real_images is phase_real:
        return True, None
    if isinstance(real_images, LazyImages) and real_images.source is phase_real and real_images.view is None:
        return True, real_images.index
    return False, None


def output(settings: DataSettings, layout: str = "NCHW", as_stored: AsStored | None = None) -> LoaderOutput:
    """What the `data` section's loaders hand the model (DALI decodes on data.workers threads)."""
    return LoaderOutput(settings.preset, settings.image_size, layout=layout, threads=max(1, settings.workers),
                        as_stored=as_stored)


def eval_batches(loader: str, settings: DataSettings, manifest, device: torch.device):
    """Evaluation's decoder (trainer/run/evaluate.EvalBatches): the DALI eval pipeline when the run trains
    with DALI (each rank decodes only its part of the test set, with nvJPEG on a GPU), else None (the
    in-memory reader decodes)."""
    if loader != "dali":
        return None
    from data_pipeline.loading.dali_batches import dali_eval_batches

    def decoded(test, indices: torch.Tensor, batch_size: int):
        for x, _ in dali_eval_batches(manifest, test.split, test.ids, batch_size, output(settings, "channels_last"),
                                      DistInfo(device=device), indices=indices):
            yield x
    return decoded
