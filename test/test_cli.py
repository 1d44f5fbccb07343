"""The structvpr entry point: every subcommand has help, errors are one line."""

import subprocess
import sys

from structvpr_core import cli


def test_every_command_has_help(capsys):
    parser = cli.build_parser()
    names = parser._subparsers._group_actions[0].choices
    assert "embed" in names
    for name in names:
        try:
            cli.main([name, "--help"])
        except SystemExit as e:
            assert e.code == 0
        out = capsys.readouterr().out
        assert f"structvpr {name}" in out


def test_help_does_not_import_heavy_modules():
    code = (
        "import sys; from structvpr_core import cli; cli.build_parser(); "
        "print(sorted(m for m in ('torch','faiss','cv2','rclpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_user_error_is_one_line_and_nonzero(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "structvpr_core.cli",
            "embed",
            str(tmp_path / "nope.jpg"),
            "--out",
            str(tmp_path / "d.npy"),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("structvpr embed: error:"), proc.stderr
