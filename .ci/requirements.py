"""Print the project's dependencies (pyproject.toml's list plus the test extra), one per line."""

import tomllib
from pathlib import Path

project = tomllib.loads(Path("pyproject.toml").read_text())["project"]
print("\n".join(project["dependencies"] + project["optional-dependencies"]["test"]))
