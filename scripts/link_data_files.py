"""Symlink setup.py's data_files into the venv prefix, as `colcon build --symlink-install` does.

An editable pip install does not install data_files, yet the ament index marker, package.xml,
launch/ and config/ must be under <prefix>/share for ROS tools to find the package.
Usage: python scripts/link_data_files.py PREFIX
"""

import os
import runpy
import sys
from pathlib import Path

import setuptools

root = Path(__file__).resolve().parents[1]
prefix = Path(sys.argv[1]).resolve()
captured = {}
setuptools.setup = lambda **kwargs: captured.update(kwargs)
os.chdir(root)  # setup.py globs relative to its own directory
runpy.run_path(str(root / "setup.py"), run_name="__main__")

for dest, files in captured["data_files"]:
    target_dir = prefix / dest
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in files:
        link = target_dir / Path(name).name
        source = root / name
        if link.is_symlink() or link.exists():
            if link.is_symlink() and link.resolve() == source:
                continue
            link.unlink()
        link.symlink_to(source)
