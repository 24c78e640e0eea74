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
