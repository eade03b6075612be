"""Crash-safe checkpoints: atomic writes, the last N kept, corrupt files detected and skipped.

A checkpoint is one file ``ckpt_<iteration:08d>.pt`` written by ``torch.save`` to a temporary file in the same
folder, flushed and fsynced, then renamed over its final name, so a crash mid-write never leaves a partial file
under a checkpoint name. Each file stores a format version and a config fingerprint; loading one from an
incompatible config raises :class:`IncompatibleCheckpointError` instead of loading mismatched weights.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt_(\d{8})\.pt$")


class CorruptCheckpointError(RuntimeError):
    """The file exists but cannot be read as a PriorZero checkpoint (truncated, foreign or damaged)."""


class IncompatibleCheckpointError(ValueError):
    """The checkpoint was written by a run whose architecture config differs from the current one."""


def config_fingerprint(arch_config: Any) -> str:
    """Stable hash of the parts of a config that decide tensor shapes (model sizes, action space, LLM path)."""
    text = json.dumps(arch_config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class CheckpointManager:
    """Writes, lists, prunes and loads checkpoints of one run directory."""

    def __init__(self, directory: str | os.PathLike, keep_last: int = 3) -> None:
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last}")
        self.directory = Path(directory)
        self.keep_last = keep_last

    def list(self) -> list[Path]:
        """Checkpoint files, oldest first."""
        if not self.directory.is_dir():
            return []
        found = [p for p in self.directory.iterdir() if _NAME.match(p.name)]
        return sorted(found, key=lambda p: int(_NAME.match(p.name).group(1)))

    def save(self, state: dict[str, Any], iteration: int, fingerprint: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self.directory / f"ckpt_{iteration:08d}.pt"
        payload = {"format_version": FORMAT_VERSION, "fingerprint": fingerprint, "iteration": iteration, "state": state}
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp_ckpt_", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(payload, handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, final)
            self._fsync_dir()
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        self._prune()
        logger.info("checkpoint written: %s", final)
        return final

    def load(self, path: str | os.PathLike, fingerprint: str | None = None) -> dict[str, Any]:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as err:  # noqa: BLE001 - torch raises many types for damaged files
            raise CorruptCheckpointError(f"cannot read checkpoint {path}: {type(err).__name__}: {err}") from err
        if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION or "state" not in payload:
            raise CorruptCheckpointError(f"{path} is not a PriorZero checkpoint (format {FORMAT_VERSION})")
        if fingerprint is not None and payload["fingerprint"] != fingerprint:
            raise IncompatibleCheckpointError(
                f"checkpoint {path} was written with a different model/env config "
                f"(fingerprint {payload['fingerprint']} != {fingerprint}); resume with the config it was trained with"
            )
        return payload["state"]

    def load_latest(self, fingerprint: str | None = None) -> tuple[dict[str, Any], Path] | None:
        """Load the newest readable checkpoint; corrupt ones are reported and skipped for the previous one."""
        for path in reversed(self.list()):
            try:
                return self.load(path, fingerprint), path
            except CorruptCheckpointError as err:
                logger.warning("skipping corrupt checkpoint: %s", err)
        return None

    def _prune(self) -> None:
        for old in self.list()[: -self.keep_last]:
            old.unlink(missing_ok=True)

    def _fsync_dir(self) -> None:
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
