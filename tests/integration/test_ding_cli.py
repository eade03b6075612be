"""`ding -m serial -c zoo/jericho/priorzero/priorzero_config.py -s 0` runs, trains and stops at its bound.

DI-engine's own bound is the CLI's ``--train-iter``; the config's ``train.max_iter`` is enforced by our evaluator
(``should_eval`` forces a final evaluation there and reports ``stop``), tested in test_evaluator_bound.py."""
import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_ding_serial_cli_runs_trains_and_respects_max_iter(tmp_path):
    env = dict(os.environ, DEBUG_MODE="True", PYTHONPATH=str(REPO_ROOT))
    config = REPO_ROOT / "zoo" / "jericho" / "priorzero" / "priorzero_config.py"
    # `python -c` runs DI-engine's own CLI entry (the `ding` script) with the repository importable.
    cmd = [sys.executable, "-c", "from ding.entry.cli import cli; cli()", "-m", "serial", "-c", str(config), "-s", "0",
           "--train-iter", "8"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ckpts = list(tmp_path.glob("data_priorzero/*/ckpt/iteration_*.pth.tar"))
    assert ckpts, "the learner should save its final checkpoint"
    iterations = sorted(int(p.name.split("_")[1].split(".")[0]) for p in ckpts)
    assert iterations[-1] == 8, f"training must stop at the --train-iter bound, got {iterations}"
