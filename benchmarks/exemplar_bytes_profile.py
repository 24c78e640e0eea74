"""What an exemplar costs to store, per storage form, and how many the bytes of N original images hold.

    mnemo profile exemplar_bytes --shards DIR [--size 32] [--preset glyphs] [--classes 10] [--images 50]
                                 [--per-class 20]

prints ONE JSON object. The bytes a budget image stands for are what the class's original training images cost as
the shards store them (the image part of each sample, from the shards' index files: PNG for glyphs, JPEG for
ImageNet). Each form stores `--images` training images of each of the first `--classes` classes at the model's
input side `--size` (as the memory holds them) and is decoded back:

* `fp16`: the memory before codecs (`exemplars.codec=raw`: float16 pixels, 2 bytes a value); `uint8`: 8-bit pixels;
* `png`: lossless 8-bit (`exemplars.codec=png`); `jpeg_qQ`: JPEG at quality Q (`exemplars.codec=jpeg`,
  `quality: Q`; the cost is the stored pixels' own file, within 1 % of the exemplar's, exemplars/codecs/jpeg.py);
* `lowres_F`: 8-bit pixels at 1/F of the side, bilinear back to the side at use (`exemplars.codec=lowres`,
  `factor: F`, `encoding: pixels`); `lowres_F_png` (`encoding: png`), `lowres_F_jpeg_q75`: the same, encoded.

Per form: mean bytes per exemplar, exemplars per class at the bytes of `--per-class` originals, and the round trip's
mean absolute error and PSNR on [0, 1] pixels. Bytes are exact (no timing), so any machine gives the same figures
for the same shards. `imagenet_1k` gives the arithmetic at ImageNet-1k scale (224 px, 1000 classes, originals of
`--imagenet-image-bytes`) for `raw` and `lowres` as pixels: exemplars a class at the budget's bytes, the sealed
memory (float16 stored values) and the device bank (what the loaders keep for a stage, ExemplarMemory.packed: `raw`
as float16 pixels, the 8-bit forms as uint8 at the stored side, unpacked per batch). JPEG's bytes depend on the
images, so its rows are there only when the shards measured are ImageNet's at 224 px (`--size 224`), from the
`jpeg_qQ` forms measured; the memory keeps JPEG exemplars decoded (8-bit at the model's side), so its sealed
memory and device bank grow with the exemplars it holds.
"""
from __future__ import annotations

import argparse
import json
import math

from torchvision.io import decode_jpeg, encode_jpeg

from data_pipeline.shards.manifest import load_manifest
from data_pipeline.shards.reader import read_classes
from data_pipeline.shards.wds_index import mean_image_bytes
from exemplars.codecs.base import quantise
from exemplars.codecs.jpeg import Jpeg, JpegSettings
from exemplars.codecs.lowres import Lowres, LowresSettings
from exemplars.codecs.png import Png
from exemplars.codecs.raw import Raw

def _codec_form(codec):
    """A form the memory implements (exemplars/codecs/): its own store, cost and decode."""
    def store(x):
        kept = codec.store(x[None].float().div(255))
        return int(codec.nbytes(kept)[0]), codec.decode(kept, x.shape[-1])[0].float().mul(255)
    return store


def _lowres_jpeg(q: int, low: Lowres):
    """JPEG at quality q of `low`'s stored low-resolution pixels, decoded through it (no codec)."""
    def store(x):
        b = encode_jpeg(quantise(low.store(x[None].float().div(255)))[0], quality=q)
        return len(b), low.decode(decode_jpeg(b)[None].float().div(255), x.shape[-1])[0].float().mul(255)
    return store


def _forms() -> dict:
    """name -> (uint8 image (C, S, S)) -> (stored bytes, decoded float image in [0, 255])."""
    forms = {"fp16": _codec_form(Raw()), "uint8": lambda x: (x.numel(), x.float()), "png": _codec_form(Png())}
    forms.update({f"jpeg_q{q}": _codec_form(Jpeg(JpegSettings(q))) for q in (95, 75, 50, 25)})
    for f in (2, 4):
        forms.update({f"lowres_{f}": _codec_form(Lowres(LowresSettings(f, "pixels"))),
                      f"lowres_{f}_png": _codec_form(Lowres(LowresSettings(f, "png"))),
                      f"lowres_{f}_jpeg_q75": _lowres_jpeg(75, Lowres(LowresSettings(f, "pixels")))})
    return forms


