"""`data.loader: dali | torch | auto`: pick the training loader of a stage.

* torch: PhaseBatches over the phase's images decoded in memory (phase_images.PhaseImages.images).
* dali: DaliPhaseBatches, reading the phase's shards directly (DALI on CPU here, nvJPEG on a GPU).
* auto: dali when nvidia.dali imports and a probe pipeline decodes an image here, else torch.

Both loaders follow the same epoch plan (batch_plan.py), so the choice changes decode/augment speed
and the random augmentation draws, not which samples meet in which batch. The DALI loader reads real
images from the shards only when a stage trains on the phase's real data as the driver built it; a
stage whose real data a strategy's stage narrowed (`Stage.data`) keeps the in-memory loader.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from core.errors import UserError
from data_pipeline.loading.settings import DataSettings

log = logging.getLogger(__name__)
_STATUS: dict[object, str | None] = {}


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


def _device_id(device: torch.device) -> int | None:
    return (device.index or 0) if device.type == "cuda" else None


def resolve_loader(name: str, device: torch.device = torch.device("cpu")) -> str:
    """'dali' or 'torch' for data.loader=`name`; data.loader=dali without a working DALI is a UserError."""
    if name == "torch":
        return "torch"
    problem = dali_problem(_device_id(device))
    if name == "dali" and problem:
        raise UserError(f"data.loader=dali but DALI does not work here ({problem}); install "
                        "nvidia-dali-cuda130 (requirements/stack.txt) or use data.loader=torch/auto")
    if name == "auto":
        if problem:
            log.info("data.loader=auto: DALI unavailable (%s), using the torch loader", problem)
            return "torch"
    return "dali"


@dataclass
class StageData:
    """Training data of a stage: real images (uint8) and exemplar tensors (float16 as stored, or float), with
    labels.

    `real_images` is a uint8 tensor, or the run's lazily decoded PhaseImages (indexing it with a
    mask or index tensor decodes only the classes selected; `.images` decodes all of it)."""
    real_images: object | None
    real_labels: torch.Tensor | None
    ex_images: torch.Tensor | None
    ex_labels: torch.Tensor | None

    def __len__(self) -> int:
        return sum(len(t) for t in (self.real_labels, self.ex_labels) if t is not None)


def train_batches(loader: str, settings: DataSettings, batch_size: int, data: StageData, phase_real, manifest,
                  label_of: dict[int, int], rank: int, world: int, device: torch.device, seed: int):
    """The batches of one training stage: an object with `steps_per_epoch` and `epoch(e)`.

    `loader`: resolve_loader's answer; `phase_real`: the phase's real data as the run read it (a lazily
    decoded PhaseImages). The DALI loader is used when `data.real_images` is exactly that set, which then
    is never decoded in memory; exemplar-only stages (balanced fine-tune) need no decoding and keep
    PhaseBatches. Either keeps the exemplars on `device` for the stage; call `close()` after it."""
    from data_pipeline.loading.phase_batches import PhaseBatches
    from data_pipeline.loading.phase_images import PhaseImages

    share = settings.exemplar_share
    if loader == "dali" and data.real_images is not None and data.real_images is phase_real:
        from data_pipeline.loading.dali_batches import DaliPhaseBatches

        class_ids = sorted(set(phase_real.class_ids.tolist()))
        return DaliPhaseBatches(manifest, class_ids, data.ex_images, data.ex_labels, batch_size, rank, world, seed,
                                settings.preset, settings.image_size, label_of=label_of, exemplar_share=share,
                                threads=max(1, settings.workers), device_id=_device_id(device),
                                layout="channels_last")        # the model's layout (models/net.py)
    real_images = data.real_images.images if isinstance(data.real_images, PhaseImages) else data.real_images
    return PhaseBatches(real_images, data.real_labels, data.ex_images, data.ex_labels, batch_size, rank, world,
                        seed, settings.preset, settings.image_size, exemplar_share=share, device=device)


def eval_batches(loader: str, settings: DataSettings, manifest, device: torch.device):
    """Evaluation's decoder (trainer/run/evaluate.EvalBatches): the DALI eval pipeline when the run trains
    with DALI (each rank decodes only its part of the test set, with nvJPEG on a GPU), else None (the
    in-memory reader decodes)."""
    if loader != "dali":
        return None
    from data_pipeline.loading.dali_batches import dali_eval_batches

    def decoded(test, indices: torch.Tensor, batch_size: int):
        for x, _ in dali_eval_batches(manifest, test.split, test.ids, batch_size, settings.preset, settings.image_size,
                                      threads=max(1, settings.workers), device_id=_device_id(device),
                                      layout="channels_last", indices=indices):
            yield x
    return decoded
