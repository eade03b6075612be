"""Helpers shared by the benchmark scripts: where a story file is, and which machine a table was measured on."""
from __future__ import annotations

import os
import platform
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def resolve_game(game: str) -> str:
    """'default' (our game), a path, or a story name in $PRIORZERO_JERICHO_GAMES (default ../shared/jericho-games)."""
    if game == "default" or Path(game).is_file():
        return game
    games_dir = Path(os.environ.get("PRIORZERO_JERICHO_GAMES", REPO_ROOT.parent / "shared" / "jericho-games"))
    candidate = games_dir / game
    if not candidate.is_file():
        raise FileNotFoundError(f"game {game!r}: neither a file nor found in {games_dir} (set PRIORZERO_JERICHO_GAMES)")
    return str(candidate.resolve())


def cpu_name() -> str:
    try:
        return next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def device_line(device: str) -> str:
    """GPU name and CUDA version, or CPU model, core count and the current load (shared machines skew CPU figures)."""
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    return f"CPU {cpu_name()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start"


def machine_name(device: str) -> str:
    """A short name of where a run ran, for a CSV column: the GPU if used, and the CPU cores (envs run there)."""
    cores = f"{os.cpu_count()}-core CPU"
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} + {cores}"
    return cores


def threads_env(threads: int) -> dict[str, str]:
    """The environment of a benchmark child: ``threads`` torch/OpenMP threads (0 leaves the default), no tokenizer
    threads; parallel children on a shared CPU must not oversubscribe it."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false")
    if threads > 0:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env
