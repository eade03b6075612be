"""Declared dependencies: test tools apart from the runtime lock, and setup.py's bounds met by what is pinned."""
from __future__ import annotations

import ast
import importlib.metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_TOOLS = ("pytest", "pluggy", "iniconfig")


def _pins(name: str) -> dict[str, Version]:
    pins = {}
    for line in (REPO_ROOT / "requirements" / name).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"{name}: {line!r} is not pinned"
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def _install_requires() -> list[Requirement]:
    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.keyword) and node.arg == "install_requires":
            return [Requirement(value) for value in ast.literal_eval(node.value)]
    raise AssertionError("setup.py declares no install_requires")


def test_test_tools_are_dev_requirements_not_runtime_ones():
    lock, dev = _pins("lock.txt"), _pins("dev.txt")
    assert not set(lock) & set(dev)
    for tool in TEST_TOOLS:
        assert tool not in lock and tool in dev
        assert dev[tool] == Version(importlib.metadata.version(tool)), f"{tool}: dev.txt and the venv differ"
    assert not any(canonicalize_name(r.name) in TEST_TOOLS for r in _install_requires())


def test_installer_installs_and_hashes_dev_requirements():
    script = (REPO_ROOT / "scripts" / "install.sh").read_text()
    hash_line = next(line for line in script.splitlines() if line.startswith("lock_hash="))
    assert "requirements/lock.txt" in hash_line and "DEV_REQS" in hash_line
    assert "install -q --no-deps -r requirements/dev.txt" in script


def test_declared_bounds_admit_the_tested_versions():
    """Every bound of setup.py holds for the lock's pin (or, for what the lock leaves out, the installed version)."""
    lock = _pins("lock.txt")
    for requirement in _install_requires():
        name = canonicalize_name(requirement.name)
        version = lock.get(name) or Version(importlib.metadata.version(requirement.name))
        assert requirement.specifier.contains(version, prereleases=True), f"{requirement} excludes {version}"
        assert requirement.specifier, f"{requirement.name} has no version bound"
