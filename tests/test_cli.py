"""The command line, end to end.

Subprocesses (`python -m jaxem ...`, each one JAX import; they share one
persistent compilation cache so the 272×2 two-component program compiles once):
the default run, a CSV with a header (--json --save, the saved file read back
with `jaxem.io.load_result`), a CSV without one, a .npy file, a bad file and a NaN
row. Cheaper in-process checks (`jaxem.cli.main`) cover the file reader's
messages, argument errors, `select` and `--plot`.
Every number the CLI prints is checked against scikit-learn's GaussianMixture
(same parameters: log-likelihood, BIC, AIC, responsibilities for ICL) or a
formula written out here.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.mixture import GaussianMixture

import jaxem
from jaxem import cli
from jaxem.cli import fitting, report
from jaxem.cli.data import DataFileError, Table, read_table
from jaxem.io import load_result

REPO = Path(__file__).resolve().parents[1]
FAITHFUL = jaxem.datasets.old_faithful()
N, D = FAITHFUL.shape


# --- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """A folder with the input files and the shared persistent compilation cache."""
    folder = tmp_path_factory.mktemp("cli")
    np.savetxt(folder / "header.csv", FAITHFUL, delimiter=",", header="eruptions,waiting", comments="")
    np.savetxt(folder / "plain.csv", FAITHFUL, delimiter=",", fmt="%.17g")
    np.save(folder / "data.npy", FAITHFUL)
    lines = (folder / "header.csv").read_text().splitlines()
    lines[4] = "3.6,"        # line 5 of the file: an empty field
    lines[10] = "NA,79"      # line 11
    (folder / "nan_rows.csv").write_text("\n".join(lines) + "\n")
    (folder / "binary.dat").write_bytes(bytes(range(256)) * 4)
    return folder


def run_cli(args, workdir, expect_ok=True):
    env = dict(os.environ)
    env["JAXEM_CACHE_DIR"] = str(workdir / "xla-cache")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-m", "jaxem", *args], cwd=workdir, env=env,
                          capture_output=True, text=True, timeout=600)
    if expect_ok:
        assert proc.returncode == 0, proc.stderr
    return proc


def sklearn_with(params: dict, covariance_type: str) -> GaussianMixture:
    """A scikit-learn GaussianMixture holding the given parameters (no fitting)."""
    gm = GaussianMixture(len(params["weights"]), covariance_type=covariance_type)
    gm.weights_ = np.asarray(params["weights"])
    gm.means_ = np.asarray(params["means"])
    gm.covariances_ = np.asarray(params["covariances"])
    if covariance_type == "full":
        gm.precisions_cholesky_ = np.stack(
            [np.linalg.cholesky(np.linalg.inv(c)) for c in gm.covariances_])
    elif covariance_type == "diag":
        gm.precisions_cholesky_ = 1.0 / np.sqrt(gm.covariances_)
    else:
        raise NotImplementedError(covariance_type)
    return gm


def full_parameter_count(k: int, d: int) -> int:
    """Free parameters of a K-component full-covariance mixture in d dimensions."""
    return (k - 1) + k * d + k * d * (d + 1) // 2


@pytest.fixture(scope="module")
def sklearn_optimum():
    """The Old Faithful 2-component full mixture's maximum log-likelihood, by scikit-learn."""
    gm = GaussianMixture(2, covariance_type="full", tol=1e-10, max_iter=1000, n_init=5,
                         random_state=0).fit(FAITHFUL)
    return gm.score(FAITHFUL) * N


# --- subprocesses ------------------------------------------------------------------------------


def test_default_run_fits_old_faithful(workdir, sklearn_optimum):
    proc = run_cli([], workdir)
    out = proc.stdout
    assert proc.stderr.strip() == "" or "Traceback" not in proc.stderr
    log_likelihood = float(re.search(r"^log-likelihood\s+(-?[\d.]+)", out, re.M).group(1))
    bic = float(re.search(r"^BIC\s+(-?[\d.]+)", out, re.M).group(1))
    # The known optimum, -1130.26, confirmed by scikit-learn; the CLI stops by jaxem.fit's
    # default rule (relative change of ℓ below 1e-8: 1.1e-5 nats here), so at the optimum up to
    # the 4 printed decimals.
    assert sklearn_optimum == pytest.approx(-1130.264, abs=1e-3)
    assert sklearn_optimum - 2e-4 <= log_likelihood <= sklearn_optimum + 1e-4
    assert bic == pytest.approx(-2 * log_likelihood + full_parameter_count(2, 2) * math.log(N), abs=1e-3)
    for needed in ("weight", "mean", "covariance", "AIC", "iterations",
                   "converged       yes (relative change of ℓ below 1e-08, |Δℓ| < 1.13e-05, and of every "
                   "parameter below 0.0001)"):
        assert needed in out


