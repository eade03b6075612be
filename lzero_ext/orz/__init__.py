"""Optional Open-Reasoner-Zero (ORZ) path for LLM updates; ORZ itself is imported only when that path is chosen."""
from lzero_ext.orz.adapter import OrzExtras, OrzSample, segments_to_orz_samples
from lzero_ext.orz.hook import (
    ORZ_LLM_CONFIG, BuiltinLLMUpdate, LLMUpdate, OrzTrainerHook, OrzUnavailableError, build_llm_update,
    probe_orz_stack,
)

__all__ = ["OrzExtras", "OrzSample", "segments_to_orz_samples", "ORZ_LLM_CONFIG", "BuiltinLLMUpdate", "LLMUpdate",
           "OrzTrainerHook", "OrzUnavailableError", "build_llm_update", "probe_orz_stack"]
