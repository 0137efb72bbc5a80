"""`make venv`: two clones sharing one package environment each import their own `vremd`.

Both clones run their own `make venv` against the same VENV_HOME (linked to the environment
this suite runs in, so nothing is installed); the shared environment is not written to.
"""

from __future__ import annotations

from pathlib import Path

from fresh_clone import copy_checkout, fresh_shell, make_venv, output, shared_env

NEEDED = ("Makefile", "pyproject.toml", "requirements.lock", ".ci", "vremd", "pipeline")


def _where(clone: Path, activate: bool) -> list[str]:
    """vremd's and pipeline's files as the clone's python imports them from `/`, then the `python` on PATH."""
    python = "python" if activate else f"{clone}/.venv/bin/python"
    code = ("import shutil, vremd, pipeline; print(vremd.__file__); print(pipeline.__file__); "
            "print(shutil.which('python'))")
    proc = fresh_shell(clone, f"{python} -c \"{code}\"", activate=activate, cwd=Path("/"))
    assert proc.returncode == 0, output(proc)
    return proc.stdout.split()


def test_two_clones_import_their_own_code(tmp_path):
    shared_site = next((shared_env() / "lib").glob("python3*/site-packages"))
    before = {p.name: p.stat().st_mtime_ns for p in shared_site.glob("*.pth")}
    clones = [copy_checkout(tmp_path / name, only=NEEDED) for name in ("a", "b")]
    for clone in clones + clones[:1]:  # `a` again after `b`: the last `make venv` must not win
        made = make_venv(clone, tmp_path / "venv-home")
        assert made.returncode == 0, output(made)
        assert (clone / ".venv").is_dir() and not (clone / ".venv").is_symlink()
    for clone in clones:
        expected = [str(clone / "vremd/__init__.py"), str(clone / "pipeline/__init__.py"),
                    str(clone / ".venv/bin/python")]
        assert _where(clone, activate=True) == expected
        # unactivated, as DVC runs a stage command: a bare `python` is still the clone's
        assert _where(clone, activate=False) == expected
        script = (clone / ".venv/bin/dvc").read_text().splitlines()[0]
        assert script == f"#!{clone}/.venv/bin/python"
    assert {p.name: p.stat().st_mtime_ns for p in shared_site.glob("*.pth")} == before  # shared env untouched


def test_make_venv_replaces_the_former_link_and_is_idempotent(tmp_path):
    clone = copy_checkout(tmp_path / "c", only=NEEDED)
    (clone / ".venv").symlink_to(shared_env())  # the former layout: .venv linked to the shared environment
    for _ in range(2):
        made = make_venv(clone, tmp_path / "venv-home")
        assert made.returncode == 0, output(made)
    assert not (clone / ".venv").is_symlink()
    assert made.stdout == ""  # the second run found the clone's environment up to date
    assert _where(clone, activate=True)[0] == str(clone / "vremd/__init__.py")


def test_console_scripts_run_from_a_clone_path_too_long_for_a_shebang(tmp_path):
    deep = tmp_path.joinpath(*["a-rather-long-folder-name"] * 5)
    clone = copy_checkout(deep / "clone", only=NEEDED)
    made = make_venv(clone, tmp_path / "venv-home")
    assert made.returncode == 0, output(made)
    assert len(str(clone / ".venv/bin/python")) > 127
    proc = fresh_shell(clone, f"{clone}/.venv/bin/dvc --version && {clone}/.venv/bin/pytest --version",
                       activate=False)
    assert proc.returncode == 0 and proc.stdout.startswith("3.") and "pytest" in proc.stdout, output(proc)


def test_make_venv_leaves_a_venv_it_did_not_make(tmp_path):
    clone = copy_checkout(tmp_path / "c", only=NEEDED)
    (clone / ".venv" / "bin").mkdir(parents=True)
    (clone / ".venv" / "bin" / "mine").write_text("a user's own environment")
    made = make_venv(clone, tmp_path / "venv-home")
    assert made.returncode != 0 and ".venv exists and was not made by `make venv`" in made.stderr, output(made)
    assert (clone / ".venv" / "bin" / "mine").read_text() == "a user's own environment"
