"""Pretrained prior adapters shipped with the repo, registered as model presets by folder name.

Each ``priors/<name>/`` holds ``adapter/`` (a peft LoRA adapter, from ``pretrain_prior.py``) and
``training_record.json`` (whose ``config.llm_path`` names the base preset, e.g. ``smollm2-135m``). Importing this
package registers ``<name>`` as a :class:`LoRAPreset`, so ``--llm-path <name>`` (e.g. ``smollm2-135m-jericho``)
loads the base model with the adapter merged (once, into the cache). A folder whose base preset is unknown is skipped
with a warning rather than breaking every import of the config.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from lzero_ext.llm.presets import LoRAPreset, is_preset_name, register_model_preset

logger = logging.getLogger(__name__)

PRIORS_DIR = Path(__file__).resolve().parent


def register_priors(directory: Path = PRIORS_DIR) -> list[str]:
    """Register every adapter folder under ``directory``; return the registered names."""
    names = []
    for folder in sorted(p for p in directory.iterdir() if (p / "adapter" / "adapter_config.json").is_file()):
        record = json.loads((folder / "training_record.json").read_text())
        base = record["config"]["llm_path"]
        if not is_preset_name(base):
            logger.warning("prior %s: its base %r is not a model preset; not registered", folder.name, base)
            continue
        register_model_preset(LoRAPreset(
            name=folder.name, base=base, adapter_dir=folder / "adapter",
            description=f"{base} + LoRA pretrained on the walkthroughs of {len(record['train_games'])} train games",
        ), replace=True)
        names.append(folder.name)
    return names


REGISTERED = register_priors()
