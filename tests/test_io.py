"""save_result / load_result: one .npz file, an exact round trip, no pickle.

Results are compared leaf by leaf on dtype, shape and raw bytes (so NaN padding and -0.0 count), the
pytree structure by its definition and its classes, and the settings by equality and by type.
"""

import json
import zipfile
from collections import namedtuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import GMM_D, GMM_K, GMM_MAX_ITER, GMM_N
from hypothesis import given, settings
from hypothesis import strategies as st

import jaxem as em
from jaxem.engine.fit import FitResult
from jaxem.io import FORMAT, load_result, save_result
from jaxem.models import GaussianMixtureParams, gaussian_mixture

FULL = gaussian_mixture(GMM_K, "full")  # the shapes of tests/helpers.py: the fit compiles once per session

SETTINGS = {"model": "gmm", "covariance_type": "full", "num_components": GMM_K, "reg_covar": 1e-6,
            "tol": 1e-3, "max_iter": GMM_MAX_ITER, "seed": 0, "converged_only": False, "note": None,
            "restarts": [1, 2, 3], "nested": {"nan": float("nan"), "inf": -float("inf"), "tiny": 5e-324}}


def assert_identical(a, b):
    """Same pytree (structure and node classes), and leaves equal in dtype, shape and bytes."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    leaves_a, leaves_b = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(leaves_a) == len(leaves_b)
    for x, y in zip(leaves_a, leaves_b, strict=True):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def assert_settings_identical(saved, loaded):
    """Equal, with NaN equal to NaN, and the same Python types (a float stays a float)."""
    assert type(saved) is type(loaded)
    if isinstance(saved, dict):
        assert list(saved) == list(loaded)
        for key in saved:
            assert_settings_identical(saved[key], loaded[key])
    elif isinstance(saved, list):
        assert len(saved) == len(loaded)
        for x, y in zip(saved, loaded, strict=True):
            assert_settings_identical(x, y)
    elif isinstance(saved, float) and np.isnan(saved):
        assert np.isnan(loaded)
    else:
        assert saved == loaded


def fitted_result(dtype=np.float64):
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(size=(GMM_N // 2, GMM_D)), rng.normal(size=(GMM_N // 2, GMM_D)) + 4.0])
    x = x.astype(dtype)
    # scikit-learn's rule (the default before the relative one): it stops within GMM_MAX_ITER in
    # float32 too, so the history has NaN padding; the relative rule runs to max_iter there.
    return em.fit(FULL, x, FULL.init(jax.random.key(0), x), max_iter=GMM_MAX_ITER, convergence="absolute"), x


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fit_result_round_trips_exactly(tmp_path, dtype):
    result, x = fitted_result(dtype)
    assert int(result.num_iters) < GMM_MAX_ITER  # the history has NaN padding to preserve
    path = save_result(tmp_path / "fit", result, SETTINGS)
    assert path.endswith(".npz")
    loaded, settings_back = load_result(path)
    assert type(loaded) is FitResult and type(loaded.params) is GaussianMixtureParams
    assert_identical(loaded, result)
    assert_settings_identical(SETTINGS, settings_back)
    FULL.check_params(loaded.params, x)  # valid parameters for the model, as before saving


def test_restarts_result_and_plain_dict_params_round_trip(tmp_path):
    """A RestartsResult (nested NamedTuples, leading restart axis) and a FitResult whose params are
    a plain dict with lists, tuples and None inside, built by hand in several dtypes."""
    params = {"logits": np.array([0.1, -0.2], np.float32),
              "layers": [np.arange(6, dtype=np.int64).reshape(2, 3), (np.float64(-0.0), None)],
              "flags": np.array([True, False]), "scale": np.array(2.5, np.float64)}
    history = np.array([-3.0, -2.5, np.nan, np.nan])
    hand = FitResult(params, np.float64(-2.5), history, np.int32(2), np.bool_(False), np.bool_(True),
                     np.int32(3))
    loaded, settings_back = load_result(save_result(tmp_path / "dict.npz", hand))
    assert_identical(loaded, hand)
    assert list(loaded.params) == list(params) and settings_back == {}
    assert isinstance(loaded.params["layers"], list) and isinstance(loaded.params["layers"][1], tuple)

    rows = [hand._replace(params={"a": jnp.ones(2)}), hand._replace(params={"a": jnp.zeros(2)})]
    batch = jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *rows)
    restarts = em.RestartsResult(best=jax.tree_util.tree_map(lambda leaf: leaf[1], batch),
                                 best_index=jnp.int32(1), restarts=batch)
    loaded, _ = load_result(save_result(tmp_path / "restarts.npz", restarts, {"strategy": "emem"}))
    assert type(loaded) is em.RestartsResult
    assert_identical(loaded, restarts)


def test_file_format_is_the_documented_one(tmp_path):
    """The archive holds exactly the documented members; nothing in it needs pickle."""
    result, _ = fitted_result()
    path = save_result(tmp_path / "fit.npz", result, {"seed": 3})
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
    leaves = jax.tree_util.tree_leaves(result)
    expected = sorted([f"leaf_{i}.npy" for i in range(len(leaves))]
                      + ["__jaxem_format__.npy", "__treedef__.npy", "__settings__.npy"])
    assert names == expected
    with np.load(path, allow_pickle=False) as archive:
        assert str(archive["__jaxem_format__"]) == FORMAT == "jaxem.result/1"
        tree = json.loads(str(archive["__treedef__"]))
        assert json.loads(str(archive["__settings__"])) == {"seed": 3}
        assert tree["node"] == "namedtuple" and tree["class"] == "jaxem.engine.fit:FitResult"
        assert tree["fields"] == list(FitResult._fields)
        params = tree["children"][0]
        assert params["class"] == "jaxem.models.gaussian_mixture:GaussianMixtureParams"
        means = archive[f"leaf_{params['children'][1]['index']}"]
        assert means.tobytes() == np.asarray(result.params.means).tobytes()


def test_a_fit_result_saved_before_stop_reason_loads_as_a_fit_result(tmp_path):
    """A file written when FitResult had 7 fields (no `stop_reason`; its tree description lists
    those 7) loads as a FitResult with stop_reason None; the new field round-trips."""
    result, _ = fitted_result()
    assert result.stop_reason_name == "absolute"
    loaded, _ = load_result(save_result(tmp_path / "new.npz", result))
    assert int(loaded.stop_reason) == int(result.stop_reason) and loaded.stop_reason_name == "absolute"
    path = save_result(tmp_path / "old.npz", result)
    with np.load(path, allow_pickle=False) as archive:
        members = {name: archive[name] for name in archive.files}
    tree = json.loads(str(members["__treedef__"]))
    assert tree["fields"][-1] == "stop_reason"
    last_leaf = tree["children"][-1]["index"]
    tree["fields"], tree["children"] = tree["fields"][:-1], tree["children"][:-1]
    members["__treedef__"] = np.asarray(json.dumps(tree))
    del members[f"leaf_{last_leaf}"]  # the last leaf: stop_reason comes last in the flattening
    with open(path, "wb") as file:
        np.savez(file, **members)
    old, _ = load_result(path)
    assert type(old) is FitResult and old.stop_reason is None and old.stop_reason_name is None
    assert_identical(old._replace(stop_reason=result.stop_reason), result)


Unknown = namedtuple("Unknown", ["alpha", "beta"])


def test_unknown_namedtuple_loads_as_a_stand_in_with_the_same_fields(tmp_path, monkeypatch):
    """A NamedTuple whose class cannot be found among imported modules comes back as a namedtuple
    with the same name, fields and values; nothing is imported to look for it."""
    value = FitResult(Unknown(np.ones(2), np.zeros(1)), np.float64(0.0), np.zeros(0), np.int32(0),
                      np.bool_(False), np.bool_(True), np.int32(1))
    path = save_result(tmp_path / "unknown.npz", value)
    monkeypatch.setattr(Unknown, "__module__", "a_module_that_is_not_imported")
    path = save_result(tmp_path / "unknown.npz", value)
    loaded, _ = load_result(path)
    assert type(loaded.params) is not Unknown and type(loaded.params).__name__ == "Unknown"
    assert loaded.params._fields == ("alpha", "beta")
    assert_identical(list(loaded.params), list(value.params))


@pytest.mark.parametrize(("settings_value", "error", "where"), [
    ({"x": (1, 2)}, TypeError, "settings['x']"),
    ({"x": np.ones(2)}, TypeError, "settings['x']"),
    ({"x": print}, TypeError, "settings['x']"),
    ({1: 2}, TypeError, "settings"),
    ([1, 2], TypeError, "settings"),
    ({"outer": {"inner": {3}}}, TypeError, "settings['outer']['inner']"),
])
def test_settings_that_would_not_round_trip_are_refused(tmp_path, settings_value, error, where):
    result = FitResult(np.ones(1), np.float64(0.0), np.zeros(0), np.int32(0), np.bool_(False), np.bool_(True),
                       np.int32(1))
    with pytest.raises(error) as info:
        save_result(tmp_path / "bad.npz", result, settings_value)
    assert str(info.value).startswith(where)


def test_unsupported_pytree_nodes_are_refused_and_foreign_files_named(tmp_path):
    class Opaque:
        pass

    with pytest.raises(TypeError, match=r"^result\[0\]\['a'\]"):
        save_result(tmp_path / "x.npz", ({"a": Opaque()},))
    with pytest.raises(TypeError, match=r"^result\['k'\]"):
        save_result(tmp_path / "x.npz", {"k": {1: np.ones(1)}})
    np.savez(tmp_path / "foreign.npz", a=np.ones(2))
    with pytest.raises(ValueError, match="^path: .*not a jaxem result file"):
        load_result(tmp_path / "foreign.npz")


def test_saving_does_not_modify_the_result(tmp_path):
    params = GaussianMixtureParams(np.full(GMM_K, 1 / GMM_K), np.zeros((GMM_K, GMM_D)),
                                   np.broadcast_to(np.eye(GMM_D), (GMM_K, GMM_D, GMM_D)).copy())
    result = FitResult(params, np.float64(1.0), np.array([0.5, np.nan]), np.int32(1), np.bool_(True),
                       np.bool_(True), np.int32(2))
    copies = [np.array(leaf, copy=True) for leaf in jax.tree_util.tree_leaves(result)]
    save_result(tmp_path / "r.npz", result, SETTINGS)
    for leaf, copy in zip(jax.tree_util.tree_leaves(result), copies, strict=True):
        assert np.asarray(leaf).tobytes() == copy.tobytes()


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                         st.text(max_size=8))
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=12)
DTYPES = st.sampled_from([np.float16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8,
                          np.bool_, np.complex64, np.complex128])


@settings(max_examples=40, deadline=None)
@given(settings_value=st.dictionaries(st.text(max_size=6), JSON_VALUES, max_size=5),
       dtype=DTYPES, shape=st.lists(st.integers(0, 3), max_size=3), seed=st.integers(0, 2**32 - 1))
def test_round_trip_property(tmp_path_factory, settings_value, dtype, shape, seed):
    """Any JSON-like settings and arrays of any dtype and shape (empty and 0-d included, raw random
    bytes, so NaN payloads and signed zeros too) come back identical."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    array = np.frombuffer(rng.bytes(size), dtype=dtype).reshape(shape) if size else np.zeros(shape, dtype)
    if dtype is np.bool_:
        array = array.view(np.uint8) % 2 == 1
    params = {"w": array, "nested": [array.reshape(-1)[:1], None]}
    result = FitResult(params, np.float64(-1.5), np.array([np.nan]), np.int32(0), np.bool_(False),
                       np.bool_(False), np.int32(1))
    path = save_result(tmp_path_factory.mktemp("io") / "p.npz", result, settings_value)
    loaded, settings_back = load_result(path)
    assert_identical(loaded, result)
    assert_settings_identical(settings_value, settings_back)
