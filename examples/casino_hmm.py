"""The occasionally dishonest casino (Durbin, Eddy, Krogh & Mitchison, *Biological
Sequence Analysis*, 1998, §3.2): a casino mostly rolls a fair die but now and then
switches to a loaded one that shows a six half of the time. From the rolls alone,
Baum–Welch recovers both dice and the switching rates, and Viterbi tells when the
loaded die was in play.

    python examples/casino_hmm.py                    # simulate, fit, decode, print
    python examples/casino_hmm.py --plot casino.png  # and plot decoded vs true dice

The plot needs matplotlib; without it the example says so and skips the plot.
"""

from __future__ import annotations

import argparse
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np

import jaxem

FAIR, LOADED = 0, 1
TRUTH = jaxem.models.CategoricalHMMParams(
    initial=np.array([1.0, 0.0]),
    transition=np.array([[0.95, 0.05],    # fair -> fair, fair -> loaded
                         [0.10, 0.90]]),  # loaded -> fair, loaded -> loaded
    emission=np.array([[1 / 6] * 6,                        # fair die: faces 1..6 (symbols 0..5)
                       [0.1, 0.1, 0.1, 0.1, 0.1, 0.5]]),  # loaded die: a six half of the time
)


def main(argv: list[str] | None = None) -> dict:
    """Run the example; `argv` are command-line arguments (none: the defaults).
    Returns the fitted parameters (fair state first) and the decoding accuracies."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rolls", type=int, default=3000, help="number of rolls to simulate")
    parser.add_argument("--restarts", type=int, default=8, help="random starting points")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", metavar="PNG", help="save a plot of the decoded dice to this file")
    args = parser.parse_args([] if argv is None else argv)
    jax.config.update("jax_enable_x64", True)

    model = jaxem.models.categorical_hmm(num_states=2, num_symbols=6)
    key_data, key_init = jax.random.split(jax.random.PRNGKey(args.seed))
    truth = jax.tree_util.tree_map(jnp.asarray, TRUTH)
    rolls, dice = jax.jit(model.sample, static_argnums=2)(key_data, truth, args.rolls)

    start = time.perf_counter()
    keys = jax.random.split(key_init, args.restarts)
    starts = jax.jit(jax.vmap(model.init, in_axes=(0, None)))(keys, rolls)
    # "exhaustive": every restart runs to convergence in one compiled, vmapped program.
    fitted = jaxem.fit_restarts(model, rolls, starts, max_iter=300, tol=1e-6, strategy="exhaustive")
    params = jax.block_until_ready(fitted.best.params)
    seconds = time.perf_counter() - start

    # States are only defined up to relabelling: call "loaded" the state that likes sixes.
    order = np.argsort(np.asarray(params.emission)[:, 5])  # [fair, loaded]
    params = jaxem.models.CategoricalHMMParams(
        np.asarray(params.initial)[order], np.asarray(params.transition)[np.ix_(order, order)],
        np.asarray(params.emission)[order])
    path, path_log_prob = jax.jit(model.viterbi)(params, rolls)
    posterior_loaded = np.asarray(jax.jit(model.state_probabilities)(params, rolls))[:, LOADED]
    dice, path = np.asarray(dice), np.asarray(path)

    print(f"{args.rolls} rolls, {int(np.sum(dice == LOADED))} with the loaded die; "
          f"{args.restarts} restarts fitted in {seconds:.2f} s "
          f"(best: {int(fitted.best.num_iters)} iterations, converged={bool(fitted.best.converged)})")
    print(f"log-likelihood: fitted {float(fitted.best.log_likelihood):.2f}, "
          f"true parameters {float(jax.jit(model.log_likelihood)(truth, rolls)):.2f}")
    print("transition matrix (rows: from fair, from loaded)")
    print("  true  ", TRUTH.transition.tolist(), "\n  fitted", params.transition.round(3).tolist())
    for name, state in (("fair", FAIR), ("loaded", LOADED)):
        print(f"P(face 1..6), {name} die")
        print("  true  ", TRUTH.emission[state].round(3).tolist())
        print("  fitted", params.emission[state].round(3).tolist())
    viterbi_accuracy = float(np.mean(path == dice))
    posterior_accuracy = float(np.mean((posterior_loaded > 0.5) == (dice == LOADED)))
    print(f"Viterbi path (log p = {float(path_log_prob):.2f}) matches the true dice on "
          f"{viterbi_accuracy:.1%} of rolls; posterior decoding on {posterior_accuracy:.1%}")

    if args.plot:
        plot(args.plot, np.asarray(rolls), dice, path, posterior_loaded)
    log_likelihood = float(fitted.best.log_likelihood)
    check(params, np.asarray(rolls), log_likelihood, float(jax.jit(model.log_likelihood)(truth, rolls)),
          posterior_accuracy)
    return {"params": params, "log_likelihood": log_likelihood, "rolls": np.asarray(rolls),
            "viterbi_accuracy": viterbi_accuracy, "posterior_accuracy": posterior_accuracy}


def forward_log_likelihood(params, rolls: np.ndarray) -> float:
    """log p(rolls | params) by the scaled forward recursion in NumPy (independent of jaxem)."""
    alpha = np.asarray(params.initial) * np.asarray(params.emission)[:, rolls[0]]
    total = 0.0
    for symbol in rolls[1:]:
        scale = alpha.sum()
        total += np.log(scale)
        alpha = (alpha / scale) @ np.asarray(params.transition) * np.asarray(params.emission)[:, symbol]
    return total + float(np.log(alpha.sum()))


def check(params, rolls, log_likelihood: float, true_log_likelihood: float, accuracy: float) -> None:
    """The fit's log-likelihood is the NumPy forward recursion's and beats the true parameters'
    (an MLE does); the loaded die is the one that favours six; decoding beats chance."""
    assert abs(forward_log_likelihood(params, rolls) - log_likelihood) < 1e-8 * abs(log_likelihood)
    assert log_likelihood >= true_log_likelihood
    assert params.emission[LOADED, 5] > 0.4 and params.emission[FAIR].max() < 0.2
    assert accuracy > 0.7
    print("checks passed")


def plot(filename: str, rolls, dice, path, posterior_loaded, window: int = 400) -> None:
    """Save the first `window` rolls with the true and decoded dice to `filename`."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed; skipping the plot (pip install matplotlib).")
        return
    t = np.arange(min(window, len(rolls)))
    fig, axes = plt.subplots(2, 1, figsize=(11, 4.5), sharex=True)
    axes[0].plot(t, rolls[t] + 1, ".", color="0.3", markersize=3)
    axes[0].set_ylabel("face")
    axes[0].set_title("Occasionally dishonest casino: rolls, true die and decoded die")
    axes[1].fill_between(t, 0, dice[t], step="mid", color="tab:red", alpha=0.3, label="true: loaded")
    axes[1].plot(t, path[t], drawstyle="steps-mid", color="tab:blue", label="Viterbi: loaded")
    axes[1].plot(t, posterior_loaded[t], color="tab:green", lw=0.8, label="P(loaded | rolls)")
    axes[1].set_ylabel("loaded die")
    axes[1].set_xlabel("roll")
    axes[1].legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(filename, dpi=120)
    print(f"plot saved to {filename}")


if __name__ == "__main__":
    main(sys.argv[1:])
