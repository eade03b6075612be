"""bench/prompt_speed.py: one run on real walkthrough states prints every host step of its table."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "prompt_speed.py"


def test_prints_the_host_steps_on_walkthrough_states(jericho_game, tmp_path, capsys) -> None:
    jericho_game("detective.z5")
    spec = importlib.util.spec_from_file_location("bench_prompt_speed", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(["--games", "detective", "--max-states", "4", "--batch", "3", "--repeats", "1",
                 "--max-prompt-tokens", "512", "--history-turns", "2", "--states-cache", str(tmp_path)])
    out = capsys.readouterr().out
    assert re.search(r"; [1-4] states of detective, 3 per call", out)
    rows = [line for line in out.splitlines() if line.startswith("| ") and "ms per state" not in line]
    assert len(rows) == 5 and all(float(row.rstrip(" |").split("|")[-1].split("/")[-1]) > 0 for row in rows)
