"""Operations: the lock files pin every dependency pyproject.toml names (with hashes), the
command runs as `python -m bot`, and `yarigai serve` away from the repository says which
setting finds the flows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent


def pinned(lock: Path) -> dict[str, str]:
    found = {}
    for line in lock.read_text(encoding="utf-8").splitlines():
        matched = re.match(r"^([A-Za-z0-9_.-]+)==([^ ;\\]+)", line)
        if matched:
            found[_name(matched.group(1))] = matched.group(2)
    return found


def _name(requirement: str) -> str:
    bare = re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", bare).lower()


def test_the_lock_files_pin_every_dependency_with_hashes() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    runtime = pinned(ROOT / "requirements.txt")
    dev = pinned(ROOT / "requirements-dev.txt")
    for requirement in project["dependencies"]:
        assert _name(requirement) in runtime, f"{requirement}: run `make lock`"
    for requirement in project["optional-dependencies"]["dev"]:
        assert _name(requirement) in dev, f"{requirement}: run `make lock`"
    # The dev lock is the runtime lock plus the tools, at the same versions.
    assert {name: dev[name] for name in runtime} == runtime
    for lock in ("requirements.txt", "requirements-dev.txt"):
        text = (ROOT / lock).read_text(encoding="utf-8")
        assert text.count("==") <= text.count("--hash=sha256:"), lock
        assert "/opt/" not in text and "file://" not in text, f"{lock} names this machine"


def test_python_dash_m_bot_is_the_command() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bot", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0 and "serve" in done.stdout and "users" in done.stdout


def test_serve_outside_the_repository_names_flows_dir(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOWS_DIR"}
    done = subprocess.run(
        [sys.executable, "-m", "bot", "serve"],
        cwd=tmp_path,
        env={**env, "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "FLOWS_DIR" in done.stderr and str(tmp_path / "flows") in done.stderr
