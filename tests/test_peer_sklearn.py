"""scikit-learn's own tests of `GaussianMixture`, run against `jaxem.sklearn.GaussianMixture`.

The installed `sklearn/mixture/tests/test_gaussian_mixture.py` is copied to a temporary
folder with one line changed, `from sklearn.mixture import GaussianMixture` ->
`from jaxem.sklearn import GaussianMixture`, and run by pytest in a subprocess with
scikit-learn's fixtures (`-p sklearn.conftest`: `global_random_seed`, `global_dtype`).
Tests of scikit-learn's private helpers (its `_estimate_*` functions and the like) still run:
they call scikit-learn's own code and pass. The array-API tests skip unless SCIPY_ARRAY_API=1.
Deselected, each with the reason, in `DESELECTED`.
"""

import os
import pathlib
import subprocess
import sys

import pytest

sklearn = pytest.importorskip("sklearn")

SOURCE = pathlib.Path(sklearn.__file__).parent / "mixture" / "tests" / "test_gaussian_mixture.py"
SWAP = ("from sklearn.mixture import GaussianMixture", "from jaxem.sklearn import GaussianMixture")

DESELECTED = {
    # It monkeypatches scikit-learn's private `_estimate_gaussian_parameters` and counts the
    # calls; jaxem's M-step is its own and never calls it.
    "test_gaussian_mixture_all_init_does_not_estimate_gaussian_parameters[":
        "counts calls to scikit-learn's private _estimate_gaussian_parameters",
    # They build the expected precisions through scikit-learn's private `_set_parameters` and
    # `_initialize` methods of the estimator, which are not part of its interface.
    "test_gaussian_mixture_precisions_init[": "calls the private _set_parameters and _initialize",
}


def test_scikit_learn_gaussian_mixture_tests_pass(tmp_path):
    text = SOURCE.read_text()
    assert text.count(SWAP[0]) == 1, "the import to swap moved: update SWAP"
    target = tmp_path / "test_gaussian_mixture_jaxem.py"
    target.write_text(text.replace(*SWAP))
    # --deselect takes node-id prefixes: "name[" deselects every parametrization of a test.
    deselect = [arg for name in DESELECTED for arg in ("--deselect", f"{target.name}::{name}")]
    completed = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "sklearn.conftest",
         *deselect, target.name],
        cwd=tmp_path, capture_output=True, text=True, timeout=1200, env=dict(os.environ),
    )
    summary = completed.stdout[-4000:]
    assert completed.returncode == 0, summary
    assert " passed" in summary and "failed" not in summary, summary