def measure(shards: str, preset: str, size: int, classes: int, images: int, per_class: int,
            image_bytes: float = 110_000) -> dict:
    manifest = load_manifest(shards)
    ids = list(range(min(classes, manifest.num_classes)))
    original = {c: mean_image_bytes(manifest, "train", c) for c in ids}
    decoded = read_classes(manifest, "train", ids, preset, size)
    out = {}
    for name, store in _forms().items():
        costs, abs_err, sq_err, held = [], [], [], []
        for c in ids:
            xs = decoded.images[decoded.class_ids == c][:images]
            stored = [store(x) for x in xs]
            n = [b for b, _ in stored]
            costs += n
            diffs = [(y.clamp(0, 255) - x.float()) / 255 for (_, y), x in zip(stored, xs)]
            abs_err += [d.abs().mean().item() for d in diffs]
            sq_err += [d.square().mean().item() for d in diffs]
            held.append(per_class * original[c] / (sum(n) / len(n)))
        mse = sum(sq_err) / len(sq_err)
        out[name] = {"bytes_per_exemplar": round(sum(costs) / len(costs), 1),
                     "exemplars_per_class": round(sum(held) / len(held), 1),
                     "mean_abs_error": round(sum(abs_err) / len(abs_err), 5),
                     "psnr_db": None if mse == 0 else round(-10 * math.log10(mse), 1)}
    return {"shards": str(shards), "encoding": manifest.encoding, "size": size, "classes": len(ids),
            "images_per_class": images, "per_class_budget": per_class,
            "original_bytes_per_image": round(sum(original.values()) / len(original), 1), "forms": out,
            "imagenet_1k": imagenet_bank(per_class, image_bytes, jpeg_bytes=None if size != 224 else {
                name: form["bytes_per_exemplar"] for name, form in out.items() if name.startswith("jpeg_q")})}


def imagenet_bank(per_class: int, image_bytes: float, classes: int = 1000, side: int = 224,
                  jpeg_bytes: dict[str, float] | None = None) -> dict:
    """The memory at ImageNet-1k for the fixed-size forms, at the bytes of `per_class` original images a class of
    `image_bytes` each: exemplars held, the sealed memory (the stored values, float16) and the device bank (what the
    loaders keep for a stage: `raw` float16 pixels, the 8-bit forms uint8 at their stored side), in GB.
    `jpeg_bytes`: {form: bytes an exemplar costs}, measured at `side`, for JPEG rows (kept as 8-bit pixels at the
    model's side)."""
    values = 3 * side * side
    out = {"image_bytes": image_bytes}
    for name, factor in (("raw", 1), ("lowres_2", 2), ("lowres_4", 4)):
        stored = values // (factor * factor)
        held = per_class if name == "raw" else int(per_class * image_bytes // stored)   # raw counts images
        out[name] = {"per_class": held, "sealed_gb": round(2 * held * classes * stored / 1e9, 2),
                     "device_gb": round((2 if name == "raw" else 1) * held * classes * stored / 1e9, 2)}
    for name, cost in (jpeg_bytes or {}).items():
        held = int(per_class * image_bytes // cost)
        out[name] = {"per_class": held, "bytes_per_exemplar": cost,
                     "sealed_gb": round(2 * held * classes * values / 1e9, 2),
                     "device_gb": round(held * classes * values / 1e9, 2)}
    if jpeg_bytes is None:
        out["jpeg"] = "measured only from ImageNet shards at --size 224"
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="mnemo profile exemplar_bytes", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shards", required=True, help="shard directory (manifest.json)")
    ap.add_argument("--preset", default="glyphs")
    ap.add_argument("--size", type=int, default=32, help="the model's input side")
    ap.add_argument("--classes", type=int, default=10, help="the first this many classes")
    ap.add_argument("--images", type=int, default=50, help="training images of each class stored and decoded")
    ap.add_argument("--per-class", type=int, default=20, help="the budget: this many original images a class")
    ap.add_argument("--imagenet-image-bytes", type=float, default=110_000,
                    help="an ImageNet-1k training JPEG's mean bytes, for the projection (about 110 KB)")
    args = ap.parse_args(argv)
    print(json.dumps(measure(args.shards, args.preset, args.size, args.classes, args.images, args.per_class,
                             args.imagenet_image_bytes)))
    return 0
