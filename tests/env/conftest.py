"""Fixtures for the env tests: a tiny word-level tokenizer and an env factory that closes what it opens."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

SENTENCES = [
    "You are standing in an open field west of a white house.",
    "The lighthouse rises above you, its lamp dark. Take the key and open the door.",
    "Cold waves drag at the pebbles. Valid actions: north, east, take shovel.",
]


@pytest.fixture(scope="session")
def tiny_tokenizer_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A word-level HF tokenizer trained on three sentences: enough to test ids, padding and truncation."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["[PAD]", "[UNK]"]))
    directory = tmp_path_factory.mktemp("tiny_tokenizer")
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(
        directory
    )
    return str(directory)


@pytest.fixture
def make_env(tiny_tokenizer_path: str) -> Iterator[Callable[..., object]]:
    """``make_env(**cfg)`` builds a PriorZeroJerichoEnv (rules extractor, tiny tokenizer) and closes it after."""
    from zoo.jericho.priorzero.envs.jericho_env import PriorZeroJerichoEnv

    opened: list[PriorZeroJerichoEnv] = []

    def _make(**cfg: object) -> PriorZeroJerichoEnv:
        full_cfg = {"tokenizer_path": tiny_tokenizer_path, "object_extractor": "rules", **cfg}
        if isinstance(full_cfg.get("game_path"), Path):
            full_cfg["game_path"] = str(full_cfg["game_path"])
        env = PriorZeroJerichoEnv(full_cfg)
        opened.append(env)
        return env

    yield _make
    for env in opened:
        env.close()
