"""`mnemo report RUN [RUN ...] --out DIR`: the paper's figures and tables, and throughput charts, as PNGs
and one report.md (implementation: reporting/)."""
from __future__ import annotations

from pathlib import Path

from core.errors import UserError


def _run(args) -> int:
    from reporting.build import ReportOptions, build_report

    if args.out is None:
        if len(args.runs) > 1:
            raise UserError("several runs need --out DIR (one run defaults to RUN/report)")
        args.out = str(Path(args.runs[0]) / "report")
    opts = ReportOptions(tsne=not args.no_tsne, tsne_phases=args.tsne_phases, tsne_classes=args.tsne_classes,
                         tsne_per_class=args.tsne_per_class, grids=not args.no_grids, grid_phase=args.grid_phase,
                         grid_classes=args.grid_classes, grid_per_class=args.grid_per_class, device=args.device)
    path = build_report(args.runs, args.out, opts)
    print(f"[report] wrote {path} and {len(list(path.parent.glob('*.png')))} figures")
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="figures and tables (accuracy curves, Ā/F tables, t-SNE, exemplar images, "
                                      "throughput) from run directories")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories made by mnemo train")
    p.add_argument("--out", default=None, help="output directory (default for one run: RUN/report)")
    p.add_argument("--tsne-phases", type=int, nargs="+", default=None, metavar="P",
                   help="phases for the t-SNE (default: first, middle and last)")
    p.add_argument("--tsne-classes", type=int, default=3, help="base classes in the t-SNE (later phases add one each)")
    p.add_argument("--tsne-per-class", type=int, default=100, help="real images per class in the t-SNE")
    p.add_argument("--no-tsne", action="store_true", help="skip the t-SNE (it reads shards and runs the models)")
    p.add_argument("--grid-phase", type=int, default=None, help="phase of the exemplar images (default: the last)")
    p.add_argument("--grid-classes", type=int, default=4)
    p.add_argument("--grid-per-class", type=int, default=8)
    p.add_argument("--no-grids", action="store_true", help="skip the exemplar image grids")
    p.add_argument("--device", default="cpu", help="device for feature extraction (cpu, cuda)")
    p.set_defaults(func=_run)
