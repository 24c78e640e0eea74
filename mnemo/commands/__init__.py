"""One module per `mnemo` subcommand; each defines `register(subparsers)`.

cli.py discovers the modules here, so a new command is a new file, not an edit of a shared one.
"""
