"""Every shell command of README.md works as written, in a fresh shell after the README's set-up.

The commands are read from the README's ```bash blocks. In a fresh clone of this checkout, after
its `make venv` and `source .venv/bin/activate` and nothing else:
- the cheap ones run for real: `--help`, `--dry-run`, `dvc metrics/plots/exp show`, and
  `python -m vremd.eval` on a fixture (GT_DIR and PRED_DIR);
- for the others, the script or module must exist and start, every flag must be one its `--help`
  lists, and every `--set` / `dvc exp run -S` key must be a key of params.yaml with a value of the
  right type.
A command no rule here covers fails the test: a new README command needs a rule.
tests/pipeline/test_dvc_exp.py runs the README's DVC commands for real on a trained smoke pipeline.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from fresh_clone import copy_checkout, fresh_shell, make_venv, output
from readme_commands import Command, readme_commands

from vremd.config import ConfigError, load_config

COMMANDS = readme_commands()
DVC_GROUPS = {"exp", "metrics", "plots", "params", "queue", "stage", "remote", "cache", "config"}
CHEAP_PROGRAMS = {"dvc metrics show", "dvc plots show", "dvc exp show", "python -m vremd.eval"}
OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
PLACEHOLDERS = {"GT_DIR": "gt", "PRED_DIR": "pred"}  # README placeholder -> fixture folder


def split_program(argv: tuple[str, ...]) -> tuple[str, list[str]]:
    """('python pipeline/train.py', args), ('python -m vremd.eval', args), ('dvc exp run', args)."""
    if argv[0] == "python" and len(argv) > 2 and argv[1] == "-m":
        n = 3
    elif argv[0] == "python" and len(argv) > 1:
        n = 2
    elif argv[0] == "dvc" and len(argv) > 1:
        n = 3 if argv[1] in DVC_GROUPS and len(argv) > 2 else 2
    else:
        raise AssertionError(f"no rule in tests/test_readme.py checks {' '.join(argv)!r}: add one")
    return " ".join(argv[:n]), list(argv[n:])


def runs_for_real(cmd: Command) -> bool:
    program, args = split_program(cmd.argv)
    return program in CHEAP_PROGRAMS or "--help" in args or "--dry-run" in args


def option_values(args: list[str], names: tuple[str, ...]) -> list[str]:
    """Values given to any of the options `names`, as `--opt VALUE` or `--opt=VALUE`."""
    values = []
    for i, arg in enumerate(args):
        if arg in names and i + 1 < len(args):
            values.append(args[i + 1])
        elif arg.split("=", 1)[0] in names and "=" in arg:
            values.append(arg.split("=", 1)[1])
    return values


def check_set_keys(params_file: Path, profile: str | None, overrides: list[str]) -> None:
    """`--set KEY=VALUE` of a stage CLI: load_config refuses an unknown key or a value of the wrong type."""
    load_config(params_file, profile=profile, overrides=overrides)


def check_dvc_set_params(params_file: Path, assignments: list[str]) -> None:
    """`dvc exp run -S KEY=VALUE`: KEY exists in params.yaml (DVC would silently add a new one), VALUE fits."""
    params = yaml.safe_load(params_file.read_text())
    for assignment in assignments:
        key, sep, value = assignment.partition("=")
        assert sep, f"-S {assignment}: not KEY=VALUE"
        node = params
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"-S {assignment}: {key} is not a key of params.yaml"
            node = node[part]
        if key == "profile":
            assert value in params["profiles"], f"-S {assignment}: no profile {value!r} in params.yaml"
        elif key.startswith("profiles."):
            _, profile, rest = key.split(".", 2)
            check_set_keys(params_file, profile, [f"{rest}={value}"])


class Checker:
    """Checks README commands in one fresh clone; caches each program's `--help` options."""

    def __init__(self, clone: Path):
        self.clone = clone
        self.helps: dict[str, set[str]] = {}

    def options(self, program: str) -> set[str]:
        if program not in self.helps:
            proc = fresh_shell(self.clone, f"{program} --help", timeout=300)
            assert proc.returncode == 0, f"`{program} --help` fails in a fresh shell\n{output(proc)}"
            self.helps[program] = set(OPTION.findall(proc.stdout))
        return self.helps[program]

    def check(self, cmd: Command) -> None:
        """Static check: the program exists and starts, its flags exist, its keys are params.yaml's."""
        program, args = split_program(cmd.argv)
        if program.startswith("python ") and not program.startswith("python -m"):
            assert (self.clone / cmd.argv[1]).is_file(), f"{cmd}: no script {cmd.argv[1]}"
        known = self.options(program)
        flags = [a.split("=", 1)[0] for a in args if a.startswith("-") and a != "-"]
        unknown = [f for f in flags if f not in known]
        assert not unknown, f"{cmd}: {program} has no option {', '.join(unknown)} (its --help lists {sorted(known)})"
        params_file = self.clone / "params.yaml"
        if program.startswith("python"):
            profile = (option_values(args, ("--profile",)) or [None])[-1]
            overrides = option_values(args, ("--set",))
            try:
                check_set_keys(params_file, profile, overrides)
            except ConfigError as err:
                raise AssertionError(f"{cmd}: {err}") from err
        elif program == "dvc exp run":
            try:
                check_dvc_set_params(params_file, option_values(args, ("-S", "--set-param")))
            except ConfigError as err:
                raise AssertionError(f"{cmd}: {err}") from err

    def run(self, cmd: Command, fixtures: Path) -> str:
        """Run a cheap command as written (placeholders replaced by fixture folders); its stdout."""
        argv = [str(fixtures / PLACEHOLDERS[a]) if a in PLACEHOLDERS else a for a in cmd.argv]
        left = [a for a in argv if re.fullmatch(r"[A-Z][A-Z_]+", a)]
        assert not left, f"{cmd}: no fixture for the placeholder(s) {left}: add one to PLACEHOLDERS"
        proc = fresh_shell(self.clone, shlex.join(argv), timeout=300)
        assert proc.returncode == 0, f"{cmd} fails in a fresh shell\n{output(proc)}"
        assert "Traceback" not in proc.stderr and "ERROR" not in proc.stderr, f"{cmd}\n{output(proc)}"
        return proc.stdout


