"""`mnemo shards ...`: convert data sets to class-grouped webdataset shards."""
from __future__ import annotations

from pathlib import Path

from core.errors import UserError


def _run(args) -> int:
    out = Path(args.out) if getattr(args, "out", None) else None
    if args.kind == "glyphs":
        from data_pipeline.convert.glyphs import convert_glyphs

        m = convert_glyphs(out, size=args.size, test_fraction=args.test_fraction, seed=args.seed)
    elif args.kind == "imagefolder":
        from data_pipeline.convert.imagefolder import convert_imagefolder

        if args.size and args.short_side:
            raise UserError("give either --size or --short-side, not both")
        m = convert_imagefolder(Path(args.train), Path(args.val), out, size=None if args.short_side else args.size,
                                short_side=args.short_side, encoding=args.encoding, skip_bad=args.skip_bad)
    elif args.kind == "cifar100":
        from data_pipeline.convert.cifar100 import convert_cifar100

        m = convert_cifar100(Path(args.src), out)
    else:  # verify
        from data_pipeline.shards.manifest import load_manifest

        m = load_manifest(args.dir, verify=False)
        m.verify(checksums=True)
        print(f"[shards] {args.dir}: {sum(len(v) for v in m.splits.values())} shards match manifest.json")
        return 0
    counts = {k: sum(s.samples for s in v) for k, v in m.splits.items()}
    print(f"[shards] wrote {m.root}/manifest.json: {m.num_classes} classes, " +
          ", ".join(f"{k} {v} images" for k, v in counts.items()))
    return 0


def register(sub) -> None:
    s = sub.add_parser("shards", help="convert data sets to class-grouped webdataset shards")
    ss = s.add_subparsers(dest="kind", required=True)
    g = ss.add_parser("glyphs", help="render the built-in 62-class glyph data set from Debian fonts")
    g.add_argument("--out", required=True)
    g.add_argument("--size", type=int, default=32)
    g.add_argument("--test-fraction", type=float, default=0.2, help="share of fonts held out for testing")
    g.add_argument("--seed", type=int, default=1993)
    f = ss.add_parser("imagefolder", help="one folder per class (train and val trees)")
    f.add_argument("--train", required=True)
    f.add_argument("--val", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--size", type=int, default=32, help="square side: short side resize + centre crop")
    f.add_argument("--short-side", type=int, default=None, help="resize the short side only (keeps aspect)")
    f.add_argument("--encoding", choices=("png", "jpg"), default="png")
    f.add_argument("--skip-bad", action="store_true", help="skip unreadable images (listed in the manifest)")
    c = ss.add_parser("cifar100", help="CIFAR-100 python pickles (cifar-100-python/)")
    c.add_argument("--src", required=True)
    c.add_argument("--out", required=True)
    v = ss.add_parser("verify", help="check every shard against its size and sha256 in manifest.json")
    v.add_argument("dir")
    # issue 5: `shards imagenet` (data_pipeline/convert_imagenet.py) and `shards index` (wds_index.py)
    from data_pipeline.convert.imagenet import register_cli as imagenet_cli
    from data_pipeline.shards.wds_index import register_cli as index_cli

    imagenet_cli(ss)
    index_cli(ss)
    s.set_defaults(func=_run)
