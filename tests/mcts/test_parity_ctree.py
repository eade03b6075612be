"""Our numpy search against LightZero's compiled MuZero tree on the same deterministic model outputs."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lzero_ext.import_utils import is_available
from lzero_ext.mcts.search import BatchedMCTS
from tests.mcts.ctree_oracle import CASES, case_name, parity_case

REPO_ROOT = Path(__file__).resolve().parents[2]

NO_RAND_C = "int rand(void) { return 0; }\nvoid srand(unsigned int seed) { (void)seed; }\n"


@pytest.fixture(scope="module")
def ctree_results(tmp_path_factory) -> dict[str, np.ndarray]:
    if not is_available("lzero.mcts.ctree.ctree_muzero.mz_tree"):
        pytest.skip("LightZero's compiled tree is not importable here (it ships for CPython 3.11 only)")
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("No C compiler to build the rand() shim that makes the C++ tree's tie-breaking reproducible")
    tmp = tmp_path_factory.mktemp("ctree")
    (tmp / "norand.c").write_text(NO_RAND_C)
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(tmp / "norand.so"), str(tmp / "norand.c")], check=True)
    out = tmp / "ctree.npz"
    env = {"LD_PRELOAD": str(tmp / "norand.so"), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.mcts.ctree_oracle", "--out", str(out)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return dict(np.load(out))


@pytest.mark.parametrize("batch,sims,noise", CASES)
def test_same_visits_and_root_values_as_lightzero_ctree(ctree_results, batch, sims, noise):
    cfg, model, root = parity_case(batch, sims, noise)
    ours = BatchedMCTS(cfg).search(model, root, add_noise=noise, rng=np.random.default_rng(11))
    name = case_name(batch, sims, noise)
    np.testing.assert_array_equal(ours.visit_counts, ctree_results[name + "_visits"])
    # The C++ tree accumulates in float32.
    np.testing.assert_allclose(ours.root_value, ctree_results[name + "_values"], rtol=1e-5, atol=1e-5)
    assert ours.visit_counts.sum(axis=1).tolist() == [sims] * batch
    assert (ours.visit_counts[~root.legal_mask] == 0).all()


def test_unizero_adapter_reproduces_lightzero_unizero_search(ctree_results):
    """Same tiny UniZero world model, two consecutive steps (fresh and reused KV caches): same visits and values."""
    from lzero_ext.mcts.unizero_adapter import UniZeroSearchModel
    from tests.mcts.ctree_oracle import UNIZERO_SIMS, unizero_case

    model, obs, executed, legal = unizero_case()
    adapter = UniZeroSearchModel(model)
    search = BatchedMCTS({"num_simulations": UNIZERO_SIMS, "tie_break": "first"})
    last_actions = None
    for step in range(2):
        timesteps = np.full(len(executed), step)
        roots = adapter.initial_inference(obs[step], last_actions, timesteps)
        out = search.search(adapter, roots.to_root_input(roots.policy_logits, legal), add_noise=False, rng=np.random.default_rng(0))
        np.testing.assert_array_equal(out.visit_counts, ctree_results[f"unizero_step{step}_visits"])
        np.testing.assert_allclose(out.root_value, ctree_results[f"unizero_step{step}_values"], rtol=1e-4, atol=1e-4)
        last_actions = executed
    assert model.world_model.root_hit_cnt == len(executed)  # the second step reused the first step's root caches
