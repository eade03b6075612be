"""PriorZero: an LLM prior guiding MCTS over a learned world model, for Jericho text adventures.

Install with ``make setup`` (see README): the dependency pins of DI-engine and torch conflict, so the installer
uses ``--no-deps`` with a pinned lock file instead of letting pip resolve ``install_requires``.
"""
import sys
import warnings

from setuptools import find_namespace_packages, setup

if sys.version_info[:2] != (3, 11):
    warnings.warn(
        f"PriorZero targets CPython 3.11 (lightzero 0.2.0 ships cp311 wheels at most); found {sys.version.split()[0]}."
    )

# Only our own sub-packages are installed: `zoo` and `zoo.jericho` belong to LightZero, and installing their
# __init__ files would overwrite LightZero's. `zoo.jericho.priorzero` lands inside LightZero's `zoo.jericho`.
packages = find_namespace_packages(include=["lzero_ext", "lzero_ext.*", "zoo.jericho.priorzero", "zoo.jericho.priorzero.*"])

setup(
    name="priorzero",
    version="0.1.0",
    description="LLM-prior MCTS over a learned UniZero world model for Jericho text games, on LightZero/DI-engine",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=packages,
    package_data={
        "zoo.jericho.priorzero.games": ["*.inf", "*.z5", "*.json", "*.sh"],
        "lzero_ext.llm": ["*.txt"],
    },
    install_requires=[
        "lightzero==0.2.0",
        "DI-engine==0.5.3",
        "torch>=2.1",
        "transformers>=4.45",
        "jericho==3.3.1",
        "easydict>=1.9",
        "tensorboardX>=2.2",
        "tqdm",
        "peft",
    ],
    extras_require={"vllm": ["vllm"], "ray": ["ray==2.60.0"]},
)
