"""One benchmark part in its own process: ``python -m structvpr_core.bench.part NAME CFG.json OUT.json``."""

from __future__ import annotations

import importlib
import json
import sys

from ..atomic import atomic_write_json

MODULES = {"extraction": "extraction", "search": "search", "training": "training"}  # node: structvpr_ros.bench_node


def main(argv: list[str]) -> int:
    name, cfg_file, out_file = argv
    kind = name.split(":")[0]
    if kind not in MODULES:
        print(f"unknown bench part {name!r}", file=sys.stderr)
        return 2
    with open(cfg_file, encoding="utf-8") as f:
        cfg = json.load(f)
    module = importlib.import_module(f"{__package__}.{MODULES[kind]}")
    atomic_write_json(out_file, module.run(cfg))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
