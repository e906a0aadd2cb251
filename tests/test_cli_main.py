"""The CLI entry point: every command is listed and parses; only the chosen command's module loads."""

from __future__ import annotations

import subprocess
import sys

import pytest

from complexity_tracker.cli.main import COMMANDS, build_parser, parse_args


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name, (_, summary) in COMMANDS.items():
        assert name in out and summary[:40] in out


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_each_command_builds_its_full_parser(name: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser([name]).parse_args([name, "--help"])
    assert exit_info.value.code == 0
    assert "options:" in capsys.readouterr().out


def test_unknown_command_is_an_argparse_error(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["nope"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_study_run_parses_without_loading_torch_or_mlflow() -> None:
    """So `study run --workers N` starts its helpers before the launcher pays for these imports."""
    code = (
        "import sys\n"
        "from complexity_tracker.cli.main import parse_args\n"
        "args = parse_args(['study', 'run', 'studies/quickstart.toml', '--workers', '2'])\n"
        "from complexity_tracker.studies.config import load_study_config\n"
        "from complexity_tracker.studies.storage import resolve_storage_url, study_tracking_uri\n"
        "from complexity_tracker.studies.workers import HelperWorkers\n"
        "print(sorted({'torch', 'mlflow', 'sklearn', 'matplotlib'} & set(sys.modules)))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
