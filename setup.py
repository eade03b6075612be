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
        "zoo.jericho.priorzero.priors": ["*/training_record.json", "*/adapter/*.json", "*/adapter/*.safetensors"],
        "lzero_ext.llm": ["*.txt"],
    },
    # The shipped pretrained priors (priors/<name>/) become model presets wherever a model name is resolved, not only
    # where priorzero_config happens to be imported.
    entry_points={"lzero_ext.model_presets": ["jericho_priors = zoo.jericho.priorzero.priors"]},
    # Lower bounds are what the code calls (requirements/lock.txt pins the tested closure; pytest and its plugins are
    # test tools, requirements/dev.txt).
    install_requires=[
        "lightzero==0.2.0",
        "DI-engine==0.5.3",
        # torch.OutOfMemoryError (2.5); F.rms_norm (2.4); torch.nn.attention.sdpa_kernel, torch.compiler.is_compiling
        # and torch.compile(dynamic=True) of the lean forward's layers (2.3)
        "torch>=2.5",
        # from_pretrained(dtype=...) (4.56; torch_dtype before it, which newer releases drop); config.layer_types for
        # sliding-window masks (4.53)
        "transformers>=4.56",
        "tokenizers>=0.21",  # the tiny default LM's tokenizer is trained with it (transformers 4.56 needs >= 0.21)
        "safetensors>=0.4.3",  # ORZ weight exports are read with safetensors.torch.load_file
        "peft>=0.18",  # LoRA; the first peft that works with transformers 5
        "numpy>=1.24",
        "jericho==3.3.1",
        "gym>=0.25",  # the env's spaces (DI-engine 0.5.3's gym API)
        "easydict>=1.9",
        "tensorboardX>=2.5",
        "tqdm>=4.62",
    ],
    extras_require={"vllm": ["vllm"], "ray": ["ray==2.60.0"]},
)
