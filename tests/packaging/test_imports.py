"""`zoo` is shared with LightZero: our `zoo.jericho.priorzero` must import from the repo root and after
`pip install .` from any directory, without shadowing LightZero's `zoo.jericho.envs`."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
PROBE = (
    "import zoo.jericho.priorzero as p, zoo.jericho.envs as e, lzero_ext as x; "
    "print(p.__file__); print(e.__file__); print(x.__file__)"
)


def _probe(cwd: Path) -> list[Path]:
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, capture_output=True, text=True, check=True)
    return [Path(line) for line in out.stdout.strip().splitlines()[-3:]]


def test_import_from_repo_root_uses_repo_copy_and_lightzero_envs():
    ours, lightzero_envs, lib = _probe(REPO_ROOT)
    assert ours.is_relative_to(REPO_ROOT / "zoo" / "jericho" / "priorzero")
    assert lib.is_relative_to(REPO_ROOT / "lzero_ext")
    site = Path(sysconfig.get_paths()["purelib"])
    assert lightzero_envs.is_relative_to(site / "zoo" / "jericho" / "envs"), "LightZero's zoo.jericho.envs is shadowed"


def test_import_after_install_from_any_directory(tmp_path):
    site = Path(sysconfig.get_paths()["purelib"])
    ours, lightzero_envs, lib = _probe(tmp_path)
    assert ours.is_relative_to(site), f"installed copy expected under {site}, got {ours}"
    assert lib.is_relative_to(site)
    assert lightzero_envs.is_relative_to(site / "zoo" / "jericho" / "envs")


def test_install_does_not_overwrite_lightzero_package_inits():
    """Our wheel must carry no zoo/__init__.py or zoo/jericho/__init__.py (those files are LightZero's)."""
    import importlib.metadata

    files = [str(f) for f in importlib.metadata.files("priorzero")]
    assert "zoo/__init__.py" not in files and "zoo/jericho/__init__.py" not in files
    assert any(f.startswith("zoo/jericho/priorzero/") for f in files)
