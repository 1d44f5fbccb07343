"""The ``structvpr`` command: one entry point, one subcommand per module in ``commands/``.

A subcommand module defines ``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args)``
(returning an exit code or None). Modules must not import torch, faiss or OpenCV at import
time, so that ``structvpr --help`` stays instant; they import them inside ``run``.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

from . import __version__, commands
from .errors import StructVPRError
from .images import limit_decoder_pixels
from .log import configure_cli_logging


def _command_modules():
    for info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda i: i.name):
        if not info.name.startswith("_"):
            yield importlib.import_module(f"{commands.__name__}.{info.name}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="structvpr",
        description="StructVPR visual place recognition: descriptors, evaluation, training "
        "inputs, map databases and loop-closure look-ups.",
        epilog="Run 'structvpr COMMAND --help' for the options of one command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in _command_modules():
        p = sub.add_parser(
            module.NAME,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", module.HELP),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "--debug",
            action="store_true",
            default=argparse.SUPPRESS,
            help="show full tracebacks instead of one-line errors",
        )
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    configure_cli_logging(f"structvpr {args.command}", debug=args.debug)
    try:
        limit_decoder_pixels()  # OpenCV's own decoding limit, before any command imports it
        code = args._run(args)
    except StructVPRError as e:
        if args.debug:
            raise
        print(f"structvpr {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"structvpr {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
