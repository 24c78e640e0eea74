"""NVIDIA DALI pipelines: decode + train/eval transforms, output as torch tensors.

The ONLY module of mnemo that imports nvidia.dali (import it lazily; `data_pipeline/loaders.py`
decides whether DALI is usable).

Encoded images come in through `fn.external_source`, one batch per step, in the order the epoch plan
(batch_plan.py) dictates, so the split over ranks is exact and deterministic; batch sizes may vary
from step to step. A train batch brings its random parameters with it (dali_draws.py): the graph has
no random operator, so one pipeline serves a whole stage and an epoch draws the same after a resume.
Transforms:

* train, imagenet preset: decode the given crop window (Inception-style random-resized-crop; ROI
  decode), resize to S x S, the given horizontal flip, scale.
* train, 32 px presets (glyphs, cifar): decode, resize the short side to S and centre-crop S, the given
  translation by zero-padded crop (augment.PAD), flip where the preset allows (augment.FLIP).
* eval: decode, resize the short side to 256/224 * S (imagenet preset; S for the others), centre crop S.
Resize-and-centre-crop is bicubic (antialiased) with DALI's rounding, the arithmetic of the torch
loader's reader (shards/image_codec.resize_and_centre_crop): both loaders see the same pixels, to
the resamplers' tolerance (tests/unit/data/test_loader_pixels.py).

Output is float in [0, 1] (the model normalises inside itself) or, with `normalize=True`, ImageNet
mean/std normalised; layout NCHW, NHWC or channels_last (logical NCHW over NHWC memory); dtype
float32, float16 or bfloat16 (bf16 is converted from float32 by torch: DALI has no bf16 output).
With `device_id=None` every operator runs on the CPU (no GPU needed); with a GPU id the decode is
`mixed` (nvJPEG) and the rest runs on that GPU, and tensors come out on it.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import torch
from nvidia.dali import __version__ as DALI_VERSION  # noqa: F401  (reported by benchmarks)
from nvidia.dali import fn, types
from nvidia.dali.pipeline import Pipeline
from nvidia.dali.plugin.pytorch import feed_ndarray

from data_pipeline.loading.augment import PAD

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
LAYOUTS = ("NCHW", "NHWC", "channels_last")
DTYPES = {torch.float32: types.FLOAT, torch.float16: types.FLOAT16, torch.bfloat16: types.FLOAT}


@dataclass(frozen=True)
class PipeSpec:
    mode: str                          # "train" | "eval"
    preset: str                        # glyphs | cifar | imagenet (augment.py)
    image_size: int                    # output side S
    layout: str = "NCHW"
    dtype: torch.dtype = torch.float32
    normalize: bool = False            # False: [0,1] (mnemo models normalise inside); True: ImageNet mean/std
    threads: int = 2
    device_id: int | None = None       # None: CPU-only pipeline; GPU id: mixed decode on that GPU

    def __post_init__(self):
        if self.mode not in ("train", "eval"):
            raise ValueError(f"mode must be train or eval, not {self.mode}")
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {LAYOUTS}, not {self.layout}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be float32, float16 or bfloat16, not {self.dtype}")

    def eval_resize(self) -> int:
        return round(self.image_size * 256 / 224) if self.preset == "imagenet" else self.image_size


def train_input_types(spec: PipeSpec) -> list:
    """DALI types of what a train batch brings besides its encoded images (dali_draws.train_draws)."""
    return [types.FLOAT, types.FLOAT, types.INT32] if spec.preset == "imagenet" else [types.FLOAT, types.INT32]


def _graph(inputs: list, spec: PipeSpec):
    """The transform graph; `inputs`: [encoded] for eval, [encoded, *draws] for train (no DALI random
    operator anywhere: a train batch's randomness comes in with it)."""
    gpu = spec.device_id is not None
    dec = "mixed" if gpu else "cpu"
    dev = "gpu" if gpu else "cpu"
    s = spec.image_size
    enc, mirror, crop = inputs[0], 0, None
    if spec.mode == "train" and spec.preset == "imagenet":
        anchor, shape, mirror = inputs[1:]
        img = fn.decoders.image_slice(enc, anchor, shape, device=dec, output_type=types.RGB,
                                      normalized_anchor=False, normalized_shape=False)
        img = fn.resize(img, device=dev, size=[s, s], interp_type=types.INTERP_LINEAR, antialias=True)
    elif spec.mode == "train":
        shift, mirror = inputs[1:]
        img = fn.decoders.image(enc, device=dec, output_type=types.RGB)
        img = fn.resize(img, device=dev, resize_shorter=s, interp_type=types.INTERP_CUBIC, antialias=True)
        img = fn.crop(img, device=dev, crop=[s, s], crop_pos_x=0.5, crop_pos_y=0.5)
        if PAD[spec.preset] > 0:
            img = fn.slice(img, shift, [float(s), float(s)], axes=[1, 0],
                           normalized_anchor=False, normalized_shape=False, out_of_bounds_policy="pad",
                           fill_values=0, device=dev)
    else:
        img = fn.decoders.image(enc, device=dec, output_type=types.RGB)
        img = fn.resize(img, device=dev, resize_shorter=spec.eval_resize(), interp_type=types.INTERP_CUBIC,
                        antialias=True)
        crop = [s, s]
    mean, std = ((IMAGENET_MEAN, IMAGENET_STD) if spec.normalize else ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)))
    kw = dict(crop=crop, crop_pos_x=0.5, crop_pos_y=0.5) if crop else {}
    return fn.crop_mirror_normalize(img, device=dev, dtype=DTYPES[spec.dtype],
                                    output_layout="HWC" if spec.layout != "NCHW" else "CHW",
                                    mean=[255 * m for m in mean], std=[255 * v for v in std], mirror=mirror, **kw)


