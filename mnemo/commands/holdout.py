"""`mnemo holdout`: a validation shard set carved out of a training split (hyperparameter selection)."""
from __future__ import annotations


def _run(args) -> int:
    from data_pipeline.convert.holdout import make_holdout

    make_holdout(args.src, args.out, args.per_class, args.seed)
    return 0


def register(sub) -> None:
    h = sub.add_parser("holdout", help="make a validation shard set: hold images out of a train split "
                                       "(its 'test' split is validation data; the real test split is not read)")
    h.add_argument("--src", required=True, help="shard directory to split (its train split)")
    h.add_argument("--out", required=True, help="new shard directory")
    h.add_argument("--per-class", type=int, required=True, help="validation images held out per class")
    h.add_argument("--seed", type=int, default=1993)
    h.set_defaults(func=_run)
