"""The `mnemo` command line: train, shards, profile.

User mistakes (bad config, missing data, unknown names) print one line `mnemo: error: ...` and exit
with status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from mnemo.errors import UserError


def _cmd_train(args) -> int:
    from trainer.config import load_config
    from trainer.main import run

    cfg = load_config(args.config, args.overrides)
    summary = run(cfg, args.run_dir)
    return 0 if summary["status"] == "complete" else 1


def _cmd_shards(args) -> int:
    out = Path(args.out) if getattr(args, "out", None) else None
    if args.kind == "glyphs":
        from data_pipeline.convert_glyphs import convert_glyphs

        m = convert_glyphs(out, size=args.size, test_fraction=args.test_fraction, seed=args.seed)
    elif args.kind == "imagefolder":
        from data_pipeline.convert_imagefolder import convert_imagefolder

        if args.size and args.short_side:
            raise UserError("give either --size or --short-side, not both")
        m = convert_imagefolder(Path(args.train), Path(args.val), out, size=None if args.short_side else args.size,
                                short_side=args.short_side, encoding=args.encoding, skip_bad=args.skip_bad)
    elif args.kind == "cifar100":
        from data_pipeline.convert_cifar100 import convert_cifar100

        m = convert_cifar100(Path(args.src), out)
    elif args.kind == "verify":
        from data_pipeline.manifest import load_manifest

        m = load_manifest(args.dir, verify=False)
        m.verify(checksums=True)
        print(f"[shards] {args.dir}: {sum(len(v) for v in m.splits.values())} shards match manifest.json")
        return 0
    counts = {k: sum(s.samples for s in v) for k, v in m.splits.items()}
    print(f"[shards] wrote {m.root}/manifest.json: {m.num_classes} classes, " +
          ", ".join(f"{k} {v} images" for k, v in counts.items()))
    return 0


def _cmd_profile(args) -> int:
    if args.what == "mnemonics":
        from benchmarks.mnemonics_profile import main as profile_main

        return profile_main(args.rest) or 0
    raise UserError(f"unknown profile target '{args.what}'")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mnemo", description="Class-incremental learning with mnemonics exemplars.")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="run (or resume) a class-incremental run")
    t.add_argument("--config", required=True, help="YAML recipe, e.g. configs/glyphs.yaml")
    t.add_argument("--run-dir", required=True, help="run directory (created; resumed if it exists)")
    t.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.epochs=5")
    t.set_defaults(func=_cmd_train)

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
    s.set_defaults(func=_cmd_shards)

    pr = sub.add_parser("profile", help="benchmarks that print JSON figures")
    pr.add_argument("what", choices=("mnemonics",))
    pr.add_argument("rest", nargs=argparse.REMAINDER)
    pr.set_defaults(func=_cmd_profile)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as e:
        print(f"mnemo: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("mnemo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