@pytest.fixture(scope="module")
def header_json(workdir):
    proc = run_cli(["fit", "header.csv", "--json", "--save", "fit.npz"], workdir)
    assert "saved the parameters to fit.npz" in proc.stderr  # notes go to stderr with --json
    return json.loads(proc.stdout)


def test_json_says_which_rule_stopped_the_fit(header_json):
    """New keys only: stop_reason (the best restart's and every restart's) and the rule in the
    settings; tol is the rule's default as a number."""
    assert header_json["stop_reason"] == "relative" and header_json["converged"] is True
    reasons = header_json["restarts"]["stop_reason"]
    assert len(reasons) == header_json["settings"]["restarts"] and set(reasons) <= set(jaxem.STOP_REASONS)
    assert [r == "relative" for r in reasons] == header_json["restarts"]["converged"]
    assert header_json["settings"]["convergence"] == "relative" and header_json["settings"]["tol"] == 1e-8


def test_convergence_absolute_is_scikit_learns_rule(in_process, capsys):
    assert in_process(["fit", "--restarts", "2", "--convergence", "absolute"]) == 0
    out = capsys.readouterr().out
    assert "converged       yes (tol 0.001 per observation, |Δℓ| < 0.272)" in out
    assert in_process(["fit", "--restarts", "2", "--max-iter", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["stop_reason"] == "max_iter" and result["converged"] is False
    assert result["restarts"]["stop_reason"] == ["max_iter", "max_iter"]


def test_json_matches_sklearn_on_the_same_parameters(header_json, sklearn_optimum):
    result = header_json
    assert result["data"]["columns"] == ["eruptions", "waiting"]
    assert result["data"]["num_observations"] == N
    gm = sklearn_with(result["params"], "full")
    assert result["log_likelihood"] == pytest.approx(gm.score(FAITHFUL) * N, abs=1e-8)
    assert result["bic"] == pytest.approx(gm.bic(FAITHFUL), abs=1e-8)
    assert result["aic"] == pytest.approx(gm.aic(FAITHFUL), abs=1e-8)
    r = gm.predict_proba(FAITHFUL)
    entropy = -np.sum(r[r > 0] * np.log(r[r > 0]))
    assert result["icl"] == pytest.approx(gm.bic(FAITHFUL) + 2 * entropy, abs=1e-6)
    assert result["num_params"] == full_parameter_count(2, 2)
    assert result["log_likelihood"] >= sklearn_optimum - 5e-3
    # The best restart is the highest of all restarts' log-likelihoods, and its
    # history (objective before each M-step) climbs to the final value.
    restarts = result["restarts"]
    assert result["log_likelihood"] == pytest.approx(max(restarts["log_likelihood"]), abs=1e-12)
    assert restarts["num_iters"][result["best_restart"]] == result["num_iters"]
    history = np.asarray(result["history"] + [result["log_likelihood"]])
    assert len(history) == result["num_iters"] + 1
    assert np.all(np.diff(history) >= -1e-9)


def test_save_round_trip(header_json, workdir):
    """`--save` writes a `jaxem.io` file: `load_result` gives back the best restart's FitResult
    (parameters, NaN-padded history) and the settings, equal to what --json printed."""
    result, settings = load_result(workdir / "fit.npz")
    assert type(result) is jaxem.FitResult
    assert type(result.params) is jaxem.models.GaussianMixtureParams
    for name in ("weights", "means", "covariances"):
        value = getattr(result.params, name)
        assert value.dtype == np.float64
        np.testing.assert_allclose(value, np.asarray(header_json["params"][name]), rtol=0, atol=1e-15)
    assert float(result.log_likelihood) == pytest.approx(header_json["log_likelihood"], abs=1e-12)
    assert int(result.num_iters) == header_json["num_iters"]
    assert bool(result.converged) == header_json["converged"] and bool(result.finite)
    max_iter = header_json["settings"]["max_iter"]
    assert result.history.shape == (max_iter,)
    np.testing.assert_allclose(result.history[: result.num_iters], header_json["history"], rtol=0, atol=1e-12)
    assert np.all(np.isnan(result.history[result.num_iters:]))
    # The settings: every command-line option as --json printed it, and the criteria.
    for key, value in header_json["settings"].items():
        assert settings[key] == value
    assert settings["command"] == "fit" and settings["model"] == "gmm"
    assert settings["data"] == header_json["data"]
    assert settings["data"]["columns"] == ["eruptions", "waiting"]
    for name in ("log_likelihood", "bic", "aic", "icl", "num_params"):
        assert settings["criteria"][name] == pytest.approx(header_json[name], abs=1e-12)
    assert settings["best_restart"] == header_json["best_restart"]
    np.testing.assert_allclose(settings["restart_log_likelihoods"],
                               header_json["restarts"]["log_likelihood"], rtol=0, atol=1e-12)
    # The loaded parameters are a valid starting point: scikit-learn gives the same log-likelihood.
    gm = sklearn_with(result.params._asdict(), "full")
    assert float(result.log_likelihood) == pytest.approx(gm.score(FAITHFUL) * N, abs=1e-8)


@pytest.mark.parametrize("name", ["plain.csv", "data.npy"])
def test_headerless_csv_and_npy_give_the_same_fit(name, header_json, workdir):
    result = json.loads(run_cli(["fit", name, "--json"], workdir).stdout)
    assert result["data"]["columns"] == ["x1", "x2"]
    for key in ("weights", "means", "covariances"):
        np.testing.assert_allclose(result["params"][key], header_json["params"][key], rtol=1e-9)
    assert result["log_likelihood"] == pytest.approx(header_json["log_likelihood"], abs=1e-9)


def test_bad_file_is_one_line_and_non_zero(workdir):
    proc = run_cli(["fit", "binary.dat"], workdir, expect_ok=False)
    assert proc.returncode == 1
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert lines == ["jaxem: error: binary.dat: is not a text (UTF-8) CSV file; "
                     "expected CSV or a .npy array."]


def test_nan_rows_are_named(workdir):
    proc = run_cli(["fit", "nan_rows.csv"], workdir, expect_ok=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "nan_rows.csv" in lines[0] and "2 row(s)" in lines[0] and "line(s) 5, 11 of the file" in lines[0]


# --- in process: the reader, arguments, select and plots ----------------------------------------


@pytest.fixture
def in_process(monkeypatch):
    """Run `jaxem.cli.main` here, without the persistent cache (it is global JAX state)."""
    monkeypatch.setenv("JAXEM_CACHE_DIR", "")
    return cli.main


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_reader_formats(tmp_path):
    table = read_table(write(tmp_path / "a.csv", "# a comment\nheight;weight\n1;2\n\n3;4.5\n"))
    assert table.columns == ("height", "weight")
    np.testing.assert_array_equal(table.values, [[1, 2], [3, 4.5]])
    table = read_table(write(tmp_path / "b.txt", "1 2 3\n4\t5   6\n"))
    assert table.columns == ("x1", "x2", "x3") and table.values.shape == (2, 3)
    table = read_table(write(tmp_path / "c.csv", "value\n1\n2\n3\n"))
    assert table.values.shape == (3, 1)
    np.save(tmp_path / "d.npy", np.arange(4.0))
    assert read_table(str(tmp_path / "d.npy")).values.shape == (4, 1)
    np.save(tmp_path / "e.bin", np.ones((3, 2)))  # np.save adds .npy; the magic bytes decide
    assert read_table(str(tmp_path / "e.bin.npy")).values.shape == (3, 2)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("ragged.csv", "a,b\n1,2\n3,4,5\n", "line 3 has 3 field(s), expected 2 as on line 1"),
        ("text.csv", "a,b\n1,2\n3,x\n", "column 2 ('b') is not numeric: line 3 has 'x'"),
        ("nohead.csv", "1,2\n3,x\n", "column 2 is not numeric: line 2 has 'x'"),
        ("inf.csv", "1,2\ninf,4\n5,nan\n7,8\n", "2 row(s) (line(s) 2, 3 of the file)"),
        ("empty.csv", "\n# nothing\n", "has no data rows"),
        ("onlyhead.csv", "a,b\n", "has a header but no data rows"),
    ],
)
def test_reader_errors(tmp_path, name, content, message):
    with pytest.raises(DataFileError) as err:
        read_table(write(tmp_path / name, content))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_reader_npy_errors(tmp_path):
    bad = np.ones((5, 2))
    bad[1, 0] = np.nan
    bad[3, 1] = np.inf
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataFileError, match=r"2 row\(s\) \(row indices 1, 3, counting from 0\)"):
        read_table(str(tmp_path / "nan.npy"))
    np.save(tmp_path / "cube.npy", np.ones((2, 2, 2)))
    with pytest.raises(DataFileError, match=r"shape \(2, 2, 2\)"):
        read_table(str(tmp_path / "cube.npy"))
    with pytest.raises(DataFileError, match="no such file"):
        read_table(str(tmp_path / "missing.csv"))
    with pytest.raises(DataFileError, match="is a directory"):
        read_table(str(tmp_path))


