"""Benchmark: tumorchar's ProportionSVM against llp-learn's alterSVM (same run).

Task (issue 6): scikit-learn's breast-cancer data, standardized, 70/30 stratified split;
the training part in 8 bags of varied class mix; each bag's share of malignant-labelled
(class 1) instances is its proportion. Both methods use C = 1, C_p = 1, ε = 0, 10 restarts
and the same annealing (×1.5 from 1e-4 C). Prints test accuracy and fit time for several
seeds, their ratio, then the fit time of ProportionSVM at n = 10 000, d = 512.

Run: PYTHONPATH=src python benchmarks/bench_psvm.py [--seeds 10] [--skip-large] [--blas-threads 1]
llp-learn is only needed here (installed with --no-deps: its pins are old). BLAS threads are
limited to one for both methods by default: on a small shared machine multithreaded BLAS
oversubscribes the cores and makes every small solve tens of times slower.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
from sklearn.datasets import load_breast_cancer
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from tumorchar.models.psvm import ProportionSVM

N_BAGS = 8


def varied_bags(y: np.ndarray, n_bags: int, rng: np.random.Generator):
    """Bags of varied class mix: instances sorted by a noisy class key, cut in n_bags runs."""
    key = y + rng.normal(0.0, 0.6, size=y.size)
    order = np.argsort(key)
    bags = np.empty(y.size, dtype=np.intp)
    for k, chunk in enumerate(np.array_split(order, n_bags)):
        bags[chunk] = k
    proportions = np.array([y[bags == k].mean() for k in range(n_bags)])
    return bags, proportions


def breast_cancer_task(seed: int):
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, test_size=0.3, stratify=y, random_state=seed)
    scaler = StandardScaler().fit(X_tr)
    bags, proportions = varied_bags(y_tr, N_BAGS, np.random.default_rng(seed))
    return scaler.transform(X_tr), scaler.transform(X_te), y_te, bags, proportions


def timed_fit(model, *args):
    start = time.perf_counter()
    model.fit(*args)
    return time.perf_counter() - start


def run_peer(X_tr, bags, proportions, seed):
    from llp_learn.alter import alterSVM

    peer = alterSVM(C=1.0, C_p=1.0, d=0.5, num_exec=10, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        seconds = timed_fit(peer, X_tr, bags, proportions)
    return peer, seconds


def compare(seeds: int):
    print(f"breast cancer LLP task: {N_BAGS} bags, 70/30 split, 10 restarts each")
    print(f"{'seed':>4} {'ours acc':>9} {'peer acc':>9} {'ours s':>8} {'peer s':>8} {'speedup':>8}")
    rows = []
    for seed in range(seeds):
        X_tr, X_te, y_te, bags, proportions = breast_cancer_task(seed)
        ours = ProportionSVM(C=1.0, C_p=1.0, n_restarts=10, random_state=seed)
        t_ours = timed_fit(ours, X_tr, bags, proportions)
        peer, t_peer = run_peer(X_tr, bags, proportions, seed)
        acc_ours = float((ours.predict(X_te) == y_te).mean())
        acc_peer = float((peer.predict(X_te).clip(0, 1) == y_te).mean())
        rows.append((acc_ours, acc_peer, t_ours, t_peer))
        print(
            f"{seed:>4} {acc_ours:>9.3f} {acc_peer:>9.3f} {t_ours:>8.3f} {t_peer:>8.3f} "
            f"{t_peer / t_ours:>7.1f}x"
        )
    a_o, a_p, t_o, t_p = np.array(rows).mean(axis=0)
    print(f"mean {a_o:>9.3f} {a_p:>9.3f} {t_o:>8.3f} {t_p:>8.3f} {t_p / t_o:>7.1f}x")


def large(n: int = 10_000, d: int = 512, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    X = rng.normal(size=(n, d)) + 0.15 * (2 * y[:, None] - 1)
    bags, proportions = varied_bags(y, 20, rng)
    model = ProportionSVM(n_restarts=10, random_state=seed)
    seconds = timed_fit(model, X, bags, proportions)
    acc = float((model.predict(X) == y).mean())
    print(f"n={n}, d={d}, 20 bags, 10 restarts: fit {seconds:.1f} s (train accuracy {acc:.3f})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--skip-large", action="store_true")
    parser.add_argument("--blas-threads", type=int, default=1)
    args = parser.parse_args()
    with threadpool_limits(limits=args.blas_threads):
        print(f"BLAS threads: {args.blas_threads}")
        compare(args.seeds)
        if not args.skip_large:
            large()
