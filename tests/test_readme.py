"""The README's Quick start runs from a plain clone and prints what the README says it prints."""

from __future__ import annotations

import os
import re
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


NUMBER = re.compile(r"-?\d+\.\d+(?:e-?\d+)?")
# Rewards printed from files move in the sixth digit with the decoders' versions (PyAV's FFmpeg build, Pillow): the
# README's -1.457084 reads -1.457080 with av 18.1 and Pillow 13.0. The same machine gives the same digits every run.
TOLERANCE = 5e-5


def _same(expected: str, printed: str) -> bool:
    """The printed line is the README's, word for word outside the numbers, and each number within TOLERANCE."""
    want, got = _words(expected), _words(printed)
    if NUMBER.sub("#", want) != NUMBER.sub("#", got):
        return False
    pairs = zip(NUMBER.findall(want), NUMBER.findall(got), strict=True)
    return all(abs(float(a) - float(b)) <= TOLERANCE for a, b in pairs)


def test_the_parser_reads_commands_and_their_output():
    commands = quick_start_commands()
    assert commands and all(cmd.startswith(("icreward ", "cat ")) for cmd, _ in commands)
    assert sum(len(shown) for _, shown in commands) >= 5  # printed rewards to hold the commands to


def test_printed_numbers_are_compared_within_a_tolerance_and_nothing_else_is():
    assert _same("# -1.457084", "# -1.457080") and _same(
        '{"id": "a", "reward": -1.4570842}', '{"id": "a", "reward": -1.4570801}'
    )
    assert not _same("-1.457084", "-1.457184") and not _same(
        '{"id": "a", "reward": -1.4}', '{"id": "b", "reward": -1.4}'
    )


@pytest.mark.slow
def test_quick_start_prints_what_the_readme_shows(tmp_path):
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    for command, shown in quick_start_commands():
        run = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, (command, run.stderr[-2000:])
        lines = (run.stdout + run.stderr).splitlines()
        for expected in shown:
            assert any(_same(expected, line) for line in lines), (command, expected, lines[-10:])
