"""Test-only stand-in for the unrelated PyPI package named ``orz`` (a Result/Either library): no ``orz.ppo``."""


class Ok:
    def __init__(self, value):
        self.value = value
