"""The persistent compilation cache the command line and the estimators turn on
(`jaxem.compilation_cache`): where it lives, the opt-out, that a configured cache is kept, and
that a second process loads the estimator's programs instead of compiling them (counted with
`jax.monitoring` events, never timed). The test suite itself runs with the cache off
(conftest.py), so these run in subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from jaxem.compilation_cache import default_cache_dir

# A child process: fit a small GaussianMixture face, print the compilation-cache events.
CHILD = r"""
import json, os, sys
import jax, numpy as np
events = {"hits": 0}
def on_event(event, **kwargs):
    if event == "/jax/compilation_cache/cache_hits":
        events["hits"] += 1
jax.monitoring.register_event_listener(on_event)
if sys.argv[1] != "-":
    jax.config.update("jax_compilation_cache_dir", sys.argv[1])
from jaxem.sklearn import GaussianMixture
x = np.random.default_rng(0).normal(size=(40, 2))
GaussianMixture(2, max_iter=5, random_state=0).fit(x)
events["dir"] = folder = jax.config.jax_compilation_cache_dir
events["entries"] = sorted(name.split("-")[0] for name in os.listdir(folder)) if folder else []
print(json.dumps(events))
"""


def run_child(cache_env: str | None, configured: str = "-") -> dict:
    env = {key: value for key, value in os.environ.items() if key != "JAXEM_CACHE_DIR"}
    if cache_env is not None:
        env["JAXEM_CACHE_DIR"] = cache_env
    out = subprocess.run([sys.executable, "-c", CHILD, configured], env=env, capture_output=True,
                         text=True, timeout=300, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_default_folder_rules(tmp_path):
    assert default_cache_dir({"JAXEM_CACHE_DIR": "/x/y"}) == "/x/y"
    assert default_cache_dir({"JAXEM_CACHE_DIR": ""}) == ""   # the opt-out
    assert default_cache_dir({"XDG_CACHE_HOME": "/c"}) == os.path.join("/c", "jaxem", "xla")
    assert default_cache_dir({}) == os.path.join(os.path.expanduser("~"), ".cache", "jaxem", "xla")


def test_a_second_process_loads_the_estimators_programs(tmp_path):
    cache = str(tmp_path / "xla")
    first = run_child(cache)
    assert first["dir"] == cache and first["hits"] == 0
    assert "jit__fit_program" in first["entries"]   # the fit program, and the others it ran
    second = run_child(cache)
    assert second["entries"] == first["entries"] and second["hits"] == len(first["entries"])


def test_opt_out_and_a_configured_cache_are_respected(tmp_path):
    off = run_child("")
    assert off["dir"] is None and off["hits"] == 0
    mine = str(tmp_path / "mine")
    kept = run_child(str(tmp_path / "jaxem"), configured=mine)
    assert kept["dir"] == mine and os.path.isdir(mine) and not (tmp_path / "jaxem").exists()
