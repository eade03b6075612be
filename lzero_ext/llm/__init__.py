"""The LLM side of PriorZero: prompts, shared-prefix action scoring, priors (transformers / vLLM), the SFT + RL
trainer and the tiny default model. Knows nothing about Jericho; imports nothing heavy at package level.

Public API (import from the submodules):
    types:         Turn, PriorRequest, PriorResult, LLMSample
    prompt:        PromptBuilder, PromptTooLongError
    scoring:       score_candidates, naive_score_candidates, score_candidate_ids, naive_score_candidate_ids
    prior:         LLMPrior, TransformersPrior, VLLMPrior, build_prior
    trainer:       LLMTrainer
    default_model: ensure_default_model
"""
