# PriorZero: the two commands a new user types are `make run` and `make test` (see README.md).
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.priorzero-deps
ARGS ?=

.PHONY: setup run train test bench game clean

setup: ## create .venv and install pinned dependencies + this package (idempotent)
	bash scripts/install.sh

run: setup ## quick debug run of the main job on the default game and the tiny LLM
	DEBUG_MODE=True $(PY) -m zoo.jericho.priorzero.priorzero_orz_entry $(ARGS)

train: setup ## full-size run (use ARGS="--env-id path/to/game.z5 --llm-path /path/to/Qwen2.5-0.5B-Instruct ...")
	$(PY) -m zoo.jericho.priorzero.priorzero_orz_entry $(ARGS)

test: setup ## the test suite (CI runs exactly this)
	$(PY) -m pytest -q $(ARGS)

bench: setup ## CPU benchmarks, each prints a markdown table
	$(PY) bench/env_speed.py --quick
	$(PY) bench/mcts_speed.py --quick
	$(PY) bench/llm_prior_speed.py --quick
	$(PY) bench/wm_train_speed.py --quick

game: ## rebuild our default game's story file (needs Debian's inform6-compiler + inform6-library)
	command -v inform6 >/dev/null || (apt-get update && apt-get install -y inform6-compiler inform6-library)
	bash zoo/jericho/priorzero/games/build.sh

clean:
	rm -rf build *.egg-info data_priorzero
