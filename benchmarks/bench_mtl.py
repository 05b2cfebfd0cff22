"""Benchmark: graph-regularized sparse MTL (paper Eq. 6) by APG against cvxpy (Clarabel).

Problem: n = 1144 samples, M = 7 tasks, d = 512 and d = 4096 (the paper's fc6 size) with
synthetic fc6-like features (ReLU of correlated Gaussians, non-negative like CNN
activations), scores on a 1-5 scale, rho1 = 1, rho2 = 10 (the paper's values), one
intercept per task, the complete graph over the tasks (the time of `estimate_task_graph`
on the same data is printed too); X shared by the tasks and X per task.

Measured in the same run: the time of `GraphSparseMTL(...).fit` at its default tolerance
and the relative objective gap it reaches, against the time cvxpy + Clarabel takes on the
same (centred) problem, with F* the lower of the two solvers' objectives after a very
tight APG solve. cvxpy runs at d = 512 only unless --cvxpy-large is given (it takes many
minutes at d = 4096 here). Then a 10-value rho2 path with warm starts, and peak memory
(tracemalloc of our fit; the process's max RSS at the end). Both solvers run with one BLAS
thread by default (--blas-threads): Clarabel is single-threaded, and on this shared 2-core
machine skinny matrix products are faster on one thread.

    /work/venv/bin/python benchmarks/bench_mtl.py [--cvxpy-large] [--skip-cvxpy]
"""

from __future__ import annotations

import argparse
import resource
import time
import tracemalloc

import numpy as np
from threadpoolctl import threadpool_limits

from tumorchar.models import GraphSparseMTL
from tumorchar.models.apg import L1Penalty, MultiTaskQuadratic, apg, graph_laplacian
from tumorchar.models.mtl import graph_sparse_mtl_path
from tumorchar.models.taskgraph import estimate_task_graph, incidence_from_adjacency

RHO1, RHO2 = 1.0, 10.0


def make_problem(n, d, m, per_task, seed):
    """fc6-like features and 1-5 scores of M related tasks (shared support, similar slopes)."""
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, 64))
    mix = rng.standard_normal((64, d)) / 8.0
    base = Z @ mix
    if per_task:
        X = [np.maximum(base + 0.3 * rng.standard_normal((n, d)), 0.0) for _ in range(m)]
    else:
        X = np.maximum(base + 0.3 * rng.standard_normal((n, d)), 0.0)
    support = rng.random(d) < 0.02
    common = rng.standard_normal(d) * support
    W = common[:, None] + 0.3 * rng.standard_normal((d, m)) * support[:, None]
    Xs = X if per_task else [X] * m
    raw = np.column_stack([x @ W[:, i] for i, x in enumerate(Xs)])
    Y = 1.0 + 4.0 * (raw - raw.min(0)) / np.ptp(raw, axis=0)
    return X, Y + 0.3 * rng.standard_normal(Y.shape)


def centred(X, Y):
    Xc = [x - x.mean(0) for x in X] if isinstance(X, list) else X - X.mean(0)
    return Xc, Y - Y.mean(0)


def objective(Xc, Yc, S, W):
    """Eq. 6 on centred data (the problem `fit` solves when it fits intercepts)."""
    m = Yc.shape[1]
    Xs = Xc if isinstance(Xc, list) else [Xc] * m
    loss = sum(0.5 * np.sum((x @ W[:, i] - Yc[:, i]) ** 2) for i, x in enumerate(Xs))
    return loss + RHO1 * np.sum((W @ S) ** 2) + RHO2 * np.abs(W).sum()


def tight_optimum(Xc, Yc, S):
    L = graph_laplacian(S, Yc.shape[1])
    if isinstance(Xc, list):
        targets = [Yc[:, i] for i in range(Yc.shape[1])]
        smooth = MultiTaskQuadratic(Xc, targets, laplacian=L, rho1=RHO1)
    else:
        smooth = MultiTaskQuadratic(Xc, Yc, laplacian=L, rho1=RHO1)
    result = apg(smooth, L1Penalty(RHO2), tol=1e-12, max_iter=50000, warn=False)
    return objective(Xc, Yc, S, result.coef)


def solve_cvxpy(Xc, Yc, S):
    import cvxpy as cp

    m = Yc.shape[1]
    Xs = Xc if isinstance(Xc, list) else [Xc] * m
    start = time.perf_counter()
    W = cp.Variable((Xs[0].shape[1], m))
    loss = sum(0.5 * cp.sum_squares(x @ W[:, i] - Yc[:, i]) for i, x in enumerate(Xs))
    penalty = RHO1 * cp.sum_squares(W @ S) + RHO2 * cp.norm1(W)
    cp.Problem(cp.Minimize(loss + penalty)).solve(solver="CLARABEL")
    return time.perf_counter() - start, W.value


def timed_fit(X, Y, S, intercept):
    tracemalloc.start()
    start = time.perf_counter()
    est = GraphSparseMTL(rho1=RHO1, rho2=RHO2, graph=S, fit_intercept=intercept).fit(X, Y)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return seconds, est, peak


