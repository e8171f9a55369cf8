"""The README's Quick start runs from a plain clone and prints what the README says it prints."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def quick_start_commands() -> list[tuple[str, list[str]]]:
    """(command, the `# ` lines printed after it in the README) of the Quick start's shell block."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("## Quick start") :]
    start = section.index("```bash\n") + len("```bash\n")
    block = section[start : section.index("```", start)]
    commands: list[tuple[str, list[str]]] = []
    after_command = False  # `# ` lines right after a command (up to a blank line) are its output; others are prose
    for line in block.splitlines():
        if not line.strip():
            after_command = False
        elif line.startswith("#"):
            if after_command and line.startswith("# "):
                commands[-1][1].append(line[2:])
        else:
            commands.append((line.split("  #")[0].strip(), []))
            after_command = True
    return commands


def _words(text: str) -> str:
    return " ".join(text.split())


def test_the_parser_reads_commands_and_their_output():
    commands = quick_start_commands()
    assert commands and all(cmd.startswith(("icreward ", "cat ")) for cmd, _ in commands)
    assert sum(len(shown) for _, shown in commands) >= 5  # printed rewards to hold the commands to


@pytest.mark.slow
def test_quick_start_prints_what_the_readme_shows(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for command, shown in quick_start_commands():
        run = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, (command, run.stderr[-2000:])
        lines = [_words(line) for line in (run.stdout + run.stderr).splitlines()]
        for expected in shown:
            assert _words(expected) in lines, (command, expected, lines[-10:])
