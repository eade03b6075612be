"""The main job: ``python -m zoo.jericho.priorzero.priorzero_orz_entry`` (``DEBUG_MODE=True`` for a quick run).

Runs the hybrid loop of the design document on a Jericho game: evaluate every ``eval_freq`` iterations; collect
with LLM-prior MCTS; train the world model every ``wm_train_freq`` iterations and the LLM (SFT + RL) every
``llm_train_freq``; sync the new weights to the prior's backend; log to TensorBoard; checkpoint. Defaults: our own
game and the tiny LLM the project builds, so it runs offline out of the box.

Multi-GPU: ``torchrun --nproc_per_node=N -m zoo.jericho.priorzero.priorzero_orz_entry ...`` runs N data-parallel
ranks (:mod:`lzero_ext.distributed`): rank r seeds its envs with ``seed + r`` and uses ``cuda:LOCAL_RANK``.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from lzero_ext.distributed import DistContext
from lzero_ext.entry.hybrid_loop import HybridTrainer
from lzero_ext.llm.scoring import SCORE_RULES
from lzero_ext.utils.config import deep_merge
from zoo.jericho.priorzero.priorzero_config import default_exp_name, get_priorzero_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-id", default=None, help="Jericho story file (path) or 'default' for our own game")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-iter", type=int, default=None, help="iterations to run (overrides the config)")
    parser.add_argument("--llm-path", default=None, help="local Hugging Face causal-LM directory (default: tiny LLM)")
    parser.add_argument("--device", default=None, help="'cpu', 'cuda[:i]' or 'auto' for world model and LLM")
    parser.add_argument("--score-rule", choices=SCORE_RULES, default=None,
                        help="LLM candidate score (policy.llm.prompt.score_rule): 'sum' of token log-probs, 'mean' "
                             "per token, or 'pmi' (minus the log-prob after a content-free prompt); default: the "
                             "config's")
    parser.add_argument("--exp-name", default=None, help="experiment directory (logs, checkpoints)")
    parser.add_argument("--resume", nargs="?", const="auto", default=None,
                        help="continue from a checkpoint: a file, or 'auto' (newest complete one in the exp dir)")
    parser.add_argument("--debug", action="store_true", help="quick-test config (same as DEBUG_MODE=True)")
    parser.add_argument("--config-override", default=None,
                        help="JSON dict merged (strictly) into main_config, e.g. '{\"policy\": {\"mcts\": "
                             "{\"num_simulations\": 50}}}'")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    # DI-engine installs its own root handler at import; set the level on the root logger itself.
    logging.getLogger().setLevel(os.environ.get("PRIORZERO_LOG_LEVEL", "WARNING"))
    debug = args.debug or os.environ.get("DEBUG_MODE", "").lower() in ("1", "true")
    overrides = json.loads(args.config_override) if args.config_override else {}
    if args.max_iter is not None:
        overrides.setdefault("train", {})["max_iter"] = args.max_iter
    if args.score_rule is not None:
        overrides = deep_merge(overrides, dict(policy=dict(llm=dict(prompt=dict(score_rule=args.score_rule)))))
    dist = DistContext.from_env()  # torchrun's env vars; a single process without them
    device = args.device
    if dist.enabled and device in (None, "auto"):
        device = dist.device
    exp_name = args.exp_name
    if exp_name is None and dist.enabled:  # the default name holds the seed: every rank uses rank 0's
        exp_name = default_exp_name(args.env_id, args.seed, debug)
    try:
        cfg, create_cfg = get_priorzero_config(env_id=args.env_id, seed=args.seed + dist.rank, exp_name=exp_name,
                                               llm_path=args.llm_path, device=device, debug=debug,
                                               overrides=overrides)
        trainer = HybridTrainer(cfg, create_cfg, resume=args.resume, dist=dist)
        if dist.is_main:
            print(trainer.summary(), flush=True)
        try:
            result = trainer.run()
        finally:
            trainer.close()
    finally:
        dist.close()
    if dist.is_main:
        print(json.dumps({k: round(v, 4) for k, v in result.items()}, indent=1), flush=True)
    return result


if __name__ == "__main__":
    sys.exit(0 if main() is not None else 1)
