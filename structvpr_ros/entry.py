"""What the console entry points (``structvpr_node``, ``structvpr_replay``) share around their work.

rclpy start-up and shut-down, user errors on one line, and the exit codes: 0 when the work ends
or is interrupted (Ctrl-C raises ``KeyboardInterrupt``; SIGTERM shuts the context down, so
spinning raises ``ExternalShutdownException``, or rclpy's ``RCLError`` when the signal lands while
the executor builds its wait set: all a normal end, as in ros2/demos), 1 for a
``StructVPRError`` (a user error: one line, no traceback), 2 for malformed ``--ros-args``.
rclpy is imported only when used, so that ``--help`` and argument errors need no ROS.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from structvpr_core.errors import StructVPRError


def own_arguments(argv: list[str]) -> list[str]:
    """The program's own arguments: those before ``--ros-args`` (the rest are rcl's)."""
    return argv[: argv.index("--ros-args")] if "--ros-args" in argv else argv


def parameter_help(doc: str, params_file: str, described: dict, live=frozenset()) -> str:
    """A node's ``--help``: its docstring, then each parameter with its default and description.

    ``described``: {name: (default, description)}; ``live``: the names that may change while the
    node runs (marked ``*``).
    """
    lines = [doc.strip(), ""]
    marks = "; * = may be changed while the node runs" if live else ""
    lines.append(f"Parameters (set them in a params file, see {params_file}, or with -p name:=value{marks}):")
    for name, (default, text) in described.items():
        lines.append(f"  {name}{' *' if name in live else ''} (default {default!r})\n      {text}")
    return "\n".join(lines)


def print_error(prog: str, message: str) -> None:
    """``<prog>: error: <message>`` on stderr, the one-line form of every user error."""
    print(f"{prog}: error: {message}", file=sys.stderr, flush=True)


def run_with_rclpy(prog: str, rclpy_args: list[str] | None, work: Callable[[], object]) -> int:
    """Initialise rclpy with ``rclpy_args`` (None: sys.argv), call ``work()``, shut rclpy down.

    ``work`` creates its node and destroys it in a ``finally`` of its own, so that the node is
    gone before rclpy is shut down, however ``work`` ends. Returns the exit code (module docstring).
    """
    import rclpy
    from rclpy.executors import ExternalShutdownException

    try:
        rclpy.init(args=rclpy_args)
    except Exception as e:  # rcl's RCLError for malformed --ros-args; keep it to one line
        print_error(prog, str(e).splitlines()[0])
        return 2
    try:
        work()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except RuntimeError:
        # rclpy's shutdown race: a signal shut the context down while the executor was building
        # its wait set ("RCLError: ... the given context is not valid"): the same normal end.
        if rclpy.ok():
            raise
    except StructVPRError as e:
        print_error(prog, str(e))
        return 1
    finally:
        rclpy.try_shutdown()
    return 0
