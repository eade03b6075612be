"""The project's own default LLM: a tiny random-initialised Qwen2 with a byte-level BPE tokenizer.

No weights can be downloaded where PriorZero is developed and tested, so the default model is *built*: a tokenizer
trained on ``tiny_corpus.txt`` (generic interactive-fiction text the project owns) and a Qwen2 causal LM of a few
million parameters initialised from a seed. It is saved with ``save_pretrained`` and loads through
``AutoTokenizer`` / ``AutoModelForCausalLM`` like any real checkpoint, so switching the config's model path to a real
local model (e.g. Qwen2.5-0.5B-Instruct) needs no code change.

The build is deterministic for a seed and cached under a directory named by a hash of everything that affects the
result; it is written into a temporary directory and renamed into place, so concurrent builders are safe.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

CORPUS_PATH = Path(__file__).with_name("tiny_corpus.txt")
BUILD_FORMAT_VERSION = 1
COMPLETE_MARKER = "priorzero_build.json"

PAD_TOKEN = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
SPECIAL_TOKENS = (PAD_TOKEN, IM_START, IM_END)

# ChatML, the format of Qwen2 instruct models, so prompts built for the tiny model look like those for real ones.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinyModelSpec:
    """Everything that determines the built files (part of the cache key)."""

    vocab_size: int = 2048
    hidden_size: int = 256
    intermediate_size: int = 688
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    initializer_range: float = 0.02


def default_cache_root() -> Path:
    """``$PRIORZERO_CACHE`` if set, else ``~/.cache/priorzero``."""
    env_value = os.environ.get("PRIORZERO_CACHE")
    return Path(env_value) if env_value else Path.home() / ".cache" / "priorzero"


def _build_key(spec: TinyModelSpec, seed: int) -> str:
    payload = json.dumps(
        {
            "format": BUILD_FORMAT_VERSION,
            "spec": asdict(spec),
            "seed": seed,
            "corpus_sha256": hashlib.sha256(CORPUS_PATH.read_bytes()).hexdigest(),
            "chat_template": CHAT_TEMPLATE,
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _train_tokenizer(vocab_size: int):
    """Byte-level BPE trained on the project corpus, wrapped as a ``PreTrainedTokenizerFast``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,  # the corpus is small: let rare words merge too, to reach the vocabulary size
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    lines = CORPUS_PATH.read_text(encoding="utf-8").splitlines(keepends=True)
    bpe.train_from_iterator(lines, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, eos_token=IM_END, pad_token=PAD_TOKEN, unk_token=None, model_max_length=4096
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def _build_model(tokenizer, spec: TinyModelSpec, seed: int):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_key_value_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_theta=spec.rope_theta,
        initializer_range=spec.initializer_range,
        tie_word_embeddings=True,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    return model.eval()


def _build_into(directory: Path, spec: TinyModelSpec, seed: int, key: str) -> None:
    tokenizer = _train_tokenizer(spec.vocab_size)
    model = _build_model(tokenizer, spec, seed)
    tokenizer.save_pretrained(directory)
    model.save_pretrained(directory)
    marker = {"build_key": key, "seed": seed, "spec": asdict(spec), "num_parameters": model.num_parameters()}
    (directory / COMPLETE_MARKER).write_text(json.dumps(marker, indent=2))


def ensure_default_model(
    cache_dir: str | os.PathLike | None = None, seed: int = 0, spec: TinyModelSpec | None = None
) -> Path:
    """Return the directory of the tiny default model, building it first if it is not cached.

    Args:
        cache_dir: parent folder of the cached build; default ``$PRIORZERO_CACHE`` or ``~/.cache/priorzero``.
        seed: initialisation seed of the model weights (the tokenizer does not depend on it).
        spec: model and tokenizer sizes; the default gives about 3.5M parameters and a 2k vocabulary.
    """
    spec = spec or TinyModelSpec()
    root = Path(cache_dir) if cache_dir is not None else default_cache_root()
    key = _build_key(spec, seed)
    final_dir = root / f"tiny-qwen2-{key}"
    if (final_dir / COMPLETE_MARKER).is_file():
        return final_dir
    root.mkdir(parents=True, exist_ok=True)
    temp_dir = Path(tempfile.mkdtemp(prefix=f".tiny-qwen2-{key}-", dir=root))
    try:
        _build_into(temp_dir, spec, seed, key)
        try:
            os.rename(temp_dir, final_dir)
            logger.info("Built the tiny default model in %s", final_dir)
        except OSError:
            # Another process renamed its finished build first; theirs is identical, keep it.
            if not (final_dir / COMPLETE_MARKER).is_file():
                raise
    finally:
        if temp_dir.exists():
            shutil.rmtree(temp_dir, ignore_errors=True)
    return final_dir
