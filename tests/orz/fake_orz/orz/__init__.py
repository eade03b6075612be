"""Test-only stand-in for Open-Reasoner-Zero: just the surface PriorZero's ORZ hook touches (see ppo/trainer.py)."""
