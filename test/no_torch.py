"""Run a module as ``python -m`` would, with torch and torchvision unimportable.

    python test/no_torch.py structvpr_core.cli build-map ...
    python test/no_torch.py -c "from structvpr_ros.detector_setup import build_detector; ..."

A ``sys.meta_path`` finder placed first raises ModuleNotFoundError for ``torch``,
``torchvision`` and their submodules, as in an environment where they are not installed
(``pip install ".[runtime]"``); the runtime-only test (test_runtime_without_torch.py) runs the
map, evaluation and node start-up paths through it.
"""

from __future__ import annotations

import importlib.abc
import runpy
import sys

BLOCKED = ("torch", "torchvision")


class BlockTorch(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname.partition(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {fullname!r} (blocked: runtime-only check)", name=fullname)
        return None


def main() -> None:
    sys.meta_path.insert(0, BlockTorch())
    if len(sys.argv) < 2:
        sys.exit("usage: no_torch.py MODULE [ARGS...] | no_torch.py -c CODE")
    if sys.argv[1] == "-c":
        code = sys.argv[2]
        sys.argv = ["-c", *sys.argv[3:]]
        exec(compile(code, "<no_torch -c>", "exec"), {"__name__": "__main__"})
        return
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