def build_pipeline(source, spec: PipeSpec, max_batch: int) -> Pipeline:
    """A built pipeline that takes its batches from `source`: a callable returning the next batch (a list
    of encoded images for eval; a tuple (encoded, *draws) of per-image lists for train) or raising
    StopIteration at the end of an epoch (then `run()` raises it too; `reset()` starts the next)."""
    pipe = Pipeline(batch_size=max_batch, num_threads=spec.threads, device_id=spec.device_id,
                    prefetch_queue_depth=2, exec_dynamic=True)       # no random operator: no seed
    with pipe:
        if spec.mode == "train":
            kinds = [types.UINT8, *train_input_types(spec)]
            inputs = fn.external_source(source=source, batch=True, num_outputs=len(kinds), dtype=kinds)
        else:
            inputs = [fn.external_source(source=source, batch=True, dtype=types.UINT8, ndim=1)]
        pipe.set_outputs(_graph(list(inputs), spec))
    pipe.build()
    return pipe


def to_torch(out, spec: PipeSpec) -> torch.Tensor:
    t = out.as_tensor()
    dt = torch.float16 if spec.dtype == torch.float16 else torch.float32
    if spec.device_id is None:
        x = torch.empty(t.shape(), dtype=dt)
        feed_ndarray(t, x)
    else:
        dev = torch.device("cuda", spec.device_id)
        x = torch.empty(t.shape(), dtype=dt, device=dev)
        feed_ndarray(t, x, cuda_stream=torch.cuda.current_stream(dev))
    if spec.dtype == torch.bfloat16:
        x = x.to(torch.bfloat16)
    if spec.layout == "channels_last":
        x = x.permute(0, 3, 1, 2)           # logical NCHW, NHWC memory
    return x


def decode_batches(batches: Iterable[list[np.ndarray]], count: int, spec: PipeSpec,
                   max_batch: int) -> Iterator[torch.Tensor]:
    """Run `count` steps: each takes the next list of encoded images from `batches` and yields them
    decoded and transformed as one torch tensor (same order as the list)."""
    if count <= 0:
        return
    it = iter(batches)
    pipe = build_pipeline(lambda: next(it), spec, max_batch)
    try:
        for _ in range(count):
            (out,) = pipe.run()
            yield to_torch(out, spec)
    finally:
        del pipe


def probe(device_id: int | None = None) -> None:
    """Decode one small JPEG through a CPU (or mixed) pipeline; raises when DALI does not work here."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 100, 50)).save(buf, format="JPEG")
    data = np.frombuffer(buf.getvalue(), dtype=np.uint8)
    spec = PipeSpec("eval", "imagenet", 16, threads=1, device_id=device_id)
    out = list(decode_batches([[data, data]], 1, spec, 2))
    if len(out) != 1 or tuple(out[0].shape) != (2, 3, 16, 16) or abs(float(out[0][:, 0].mean()) - 200 / 255) > 0.05:
        raise RuntimeError(f"DALI probe decoded an unexpected result: {[tuple(x.shape) for x in out]}")


def read_webdataset_labels(paths: list[str], index_paths: list[str], batch: int = 16) -> list[int]:
    """The int32 `.lbl` of every sample of `paths`, in order, through DALI's own webdataset reader
    with the given index files (a check that the index files are what DALI expects)."""
    pipe = Pipeline(batch_size=batch, num_threads=1, device_id=None)
    with pipe:
        _, lbl = fn.readers.webdataset(paths=paths, index_paths=index_paths, ext=["jpg;png", "lbl"],
                                       dtypes=[types.UINT8, types.INT32], missing_component_behavior="error",
                                       pad_last_batch=True, name="reader")
        pipe.set_outputs(lbl)
    pipe.build()
    n = pipe.epoch_size("reader")
    out: list[int] = []
    while len(out) < n:
        (labels,) = pipe.run()
        out += [int(np.asarray(labels[i]).reshape(-1)[0]) for i in range(len(labels))]
    return out[:n]
