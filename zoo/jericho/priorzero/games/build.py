"""Rebuild the default game's story file and its adapter metadata from the Inform 6 source.

Jericho has no bindings for our own game, so the generic Z-machine adapter needs to know where the Inform
library keeps ``score``, ``deadflag``, ``turns`` and the location in RAM. The compiler's debug file
(``inform6 -k``, about 2 MB, not committed) has those addresses; this script keeps only the few numbers the
adapter needs in a small JSON file next to the story file.

Usage (``make game`` calls this)::

    python -m zoo.jericho.priorzero.games.build [--source lighthouse.inf] [--inform6 inform6]

Needs Debian's ``inform6-compiler`` and ``inform6-library`` packages (the compiler's default include path is
``/usr/share/inform6/library``).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

GAMES_DIR = Path(__file__).resolve().parent
DEFAULT_SOURCE = GAMES_DIR / "lighthouse.inf"

# Globals of the Inform 6 library the adapter reads; all exist in library 6.11/6.12.
ADAPTER_GLOBALS = ("score", "deadflag", "turns", "location", "real_location", "player")


@dataclass
class InformDebugInfo:
    """The parts of an Inform 6 ``gameinfo.dbg`` that the Z-machine adapter needs."""

    global_addresses: dict[str, int]
    constants: dict[str, int]
    objects: dict[str, int]
    properties: dict[str, int] = field(default_factory=dict)


def parse_debug_file(dbg_text: str) -> InformDebugInfo:
    """Parse the XML-ish debug file with regular expressions (it is one long line, ~2 MB)."""

    def pairs(tag: str, value_tag: str) -> dict[str, int]:
        pattern = re.compile(
            rf"<{tag}><identifier>([^<]+)</identifier><{value_tag}>\s*(-?\d+)</{value_tag}>"
        )
        return {name: int(value) for name, value in pattern.findall(dbg_text)}

    return InformDebugInfo(
        global_addresses=pairs("global-variable", "address"),
        constants=pairs("constant", "value"),
        objects=pairs("object", "value"),
        properties=pairs("property", "value"),
    )


def build_metadata(story_path: Path, debug_info: InformDebugInfo) -> dict:
    """Metadata the adapter loads at run time (see ``envs/zmachine_adapter.py::GameMetadata``)."""
    missing = [name for name in ADAPTER_GLOBALS if name not in debug_info.global_addresses]
    if missing:
        raise ValueError(f"Inform debug info lacks the library globals {missing}; is this an Inform 6 game?")
    if "MAX_SCORE" not in debug_info.constants:
        raise ValueError("The game source must define 'Constant MAX_SCORE'.")
    story_bytes = story_path.read_bytes()
    return {
        "story_file": story_path.name,
        "md5": hashlib.md5(story_bytes).hexdigest(),
        "zversion": story_bytes[0],
        "max_score": debug_info.constants["MAX_SCORE"],
        "global_addresses": {name: debug_info.global_addresses[name] for name in ADAPTER_GLOBALS},
        "object_count": max(debug_info.objects.values()),
        "name_property": debug_info.properties.get("name", 1),
    }


def compile_game(source: Path, out_dir: Path, inform6: str = "inform6") -> tuple[Path, dict]:
    """Compile ``source`` to ``out_dir/<stem>.z5`` and write ``out_dir/<stem>.json``; return both."""
    if shutil.which(inform6) is None:
        raise FileNotFoundError(
            f"Inform 6 compiler '{inform6}' not found. Install it with: "
            "apt-get install -y inform6-compiler inform6-library"
        )
    if not source.is_file():
        raise FileNotFoundError(f"Inform 6 source not found: {source}")
    story_path = out_dir / f"{source.stem}.z5"
    with tempfile.TemporaryDirectory() as work_dir:
        # -k writes gameinfo.dbg into the working directory; -v5 gives a .z5 story.
        result = subprocess.run(
            [inform6, "-v5", "-k", str(source.resolve()), "game.z5"],
            cwd=work_dir, capture_output=True, text=True, check=False,
        )
        if result.returncode != 0 or "Error" in result.stdout:
            raise RuntimeError(f"inform6 failed on {source}:\n{result.stdout}\n{result.stderr}")
        debug_info = parse_debug_file((Path(work_dir) / "gameinfo.dbg").read_text(encoding="latin-1"))
        shutil.copyfile(Path(work_dir) / "game.z5", story_path)
    metadata = build_metadata(story_path, debug_info)
    metadata_path = story_path.with_suffix(".json")
    metadata_path.write_text(json.dumps(metadata, indent=2, sort_keys=True) + "\n")
    logger.info("Built %s (%d bytes) and %s", story_path, story_path.stat().st_size, metadata_path)
    return story_path, metadata


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="Inform 6 source file")
    parser.add_argument("--out-dir", type=Path, default=GAMES_DIR, help="where the .z5 and .json go")
    parser.add_argument("--inform6", default="inform6", help="compiler executable")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    story_path, metadata = compile_game(args.source, args.out_dir, args.inform6)
    print(f"{story_path}: max_score={metadata['max_score']} "
          f"objects={metadata['object_count']} md5={metadata['md5']}")


if __name__ == "__main__":
    main()
