"""Stand-in for ``orz.ppo.actors`` (test-only): actor classes are only passed through to ``build_models``."""


class PolicyRayActor:
    pass


class CriticRayActor:
    pass


class RefRayActor:
    pass
