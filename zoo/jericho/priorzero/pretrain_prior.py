"""Pretrain the LLM prior on other games' walkthroughs with the listwise loss the prior is used with.

Why listwise: the prior is a softmax over a state's valid actions, and search only needs that ranking. Plain
next-token SFT on walkthrough commands did not move that ranking on unseen games (a first pilot); here each example
is a walkthrough state (prompt, the env's valid actions, gold = those reaching the walkthrough's world state) and
the loss is the cross-entropy of the prior's candidate softmax toward the uniform distribution over the gold
candidates: :class:`LLMTrainer` with ``sft_weight=1``, ``rl_weight=0``, ``kl_coef=0``, LoRA, batches of states.

Only ``game_splits.TRAIN_GAMES`` may be used (an eval game is refused). ``heldout_games`` of them are kept out of
training and evaluated every ``eval_every`` steps; the adapter of the best evaluation is the one saved (model
selection on training-split games only; the real test is ``bench/prior_quality.py`` on the eval split).
Writes ``<out>/adapter`` (peft ``save_pretrained``, float16) and ``<out>/training_record.json``::

    python -m zoo.jericho.priorzero.pretrain_prior --llm-path smollm2-135m --states-dir DIR --out OUT
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import platform
import random
import sys
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from lzero_ext.llm.prompt import PromptTooLongError
from lzero_ext.llm.types import LLMSample
from lzero_ext.utils.config import merge_strict
from zoo.jericho.priorzero.game_splits import TRAIN_GAMES, check_train_games
from zoo.jericho.priorzero.walkthrough_states import (
    WalkthroughState, load_cached_prefix, load_walkthrough_states,
)

logger = logging.getLogger(__name__)

# The defaults are the recipe of the shipped prior smollm2-135m-jericho (docs/results/prior_pretraining.md).
config = dict(
    # (str|None) base model: a preset name (e.g. 'smollm2-135m'), an HF directory, or None for the tiny default LM.
    llm_path=None,
    # (list[str]) games whose walkthrough states are used; each must be in game_splits.TRAIN_GAMES.
    games=list(TRAIN_GAMES),
    # (int|None) walkthrough states per game (from the start of the walkthrough); None: all. Without build_missing a
    # game cached with fewer states contributes those.
    max_states_per_game=60,
    # (str|None) walkthrough-state cache folder; None: $PRIORZERO_CACHE/walkthrough_states.
    states_dir=None,
    # (bool) build the states of a game that is not cached (about a second per state); False skips the game.
    build_missing=False,
    # (int) games (of those with states) kept out of training: the held-out set that picks the saved adapter.
    heldout_games=3,
    # (int|None) at most this many states of each held-out game, evenly spaced along its walkthrough; None: all. Why:
    # without a cap the game with the most states is the held-out score (round 3: spellbrkr had 100 of 141 states).
    heldout_states_per_game=None,
    # (int) evaluate on the held-out games every this many steps (0: only after the last step); the adapter saved is
    # the best evaluated one, the base model (step 0, a zero adapter) included.
    eval_every=25,
    # (int) optimiser steps.
    steps=200,
    # (float|None) stop training after this many seconds (the adapter and record are still written); None: no limit.
    max_seconds=None,
    # (int) states per optimiser step.
    batch_states=16,
    # (int) states per forward/backward pass.
    micro_batch_size=8,
    # (float) peak learning rate (LoRA).
    lr=1e-3,
    # (int) linear warm-up steps before the cosine decay.
    warmup_steps=20,
    # (float) decay of an exponential moving average of the LoRA weights, updated every step (0: no average). With it
    # every evaluation, and so the adapter saved, uses the averaged weights: less of one batch's noise in the pick.
    weight_average=0.0,
    # (int) LoRA rank (rank 8 on every projection of a 135M model: a 5 MB float16 adapter).
    lora_r=8,
    # (list[str]) module names that get LoRA.
    lora_target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    # (str) dtype the adapter's weights are saved in ('float16' halves the file; 'float32' keeps them as trained).
    adapter_dtype="float16",
    # (int) prompt token budget and past turns shown (the full preset's prompt settings).
    max_prompt_tokens=2048,
    # (int) past turns in the prompt.
    history_turns=4,
    # (str) 'auto' (CUDA if available), 'cpu' or 'cuda[:i]'.
    device="auto",
    # (int) seed of the shuffles (data order, held-out games).
    seed=0,
    # (str) output folder for the adapter and the training record.
    out="data_priorzero/pretrain_prior",
)


def to_sample(state: WalkthroughState) -> LLMSample:
    """A walkthrough state as a trainer sample: target = uniform over the gold candidates, no RL signal."""
    target = np.zeros(len(state.candidates), dtype=np.float32)
    target[list(state.gold)] = 1.0 / len(state.gold)
    return LLMSample(history=list(state.history), observation=state.observation, candidates=list(state.candidates),
                     visit_distribution=target, action_index=state.gold[0], advantage=0.0, old_prior_logprob=0.0)


def load_states(cfg) -> dict[str, list[WalkthroughState]]:
    """States per game (games with no usable state dropped); refuses eval games before reading anything."""
    names = check_train_games(cfg.games)
    loader = load_walkthrough_states if cfg.build_missing else load_cached_prefix
    states = {}
    for name in names:
        found = loader(name, cfg.max_states_per_game, cfg.states_dir)
        if found:
            states[name] = found
        else:
            logger.warning("no cached walkthrough states for %s: skipped", name)
    return states


def spread(states: list[WalkthroughState], count: int | None) -> list[WalkthroughState]:
    """At most ``count`` of ``states``, evenly spaced (first and last included); all of them for ``None``."""
    if count is None or len(states) <= count:
        return list(states)
    return [states[i] for i in np.linspace(0, len(states) - 1, count).round().astype(int)]


def data_hash(states: list[WalkthroughState]) -> str:
    payload = json.dumps([[s.game, s.step, s.candidates, s.gold] for s in states])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def evaluate(trainer, states: list[WalkthroughState]) -> dict[str, float]:
    """Mean listwise loss, top-1 (ties split) and gold mass of the trainer's current model on ``states``."""
    import torch

    from lzero_ext.llm.scoring import scoring_autocast

    losses, top1, mass = [], [], []
    trainer.model.eval()
    with torch.no_grad(), scoring_autocast(trainer.model):  # the trainer's own bf16 rule
        for start in range(0, len(states), trainer.cfg.micro_batch_size):
            chunk = states[start:start + trainer.cfg.micro_batch_size]
            prompts = trainer.prompt_builder.build_batch([(s.history, s.observation, s.candidates) for s in chunk])
            logqs = trainer._candidate_logprobs(trainer.model, prompts, [list(s.candidates) for s in chunk])  # noqa: SLF001
            for state, logq in zip(chunk, logqs):
                logq = logq.float().cpu().numpy()
                gold = list(state.gold)
                losses.append(-float(np.mean(logq[gold])))
                best = np.flatnonzero(logq >= logq.max() - 1e-6)
                top1.append(len(set(best) & set(gold)) / len(best))
                mass.append(float(np.exp(logq[gold]).sum()))
    return {"loss": float(np.mean(losses)), "top1": float(np.mean(top1)), "gold_mass": float(np.mean(mass)),
            "states": len(states)}


