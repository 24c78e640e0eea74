"""`mnemo shards ...`: convert data sets to class-grouped webdataset shards, index and verify them.

One function per subcommand adds its parser and the function that runs it; the work itself is in
data_pipeline/ (convert/ for the converters, shards/ for the shard format).
"""
from __future__ import annotations

from pathlib import Path

from core.errors import UserError


def _report(m, extra: str = "") -> int:
    counts = {k: sum(s.samples for s in v) for k, v in m.splits.items()}
    print(f"[shards] wrote {m.root}/manifest.json: {m.num_classes} classes, " +
          ", ".join(f"{k} {v} images" for k, v in counts.items()) + extra)
    return 0


def _glyphs(args) -> int:
    from data_pipeline.convert.glyphs import convert_glyphs

    return _report(convert_glyphs(Path(args.out), size=args.size, test_fraction=args.test_fraction, seed=args.seed))


def _imagefolder(args) -> int:
    from data_pipeline.convert.imagefolder import FolderOptions, convert_imagefolder

    if args.size and args.short_side:
        raise UserError("give either --size or --short-side, not both")
    options = FolderOptions(size=None if args.short_side else args.size, short_side=args.short_side,
                            encoding=args.encoding, skip_bad=args.skip_bad)
    return _report(convert_imagefolder(Path(args.train), Path(args.val), Path(args.out), options))


def _cifar100(args) -> int:
    from data_pipeline.convert.cifar100 import convert_cifar100

    return _report(convert_cifar100(Path(args.src), Path(args.out)))


def _imagenet(args) -> int:
    from data_pipeline.convert.imagenet import ImagenetOptions, convert_imagenet

    options = ImagenetOptions(short_side=args.short_side, shard_mb=args.shard_mb, subset=args.subset,
                              workers=args.workers, skip_bad=args.skip_bad, quality=args.quality,
                              val_labels=args.val_labels, devkit=args.devkit, synset_names_file=args.synset_names)
    m = convert_imagenet(Path(args.train), Path(args.val), Path(args.out), options)
    return _report(m, ", DALI index files beside the shards")


def _index(args) -> int:
    from data_pipeline.shards.wds_index import add_index_files

    add_index_files(args.dir)
    return 0


def _verify(args) -> int:
    from data_pipeline.shards.manifest import load_manifest

    m = load_manifest(args.dir, verify=False)
    m.verify(checksums=True)
    print(f"[shards] {args.dir}: {sum(len(v) for v in m.splits.values())} shards match manifest.json")
    return 0


def _add_glyphs(ss) -> None:
    g = ss.add_parser("glyphs", help="render the built-in 62-class glyph data set from Debian fonts")
    g.add_argument("--out", required=True)
    g.add_argument("--size", type=int, default=32)
    g.add_argument("--test-fraction", type=float, default=0.2, help="share of fonts held out for testing")
    g.add_argument("--seed", type=int, default=1993)
    g.set_defaults(func=_glyphs)


def _add_imagefolder(ss) -> None:
    f = ss.add_parser("imagefolder", help="one folder per class (train and val trees)")
    f.add_argument("--train", required=True)
    f.add_argument("--val", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--size", type=int, default=32, help="square side: short side resize + centre crop")
    f.add_argument("--short-side", type=int, default=None, help="resize the short side only (keeps aspect)")
    f.add_argument("--encoding", choices=("png", "jpg"), default="png")
    f.add_argument("--skip-bad", action="store_true", help="skip unreadable images (listed in the manifest)")
    f.set_defaults(func=_imagefolder)


def _add_cifar100(ss) -> None:
    c = ss.add_parser("cifar100", help="CIFAR-100 python pickles (cifar-100-python/)")
    c.add_argument("--src", required=True)
    c.add_argument("--out", required=True)
    c.set_defaults(func=_cifar100)


def _add_imagenet(ss) -> None:
    from data_pipeline.convert.imagenet import DEFAULT_SHARD_MB

    p = ss.add_parser("imagenet", help="ILSVRC2012 train/val folders (synset folders; val flat + ground truth, "
                                       "or synset folders)")
    p.add_argument("--train", required=True, help="train folder: one sub-folder per synset")
    p.add_argument("--val", required=True, help="val folder: synset sub-folders, or flat with a ground-truth file")
    p.add_argument("--out", required=True)
    p.add_argument("--short-side", type=int, default=None, help="resize larger images to this short side (256, 160)")
    p.add_argument("--shard-mb", type=float, default=DEFAULT_SHARD_MB, help="shard size in MiB (a shard closes "
                   "before exceeding it; one class per shard)")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all CPUs)")
    p.add_argument("--subset", type=int, default=None,
                   help="keep K classes chosen with seed 1993 (100: ImageNet-Subset)")
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable images (listed in the manifest)")
    p.add_argument("--quality", type=int, default=90, help="JPEG quality of re-encoded images")
    p.add_argument("--val-labels", default=None, help="ground-truth file of a flat val folder (default: searched)")
    p.add_argument("--devkit", default=None, help="ILSVRC2012_devkit_t12 folder (meta.mat) for devkit ground truth")
    p.add_argument("--synset-names", default=None, help="'<synset> <name>' lines (default: LOC_synset_mapping.txt, "
                                                        "synset_words.txt or words.txt when found)")
    p.set_defaults(func=_imagenet)


def _add_index(ss) -> None:
    p = ss.add_parser("index", help="write the missing DALI index files (.idx) of a shard directory")
    p.add_argument("dir")
    p.set_defaults(func=_index)


def _add_verify(ss) -> None:
    v = ss.add_parser("verify", help="check every shard against its size and sha256 in manifest.json")
    v.add_argument("dir")
    v.set_defaults(func=_verify)


def register(sub) -> None:
    s = sub.add_parser("shards", help="convert data sets to class-grouped webdataset shards")
    ss = s.add_subparsers(dest="kind", required=True)
    for add in (_add_glyphs, _add_imagefolder, _add_cifar100, _add_imagenet, _add_index, _add_verify):
        add(ss)
