"""The shell commands of README.md's ```bash blocks, one per command line, with where they stand."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```\s*(\S*)\s*$")


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]  # as the shell splits it, the trailing comment dropped
    section: str  # the heading the block stands under
    line: int  # README line where the command starts

    @property
    def text(self) -> str:
        return shlex.join(self.argv)

    def __str__(self) -> str:
        return f"README.md:{self.line} `{self.text}`"


def readme_commands(readme: Path = README) -> list[Command]:
    """Every command of the README's shell blocks, in order; a `\\` at a line's end continues it."""
    commands: list[Command] = []
    section, block, pending, start = "", None, "", 0
    for number, line in enumerate(readme.read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if block is None:
            if fence:
                block = fence.group(1)
            elif line.startswith("#"):
                section = line.lstrip("#").strip()
            continue
        if fence:
            block = None
            continue
        if block not in SHELL_BLOCKS:
            continue
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        argv = tuple(shlex.split(pending + line, comments=True))
        pending = ""
        if argv:
            commands.append(Command(argv, section, start))
    return commands


def section_commands(section: str, readme: Path = README) -> list[Command]:
    """The commands under the heading `section`, in order."""
    return [c for c in readme_commands(readme) if c.section == section]
