"""Optional Open-Reasoner-Zero (ORZ) path for LLM updates; ORZ itself is imported only when that path is chosen.

Import the submodules (this package imports nothing, so asking ``probe`` is cheap): ``adapter`` (our LLM samples ->
ORZ's prompt/response/reward contract), ``probe`` (is ORZ's stack usable here: ``probe_orz_stack``,
``OrzUnavailableError``), ``runtime`` (ORZ's exp config checks, the trainer fed with our samples,
``build_orz_runtime``), ``hook`` (``OrzTrainerHook``, ``build_llm_update``, ``ORZ_LLM_CONFIG``). The update
interface and the built-in update are in ``lzero_ext.llm.update``.
"""