@pytest.fixture(scope="module")
def checker(tmp_path_factory) -> Checker:
    root = tmp_path_factory.mktemp("readme")
    clone = copy_checkout(root / "clone")
    made = make_venv(clone, root / "venv-home")
    assert made.returncode == 0, output(made)
    return Checker(clone)


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    """GT_DIR and PRED_DIR: a small valid PoseTrack-2018 file, predicted exactly (AP 100)."""
    root = tmp_path_factory.mktemp("eval-fixture")
    good = Path(__file__).parent / "data" / "bad" / "good.json"
    for name in PLACEHOLDERS.values():
        (root / name).mkdir()
        shutil.copy(good, root / name / "good.json")
    return root


def test_set_up_is_two_make_commands_then_one_activation():
    assert [c.argv for c in COMMANDS[:3]] == [("make", "demo"), ("make", "test"), ("source", ".venv/bin/activate")]
    assert sum(c.argv[0] == "source" for c in COMMANDS) == 1


def test_ci_runs_the_readme_set_up_commands_in_order():
    """.ci/run is the README's two commands, in order, on one clone: the suite runs where the demo ran."""
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text().splitlines()
    assert [tuple(shlex.split(line)) for line in ci if line.startswith("make")] == [c.argv for c in COMMANDS[:2]]


def test_every_command_has_a_rule():
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, flags=re.M))
    for cmd in COMMANDS:
        if cmd.argv[0] == "make":
            assert len(cmd.argv) == 2 and cmd.argv[1] in targets, f"{cmd}: no such Makefile target"
        elif cmd.argv[0] != "source":
            split_program(cmd.argv)
    assert len(COMMANDS) > 20  # the parser found the blocks


def test_parser_reads_continuations_and_drops_comments(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("# T\n\n```bash\npython a.py --x 1 \\\n    --y 'b c'   # note\n```\n\n```\nnot a command\n```\n")
    [cmd] = readme_commands(readme)
    assert cmd.argv == ("python", "a.py", "--x", "1", "--y", "b c") and cmd.line == 4 and cmd.section == "T"


@pytest.mark.slow
def test_activated_shell_runs_this_clones_code(checker):
    proc = fresh_shell(checker.clone, "command -v python dvc && python -c 'import vremd, pipeline; "
                       "print(vremd.__file__); print(pipeline.__file__)'", cwd=Path("/"))
    assert proc.returncode == 0, output(proc)
    lines = proc.stdout.split()
    assert lines[:2] == [str(checker.clone / ".venv/bin/python"), str(checker.clone / ".venv/bin/dvc")]
    assert lines[2:] == [str(checker.clone / "vremd/__init__.py"), str(checker.clone / "pipeline/__init__.py")]


@pytest.mark.slow
def test_checker_refuses_an_unknown_flag_or_key(checker):
    for argv, message in (
        (("python", "pipeline/train.py", "--epochs", "3"), "no option --epochs"),
        (("python", "pipeline/train.py", "--set", "train.epoch=3"), "train.epoch"),
        (("python", "pipeline/ablate.py", "--table", "6", "--set", "train.epochs=many"), "train.epochs"),
        (("dvc", "exp", "run", "-S", "profiles.demo.train.epoch=1"), "not a key of params.yaml"),
        (("dvc", "exp", "run", "-S", "profile=papr"), "no profile"),
        (("dvc", "exp", "run", "--tmp"), "no option --tmp"),
        (("python", "pipeline/nope.py"), "no script"),
    ):
        with pytest.raises(AssertionError, match=message):
            checker.check(Command(argv, "test", 0))


@pytest.mark.slow
@pytest.mark.parametrize("cmd", [c for c in COMMANDS if c.argv[0] in ("python", "dvc")], ids=str)
def test_command(checker, fixtures, cmd):
    checker.check(cmd)
    if not runs_for_real(cmd):
        return
    out = checker.run(cmd, fixtures)
    program, args = split_program(cmd.argv)
    if program == "python -m vremd.eval":
        if "--json" in args:
            assert json.loads(out)["table"]["Total"] == pytest.approx(100.0)
        else:
            assert re.search(r"Total \\\\\n&(\s+100\.0 &){7}\s+100\.0", out), out
        if "--coco" in args:
            assert "COCO OKS: AP 1.000" in out, out
    elif "--dry-run" in args:
        assert "trial" in out.lower(), out
