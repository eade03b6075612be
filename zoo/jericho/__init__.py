# `zoo` is also LightZero's top-level package. Extending the path lets `zoo.*` resolve to both this
# repository's modules and LightZero's installed ones (e.g. `zoo.jericho.envs`) when run from the repo root.
__path__ = __import__("pkgutil").extend_path(__path__, __name__)
