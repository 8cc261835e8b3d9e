"""One module per ``timm-adl`` subcommand; each defines ``register(subparsers)``.

``register`` adds its parser and sets ``func`` (called with the parsed args, returns an exit code).
"""
