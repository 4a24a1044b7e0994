"""Golden values for cidm-continual's regularizers, computed independently with numpy.

    pip install numpy safetensors
    python tools/continual_fixtures.py

Writes crates/cidm-continual/tests/fixtures/continual.safetensors: R1 in its three forms
(Subspace, PaperLiteral, ReleasedCode), R2 with dense H_i and its one gradient-descent step,
and R2 with H_i = I + U_i V_i^T and its step, on small random matrices (fixed seed). All
factors are in the paper's orientation: A (up) [out, rank], B (down) [rank, in], W* [out, in].
Computed in float64, stored as float32.
"""

from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

SHAPES = [(6, 4), (5, 7)]  # [out, in] per layer
RANKS = [3, 3, 3]  # tasks 0 and 1 are old, task 2 is the new one (A_i A_g^T needs equal ranks)
FACTOR_RANK = 2  # rank of U_i V_i^T
LR = 0.01
OUT = Path(__file__).resolve().parent.parent / "crates/cidm-continual/tests/fixtures"


def r1(old, new, form):
    overlaps = []
    for task in old:
        for a_i, a_g in zip(task, new):
            if form == "subspace":
                overlaps.append(np.abs(a_i.T @ a_g).mean())
            elif form == "paper_literal":
                overlaps.append(np.abs(a_i @ a_g.T).mean())
            else:
                overlaps.append(np.abs(a_g @ a_i.T).mean())
    value = np.mean(overlaps)
    if form == "released_code":
        value += np.mean([((a_g - 1.0) ** 2).mean() for a_g in new])
    return value


def main():
    rng = np.random.default_rng(20240605)
    t = {}

    def put(name, array):
        t[name] = np.ascontiguousarray(np.asarray(array, dtype=np.float32).reshape(np.shape(array) or (1,)))

    ups = [[rng.normal(0, 0.5, (o, r)) for (o, _) in SHAPES] for r in RANKS]
    downs = [[rng.normal(0, 0.5, (r, i)) for (_, i) in SHAPES] for r in RANKS]
    # Round inputs to float32 first so both sides start from the same numbers.
    ups = [[u.astype(np.float32).astype(np.float64) for u in task] for task in ups]
    downs = [[d.astype(np.float32).astype(np.float64) for d in task] for task in downs]
    for i, (task_up, task_down) in enumerate(zip(ups, downs)):
        for l, (u, d) in enumerate(zip(task_up, task_down)):
            put(f"up.{i}.{l}", u)
            put(f"down.{i}.{l}", d)
    old, new = ups[:-1], ups[-1]
    for form in ["subspace", "paper_literal", "released_code"]:
        put(f"r1.{form}", r1(old, new, form))

    deltas = [[u @ d for u, d in zip(tu, td)] for tu, td in zip(ups, downs)]
    f32 = lambda x: x.astype(np.float32).astype(np.float64)

    # Exact: dense H_i, random (not the identity) so every term of the gradients matters.
    w = [f32(rng.normal(0, 0.5, s)) for s in SHAPES]
    h = [[f32(np.eye(o) + rng.normal(0, 0.2, (o, o))) for (o, _) in SHAPES] for _ in RANKS]
    res = [[dw - hh @ ww for dw, hh, ww in zip(td, th, w)] for td, th in zip(deltas, h)]
    put("r2.exact.value", sum((r ** 2).sum() for task in res for r in task))
    grad_h = [[-2 * r @ ww.T for r, ww in zip(tr, w)] for tr in res]
    grad_w = [-2 * sum(h[i][l].T @ res[i][l] for i in range(len(RANKS))) for l in range(len(SHAPES))]
    for l, ww in enumerate(w):
        put(f"r2.w.{l}", ww)
        put(f"r2.exact.w_next.{l}", ww - LR * grad_w[l])
    for i in range(len(RANKS)):
        for l in range(len(SHAPES)):
            put(f"r2.exact.h.{i}.{l}", h[i][l])
            put(f"r2.exact.h_next.{i}.{l}", h[i][l] - LR * grad_h[i][l])

    # Factorised: H_i = I + U_i V_i^T, gradients by the chain rule through H.
    u = [[f32(rng.normal(0, 0.3, (o, FACTOR_RANK))) for (o, _) in SHAPES] for _ in RANKS]
    v = [[f32(rng.normal(0, 0.3, (o, FACTOR_RANK))) for (o, _) in SHAPES] for _ in RANKS]
    hf = [[np.eye(uu.shape[0]) + uu @ vv.T for uu, vv in zip(tu, tv)] for tu, tv in zip(u, v)]
    res = [[dw - hh @ ww for dw, hh, ww in zip(td, th, w)] for td, th in zip(deltas, hf)]
    put("r2.factorised.value", sum((r ** 2).sum() for task in res for r in task))
    for l, ww in enumerate(w):
        gw = -2 * sum(hf[i][l].T @ res[i][l] for i in range(len(RANKS)))
        put(f"r2.factorised.w_next.{l}", ww - LR * gw)
    for i in range(len(RANKS)):
        for l in range(len(SHAPES)):
            gh = -2 * res[i][l] @ w[l].T
            put(f"r2.factorised.u.{i}.{l}", u[i][l])
            put(f"r2.factorised.v.{i}.{l}", v[i][l])
            put(f"r2.factorised.u_next.{i}.{l}", u[i][l] - LR * gh @ v[i][l])
            put(f"r2.factorised.v_next.{i}.{l}", v[i][l] - LR * gh.T @ u[i][l])
    put("r2.lr", LR)

    OUT.mkdir(parents=True, exist_ok=True)
    save_file(t, str(OUT / "continual.safetensors"))


if __name__ == "__main__":
    main()
