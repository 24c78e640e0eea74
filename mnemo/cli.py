"""The `mnemo` command line. Subcommands live in mnemo/commands/, one module each.

User mistakes (bad config, missing data, unknown names) print one line `mnemo: error: ...` and exit
with status 2; anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from core.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    import mnemo.commands as commands

    p = argparse.ArgumentParser(prog="mnemo", description="Class-incremental learning with mnemonics exemplars.")
    sub = p.add_subparsers(dest="command", required=True)
    for mod in sorted(m.name for m in pkgutil.iter_modules(commands.__path__)):
        importlib.import_module(f"mnemo.commands.{mod}").register(sub)
    return p


def parse(argv=None) -> argparse.Namespace:
    """Parse the command line; `key=value` overrides may come before, between or after options (argparse
    alone stops collecting a positional list at the first option). A subcommand that takes overrides
    names its list with `set_defaults(overrides_into=...)`."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if not extra:
        return args
    into = getattr(args, "overrides_into", None)
    words = [w for w in extra if "=" in w and not w.startswith("-")]
    if into is None or len(words) != len(extra):
        unknown = [w for w in extra if w not in words] if into else extra
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    setattr(args, into, [*getattr(args, into), *words])
    return args


def main(argv=None) -> int:
    args = parse(argv)
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
