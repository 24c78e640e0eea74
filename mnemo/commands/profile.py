"""`mnemo profile TARGET [args]`: benchmarks that print one JSON object.

TARGET names a module `benchmarks/<TARGET>_profile.py` with `main(argv) -> int | None`, so a new
benchmark is a new file there.
"""
from __future__ import annotations

import importlib
import pkgutil

from core.errors import UserError


def targets() -> list[str]:
    import benchmarks

    return sorted(m.name[: -len("_profile")] for m in pkgutil.iter_modules(benchmarks.__path__)
                  if m.name.endswith("_profile"))


def _run(args) -> int:
    if args.what not in targets():
        raise UserError(f"unknown profile target '{args.what}' (known: {', '.join(targets())})")
    mod = importlib.import_module(f"benchmarks.{args.what}_profile")
    return mod.main(args.rest) or 0


def register(sub) -> None:
    p = sub.add_parser("profile", help="benchmarks that print JSON figures (targets: files benchmarks/*_profile.py)")
    p.add_argument("what", help="benchmark target, e.g. mnemonics")
    p.add_argument("rest", nargs="...", help="arguments for the benchmark")
    p.set_defaults(func=_run)