def _loss_curve(losses: list[float]) -> dict:
    """Mean training loss of the first and last tenth of the steps and of every tenth ({} when no step ran)."""
    if not losses:
        return {}
    tenth = max(1, len(losses) // 10)
    return {"first_10pct": float(np.mean(losses[:tenth])), "last_10pct": float(np.mean(losses[-tenth:])),
            "every_10pct": [float(np.mean(losses[i:i + tenth])) for i in range(0, len(losses), tenth)]}


def _fitting(trainer, states: list[WalkthroughState]) -> list[WalkthroughState]:
    """The states whose prompt fits the budget even without history (the prior skips the others the same way)."""
    kept = []
    for state in states:
        try:
            trainer.prompt_builder.build(state.history, state.observation, state.candidates)
        except PromptTooLongError:
            continue
        kept.append(state)
    return kept


class _AdapterSelection:
    """Keeps the LoRA weights of the best held-out evaluation (top-1, then gold mass); step 0 is the base model.

    Why: with a few thousand states from a few dozen games the adapter starts fitting its games' walkthroughs long
    before the loss stops falling; the held-out games (training split, never the eval split) say when.
    """

    def __init__(self, model, base_result: dict[str, float]) -> None:
        self.model = model
        self.curve: list[dict] = [{"step": 0, **base_result}]
        self.best_step, self.best = 0, base_result
        self._weights = self._snapshot()

    def _snapshot(self) -> dict:
        from peft import get_peft_model_state_dict

        return {k: v.detach().to("cpu", copy=True) for k, v in get_peft_model_state_dict(self.model).items()}

    def offer(self, step: int, result: dict[str, float]) -> None:
        self.curve.append({"step": step, **result})
        if (result["top1"], result["gold_mass"]) > (self.best["top1"], self.best["gold_mass"]):
            self.best_step, self.best, self._weights = step, result, self._snapshot()

    def restore_best(self) -> None:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(self.model, self._weights)


class _WeightAverage:
    """Exponential moving average of the trainable (LoRA) weights, with TensorFlow's warm-up of the decay
    (``min(decay, (1 + t) / (10 + t))``) so early averages are not dominated by the zero-initialised adapter.

    Why: the held-out score of the raw weights swings by ~0.15 between evaluations 25 steps apart (round 3); an
    average over the last few dozen steps is the usual cure for that optimisation noise. Averaging a LoRA's two
    factors separately approximates averaging their product while the weights move little between steps.
    """

    def __init__(self, model, decay: float) -> None:
        import torch

        self.params = [p for p in model.parameters() if p.requires_grad]
        with torch.no_grad():
            self.average = [p.detach().clone() for p in self.params]
        self.decay = decay

    def update(self, step: int) -> None:
        import torch

        weight = 1.0 - min(self.decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for param, average in zip(self.params, self.average):
                average.lerp_(param.detach(), weight)

    def swap(self) -> None:
        """Exchange the model's weights and the averaged ones (a second swap puts both back)."""
        import torch

        with torch.no_grad():
            for param, average in zip(self.params, self.average):
                trained = param.detach().clone()
                param.copy_(average)
                average.copy_(trained)

    @contextlib.contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged weights in the model inside the block, the trained ones back after it."""
        self.swap()
        try:
            yield
        finally:
            self.swap()


def _finish_adapter(adapter_dir: Path, dtype: str, base: str | None) -> None:
    """Rewrite the saved adapter's floating-point tensors in ``dtype`` (float16 halves a float32 adapter's size) and
    name its base as the user did (a preset name, not the cache path it resolved to on this machine)."""
    import torch
    from safetensors.torch import load_file, save_file

    target = getattr(torch, dtype)
    path = adapter_dir / "adapter_model.safetensors"
    tensors = load_file(path)
    save_file({k: v.to(target) if v.is_floating_point() else v for k, v in tensors.items()}, path,
              metadata={"format": "pt"})
    config_path = adapter_dir / "adapter_config.json"
    adapter_config = json.loads(config_path.read_text())
    adapter_config["base_model_name_or_path"] = base
    config_path.write_text(json.dumps(adapter_config, indent=2) + "\n")


def _versions() -> dict[str, str]:
    import peft
    import torch
    import transformers

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__}


def _machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()} {platform.machine()}, {gpu}"


def pretrain(user_cfg: dict | None = None, states_by_game: dict[str, list[WalkthroughState]] | None = None) -> dict:
    """Run the pretraining described by ``config`` updated with ``user_cfg``; returns the training record.

    ``states_by_game`` replaces loading from the cache (tests); its games are checked against the split too.
    """
    from lzero_ext.llm.trainer import LLMTrainer

    cfg = merge_strict(config, user_cfg or {}, where="pretrain_prior")
    if not 0.0 <= cfg.weight_average < 1.0:
        raise ValueError(f"weight_average must be a decay in [0, 1) (0: no average), got {cfg.weight_average}")
    if cfg.heldout_states_per_game is not None and cfg.heldout_states_per_game < 1:
        raise ValueError(f"heldout_states_per_game must be at least 1 (or None: all), got {cfg.heldout_states_per_game}")
    start_time = time.time()
    if states_by_game is not None:
        check_train_games(list(states_by_game))
    by_game = load_states(cfg) if states_by_game is None else states_by_game
    if len(by_game) <= cfg.heldout_games:
        raise ValueError(f"{len(by_game)} games have states; need more than heldout_games={cfg.heldout_games}")
    rng = random.Random(cfg.seed)
    heldout_names = sorted(rng.sample(sorted(by_game), cfg.heldout_games))
    train = [s for name in sorted(by_game) if name not in heldout_names for s in by_game[name]]
    heldout = [s for name in heldout_names for s in spread(by_game[name], cfg.heldout_states_per_game)]
    train_total, heldout_total = len(train), len(heldout)
    trainer = LLMTrainer(dict(
        model_path=cfg.llm_path, device=cfg.device, lr=cfg.lr, use_lora=True, lora_r=cfg.lora_r,
        lora_alpha=2 * cfg.lora_r, lora_target_modules=list(cfg.lora_target_modules), sft_weight=1.0, rl_weight=0.0,
        kl_coef=0.0, advantage_normalization="none", lr_schedule="cosine", warmup_steps=cfg.warmup_steps,
        total_steps=cfg.steps, micro_batch_size=cfg.micro_batch_size, max_prompt_tokens=cfg.max_prompt_tokens,
        history_turns=cfg.history_turns,
    ))
    train, heldout = _fitting(trainer, train), _fitting(trainer, heldout)
    skipped = {"train": train_total - len(train), "heldout": heldout_total - len(heldout)}
    before = evaluate(trainer, heldout) if heldout else {}
    selection = _AdapterSelection(trainer.model, before)
    average = _WeightAverage(trainer.model, cfg.weight_average) if cfg.weight_average else None
    evaluated = average.applied if average else contextlib.nullcontext
    order: list[WalkthroughState] = []
    losses = []
    for step in range(1, cfg.steps + 1):
        if cfg.max_seconds is not None and time.time() - start_time > cfg.max_seconds:
            print(f"stopping before step {step}: max_seconds={cfg.max_seconds} reached", flush=True)
            break
        while len(order) < cfg.batch_states:  # epochs of shuffled training states
            order += rng.sample(train, len(train))
        batch, order = order[:cfg.batch_states], order[cfg.batch_states:]
        metrics = trainer.train_step([to_sample(s) for s in batch])
        losses.append(metrics["llm/sft_loss"])
        if average:
            average.update(step)
        if step % 20 == 0 or step == 1:
            print(f"step {step}: listwise loss {losses[-1]:.3f} (mean of last 20: {np.mean(losses[-20:]):.3f})",
                  flush=True)
        if heldout and cfg.eval_every and step % cfg.eval_every == 0:
            with evaluated():
                result = evaluate(trainer, heldout)
                selection.offer(step, result)
            print(f"step {step}: held-out top-1 {result['top1']:.3f}, gold mass {result['gold_mass']:.3f}", flush=True)
    if heldout:
        if selection.curve[-1]["step"] != len(losses):  # the last step, unless just evaluated
            with evaluated():
                selection.offer(len(losses), evaluate(trainer, heldout))
        selection.restore_best()
    elif average:
        average.swap()  # no held-out games: the adapter saved is the last step's average
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    trainer.model.save_pretrained(out / "adapter")
    _finish_adapter(out / "adapter", cfg.adapter_dtype, cfg.llm_path)
    steps_done = len(losses)
    record = {
        "train_games": sorted(set(by_game) - set(heldout_names)), "heldout_games": heldout_names,
        "train_states": len(train), "heldout_states": len(heldout),
        "states_per_game": {name: len(states) for name, states in sorted(by_game.items())},
        "data_hash": data_hash(train + heldout),
        "skipped_over_prompt_budget": skipped,
        "command": " ".join(sys.argv), "config": dict(cfg), "steps": steps_done,
        "loss_curve": _loss_curve(losses),
        "heldout_before": before, "heldout_curve": selection.curve, "heldout_after": selection.best,
        "saved_step": selection.best_step if heldout else steps_done,
        "seconds": round(time.time() - start_time, 1),
        "machine": _machine(), "versions": _versions(),
    }
    (out / "training_record.json").write_text(json.dumps(record, indent=1))
    print(json.dumps({k: record[k] for k in ("loss_curve", "heldout_before", "heldout_after", "saved_step", "seconds")}),
          flush=True)
    return record


_OPTIONAL_TYPES = {"max_seconds": float, "heldout_states_per_game": int}  # keys whose default is None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for key, default in config.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(default, list):
            parser.add_argument(flag, nargs="+", default=None)
        elif isinstance(default, bool):
            parser.add_argument(flag, type=lambda v: v.lower() in ("1", "true", "yes"), default=None)
        else:
            parser.add_argument(flag, type=_OPTIONAL_TYPES.get(key, type(default) if default is not None else str),
                                default=None)
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    pretrain({key: value for key, value in args.items() if value is not None})


if __name__ == "__main__":
    main()
