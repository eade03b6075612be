"""PriorZero: an LLM prior guiding MCTS over a learned world model, as a library on top of LightZero.

Importing this package registers nothing and imports nothing heavy; components register themselves in
DI-engine's registries when their modules are imported (see ``docs/ARCHITECTURE.md``).
"""
__version__ = "0.1.0"