def test_parse_components():
    assert cli.parse_components("1..4") == [1, 2, 3, 4]
    assert cli.parse_components("2-3") == [2, 3]
    assert cli.parse_components("5,2,2") == [2, 5]
    for bad in ("0", "3..1", "a", ""):
        with pytest.raises(Exception, match="components|expected"):
            cli.parse_components(bad)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["fit", "--components", "0"], 2, "--components"),
        (["fit", "--covariance", "round"], 2, "--covariance"),
        (["--no-such-option"], 2, "unrecognized arguments"),
        (["fit", "--save", "out.txt"], 1, "must end in .npz"),
        (["fit", "--plot", "nowhere/out.png"], 1, "does not exist"),
    ],
)
def test_argument_errors_are_one_line(in_process, capsys, argv, code, message):
    assert in_process(argv) == code
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("jaxem: error: ") and message in lines[0]


def test_debug_shows_the_exception(in_process, tmp_path):
    """Without --debug a bad file is one line and exit code 1; with it, the exception propagates."""
    missing = str(tmp_path / "missing.csv")
    assert in_process([missing]) == 1
    with pytest.raises(DataFileError, match="no such file"):
        in_process(["--debug", "fit", missing])


def test_hmm_fit_matches_enumeration_and_hmmlearn(in_process, capsys, tmp_path):
    """`--model hmm` on a short sequence: log-likelihood and ICL (whose entropy is that of the
    whole state path) against enumerating all 2^7 paths, and the log-likelihood against hmmlearn.
    Where the Gaussian HMM is not part of jaxem, the command must say so in one line."""
    from hmmlearn.hmm import GaussianHMM

    x = np.array([0.1, -0.3, 2.9, 3.2, 0.2, 3.1, 2.7])
    data = write(tmp_path / "sequence.csv", "level\n" + "\n".join(f"{v}" for v in x) + "\n")
    if not hasattr(jaxem.models, "gaussian_hmm"):
        assert in_process(["fit", data, "--model", "hmm"]) == 1
        assert "--model hmm is not available" in capsys.readouterr().err
        return
    assert in_process(["fit", data, "--model", "hmm", "--restarts", "2", "--tol", "1e-8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["model"] == "hmm" and set(result["params"]) == {"initial", "transition", "means",
                                                                  "covariances"}
    initial = np.asarray(result["params"]["initial"])
    transition = np.asarray(result["params"]["transition"])
    means = np.asarray(result["params"]["means"])[:, 0]
    variances = np.asarray(result["params"]["covariances"])[:, 0, 0]
    log_emission = -0.5 * ((x[:, None] - means) ** 2 / variances + np.log(2 * np.pi * variances))
    paths = np.array(np.meshgrid(*[[0, 1]] * len(x), indexing="ij")).reshape(len(x), -1).T
    log_joint = (np.log(initial[paths[:, 0]]) + log_emission[np.arange(len(x)), paths].sum(axis=1)
                 + np.log(transition[paths[:, :-1], paths[:, 1:]]).sum(axis=1))
    log_likelihood = np.logaddexp.reduce(log_joint)
    posterior = np.exp(log_joint - log_likelihood)
    path_entropy = -np.sum(posterior * (log_joint - log_likelihood))
    num_params = 1 + 2 + 2 + 2  # initial, transition rows, means, variances
    bic = -2 * log_likelihood + num_params * math.log(len(x))
    assert result["log_likelihood"] == pytest.approx(log_likelihood, abs=1e-9)
    assert result["num_params"] == num_params
    assert result["bic"] == pytest.approx(bic, abs=1e-9)
    assert result["icl"] == pytest.approx(bic + 2 * path_entropy, abs=1e-8)
    reference = GaussianHMM(2, covariance_type="full", init_params="", params="")
    reference.startprob_, reference.transmat_ = initial, transition
    reference.means_, reference.covars_ = means[:, None], variances[:, None, None]
    assert result["log_likelihood"] == pytest.approx(reference.score(x[:, None]), abs=1e-9)


def test_plot_without_matplotlib_is_a_clear_error(in_process, capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib` fail
    assert in_process(["fit", "--plot", str(tmp_path / "fit.png")]) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("jaxem: error: --plot needs matplotlib, which is not installed; "
                   "install it with: pip install 'jaxem[plot]'")
    assert not (tmp_path / "fit.png").exists()


def test_select_ranks_by_bic_and_icl_and_plots(in_process, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    data = str(tmp_path / "faithful.npy")
    np.save(data, FAITHFUL)
    plot = tmp_path / "select.png"
    code = in_process(["select", data, "--components", "1..3", "--covariance", "full", "--json",
                       "--tol", "1e-6", "--plot", str(plot)])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    rows = result["results"]
    assert [r["rank_bic"] for r in rows] == [1, 2, 3]
    assert [r["bic"] for r in rows] == sorted(r["bic"] for r in rows)
    by_k = {r["components"]: r for r in rows}
    for k, row in by_k.items():
        # The criteria from their definitions, and the log-likelihood against scikit-learn's best.
        assert row["num_params"] == full_parameter_count(k, D)
        assert row["bic"] == pytest.approx(-2 * row["log_likelihood"] + row["num_params"] * math.log(N))
        assert row["aic"] == pytest.approx(-2 * row["log_likelihood"] + 2 * row["num_params"])
        assert row["icl"] >= row["bic"] - 1e-9
        reference = GaussianMixture(k, covariance_type="full", tol=1e-4, max_iter=200, n_init=2,
                                    random_state=0).fit(FAITHFUL)
        assert row["log_likelihood"] >= reference.score(FAITHFUL) * N - 1e-2
        row["sklearn_bic"] = reference.bic(FAITHFUL)
    assert by_k[1]["icl"] == pytest.approx(by_k[1]["bic"])  # one component: zero entropy
    best_sklearn = min(by_k, key=lambda k: by_k[k]["sklearn_bic"])
    assert result["best_bic"] == {"components": best_sklearn, "covariance": "full"}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_plot(in_process, capsys, tmp_path):
    pytest.importorskip("matplotlib")
    plot = tmp_path / "fit.png"
    assert in_process(["fit", "--plot", str(plot)]) == 0  # the configuration `select` compiled
    out = capsys.readouterr().out
    assert "full covariances" in out and f"saved the figure to {plot}" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("kind", ["full", "diag", "spherical", "tied"])
@pytest.mark.parametrize("model", ["gmm", "hmm"])
def test_summary_of_every_covariance_type(kind, model):
    """The text summary lays out each model's parameters (no fitting needed)."""
    k, d = 2, 3
    shapes = {"full": (k, d, d), "diag": (k, d), "spherical": (k,), "tied": (d, d)}
    params = {"weights": np.array([0.25, 0.75])} if model == "gmm" else {
        "initial": np.array([0.25, 0.75]), "transition": np.array([[0.9, 0.1], [0.2, 0.8]])}
    params.update(means=np.arange(6.0).reshape(k, d), covariances=np.full(shapes[kind], 0.5))
    fit = fitting.ModelFit(
        model=model, covariance_type=kind, params=params, log_likelihood=-10.0, num_params=7, bic=30.0,
        aic=34.0, icl=31.0, num_iters=4, converged=False, history=np.arange(4.0),
        responsibilities=np.eye(2), best_restart=1, restart_log_likelihood=np.array([-11.0, -10.0]),
        restart_num_iters=np.array([3, 4]), restart_converged=np.array([True, False]),
        restart_history=np.zeros((2, 5)),
    )
    table = Table(np.zeros((5, d)), ("a", "b", "c"), "test")
    settings = {"restarts": 2, "init": "kmeans++", "seed": 0, "strategy": "exhaustive", "max_iter": 4,
                "tol": 1e-3}
    text = report.format_fit(fit, table, settings)
    assert "log-likelihood  -10.0000" in text and "converged       no (stopped at --max-iter 4" in text
    if model == "gmm":
        assert "component 2: weight 0.75000" in text
    else:
        assert "state 2" in text and "transition matrix      [[0.9 0.1]" in text
    label = {"full": "covariance", "diag": "variances", "spherical": "variance", "tied": "shared covariance"}
    assert label[kind] in text
    assert text.count("0.5") == {"full": 18, "diag": 6, "spherical": 2, "tied": 9}[kind]
    assert fitting.full_covariances(fit).shape == (k, d, d)
    np.testing.assert_allclose(np.diagonal(fitting.full_covariances(fit), axis1=1, axis2=2), 0.5)


def test_standard_errors_flag_matches_the_library(in_process, capsys):
    """`jaxem fit --se`: the printed and JSON standard errors are `jaxem.standard_errors` at the
    fitted parameters (itself checked in tests/test_inference.py)."""
    argv = ["fit", "--restarts", "2", "--tol", "1e-10", "--max-iter", "500", "--se"]
    assert in_process([*argv, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    x = jaxem.datasets.old_faithful()
    model = jaxem.models.gaussian_mixture(2, "full")
    params = jaxem.models.GaussianMixtureParams(
        *(np.asarray(result["params"][name]) for name in ("weights", "means", "covariances")))
    expected = jaxem.standard_errors(model, np.asarray(x, np.float64), params)
    for name in ("weights", "means", "covariances"):
        np.testing.assert_allclose(result["standard_errors"][name], getattr(expected, name), rtol=1e-6)
    assert in_process(argv) == 0
    assert "standard errors (observed information, delta method" in capsys.readouterr().out


def test_degenerate_restart_is_not_the_answer(in_process, capsys, tmp_path):
    """The six values 1, 2, 3, 10, 11, 12 with K = 2: one of the 8 default restarts puts a
    component on a single point (ℓ -11.01, held up by reg_covar); the report chooses the two
    groups (ℓ -11.46, means 2 and 11) and says what it passed over, also in --json."""
    path = write(tmp_path / "six.csv", "x\n1\n2\n3\n10\n11\n12\n")
    assert in_process(["fit", path, "--components", "2"]) == 0
    text = capsys.readouterr().out
    assert re.search(r"log-likelihood\s+-11\.4561", text)
    assert re.search(r"degenerate\s+1/8 restarts ended degenerate and were not chosen \(1 with a "
                     r"higher log-likelihood, up to -11\.0125", text)
    assert in_process(["fit", path, "--components", "2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert sorted(round(m[0], 6) for m in result["params"]["means"]) == [2.0, 11.0]
    assert sum(result["restarts"]["degenerate"]) == 1 and result["degenerate"] is None
    flagged = result["restarts"]["degenerate"].index(True)
    assert result["restarts"]["log_likelihood"][flagged] > result["log_likelihood"] + 0.4


def test_select_default_grid_shrinks_to_the_data(in_process, capsys, tmp_path):
    """Three observations: `select` with no --components tries K = 1..3 (not 1..8, which would
    fail on K = 4) and says so (on stderr, as stdout carries the JSON)."""
    path = write(tmp_path / "tiny.csv", "x\n0.0\n1.0\n5.0\n")
    assert in_process(["select", path, "--covariance", "diag", "--json"]) == 0
    captured = capsys.readouterr()
    assert "--components defaults to 1..3, not 1..8: the data have 3 observations" in captured.err
    rows = json.loads(captured.out)["results"]
    assert sorted(row["components"] for row in rows) == [1, 2, 3]