def run_case(n, d, m, per_task, run_cvxpy, seed, intercept=True):
    label = f"{'per-task' if per_task else 'shared'} X, n={n}, d={d}, M={m}"
    label += "" if intercept else " (no intercept, raw features)"
    X, Y = make_problem(n, d, m, per_task, seed)
    Xc, Yc = centred(X, Y) if intercept else (X, Y)
    start = time.perf_counter()
    S_estimated = estimate_task_graph(Xc, Yc)
    graph_s = time.perf_counter() - start
    S = incidence_from_adjacency(np.ones((m, m), dtype=bool))  # complete graph: all coupled
    ours_s, est, peak = timed_fit(X, Y, S, intercept)
    F_ours = objective(Xc, Yc, S, est.coef_)
    F_star = tight_optimum(Xc, Yc, S)
    row = {"case": label, "edges": S_estimated.shape[1], "graph_s": graph_s, "ours_s": ours_s}
    row.update(n_iter=est.n_iter_, peak_mib=peak / 2**20, nnz=int(np.count_nonzero(est.coef_)))
    if run_cvxpy:
        cvx_s, W_cvx = solve_cvxpy(Xc, Yc, S)
        F_cvx = objective(Xc, Yc, S, W_cvx)
        F_star = min(F_star, F_cvx)
        row.update(cvx_s=cvx_s, cvx_gap=(F_cvx - F_star) / F_star)
    row["ours_gap"] = (F_ours - F_star) / F_star
    return row


def print_row(row):
    print(
        f"{row['case']}: estimate_task_graph {row['edges']} edges ({row['graph_s']:.2f} s); "
        f"APG fit {row['ours_s']:.2f} s, {row['n_iter']} iterations, gap {row['ours_gap']:.1e}, "
        f"{row['nnz']} non-zeros, peak {row['peak_mib']:.0f} MiB (tracemalloc)"
    )
    if "cvx_s" in row:
        print(
            f"    cvxpy+Clarabel {row['cvx_s']:.1f} s, gap {row['cvx_gap']:.1e}; "
            f"ratio cvxpy / APG at the same size = {row['cvx_s'] / row['ours_s']:.0f}x"
        )


def run_path(n, d, m, seed, cold):
    X, Y = make_problem(n, d, m, False, seed)
    Xc, Yc = centred(X, Y)
    S = incidence_from_adjacency(np.ones((m, m), dtype=bool))
    rho_max = float(np.abs(Xc.T @ Yc).max())
    rhos = np.geomspace(0.5 * rho_max, RHO2, 10)
    start = time.perf_counter()
    _, n_iters, _ = graph_sparse_mtl_path(Xc, Yc, rhos, rho1=RHO1, graph=S)
    warm_s = time.perf_counter() - start
    line = (
        f"path d={d}: 10 values of rho2 from {rhos[0]:.0f} to {rhos[-1]:.0f}, warm starts "
        f"{warm_s:.2f} s ({int(n_iters.sum())} iterations)"
    )
    if cold:
        start = time.perf_counter()
        cold_iters = 0
        for rho2 in rhos:
            cold_iters += GraphSparseMTL(rho1=RHO1, rho2=rho2, graph=S).fit(Xc, Yc).n_iter_
        cold_s = time.perf_counter() - start
        line += (
            f"; cold starts {cold_s:.2f} s ({cold_iters} iterations), ratio {cold_s / warm_s:.1f}x"
        )
    print(line)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1144)
    parser.add_argument("--m", type=int, default=7)
    parser.add_argument("--d-small", type=int, default=512)
    parser.add_argument("--d-large", type=int, default=4096)
    parser.add_argument("--cvxpy-large", action="store_true", help="also run cvxpy at d-large")
    parser.add_argument("--skip-cvxpy", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--no-intercept",
        action="store_true",
        help="fit without intercepts on the raw non-negative features (ill-conditioned)",
    )
    parser.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        help="BLAS threads for both solvers (Clarabel is single-threaded); 1 by default",
    )
    args = parser.parse_args()
    print(f"BLAS threads: {args.blas_threads}")
    with threadpool_limits(args.blas_threads):
        run_all(args)


def run_all(args):

    rows = []
    for per_task in (False, True):
        for d in (args.d_small, args.d_large):
            run_cvxpy = not args.skip_cvxpy and (d == args.d_small or args.cvxpy_large)
            rows.append(
                run_case(args.n, d, args.m, per_task, run_cvxpy, args.seed, not args.no_intercept)
            )
            print_row(rows[-1])
    for per_task in (False, True):
        small, large = [r for r in rows if r["case"].startswith("per-task" if per_task else "sh")]
        if "cvx_s" in small and "cvx_s" not in large:
            print(
                f"{'per-task' if per_task else 'shared'} X: cvxpy at d={args.d_small} / APG at "
                f"d={args.d_large} = {small['cvx_s'] / large['ours_s']:.0f}x (different sizes: "
                f"cvxpy was not run at d={args.d_large}; its time grows with d)"
            )
    run_path(args.n, args.d_small, args.m, args.seed, cold=True)
    run_path(args.n, args.d_large, args.m, args.seed, cold=False)
    max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"process max RSS {max_rss:.0f} MiB (includes cvxpy)")


if __name__ == "__main__":
    main()
