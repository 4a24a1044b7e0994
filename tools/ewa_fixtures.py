"""Golden values for cidm-ewa's elastic weight aggregation, computed independently with numpy.

    pip install numpy safetensors
    python tools/ewa_fixtures.py [OUTPUT]

Writes crates/cidm-ewa/tests/fixtures/ewa.safetensors (or OUTPUT): random prompt rows per
layer, random concept rows per task and layer, and the weights of both variants of
METHOD.md section 4, written as the released code's formula reads:

    code:  M_i = mean_k max_p cos(c_p, e_ik)         w = M^4 / sum(M^4)
    paper: M_i = max_p  c_p . mean_k(e_ik)           w = M^2 / ||M^2||_2

cos is torch.nn.functional.cosine_similarity (dot / max(|a| |b|, 1e-8)). Inputs are rounded
to float32 first, the arithmetic is float64, outputs are stored as float64.
"""

import sys
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file

LAYERS = 3
DIM = 8
PROMPT_POSITIONS = 6
TASK_POSITIONS = [1, 2, 3]  # concept-token positions per task
DEFAULT_OUT = Path(__file__).resolve().parent.parent / "crates/cidm-ewa/tests/fixtures/ewa.safetensors"


def cosine(a, b):
    # a [P, d], b [K, d] -> [P, K]
    dots = a @ b.T
    norms = np.linalg.norm(a, axis=1)[:, None] * np.linalg.norm(b, axis=1)[None, :]
    return dots / np.maximum(norms, 1e-8)


def code_weights(prompt, concepts):
    m = np.array([cosine(prompt, e).max(axis=0).mean() for e in concepts])
    p = m ** 4
    return p / p.sum()


def paper_weights(prompt, concepts):
    m = np.array([(prompt @ e.mean(axis=0)).max() for e in concepts])
    p = m ** 2
    return p / np.linalg.norm(p)


def main():
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    rng = np.random.default_rng(20241022)
    f32 = lambda x: x.astype(np.float32).astype(np.float64)
    tensors = {}
    for l in range(LAYERS):
        # A shared direction makes the relations positive and different, as real CLIP rows are.
        common = rng.normal(0, 1, DIM)
        prompt = f32(common + rng.normal(0, 1, (PROMPT_POSITIONS, DIM)))
        concepts = [f32(common * (0.5 + i) + rng.normal(0, 1, (n, DIM))) for i, n in enumerate(TASK_POSITIONS)]
        tensors[f"prompt.{l}"] = prompt.astype(np.float32)
        for i, e in enumerate(concepts):
            tensors[f"concept.{i}.{l}"] = e.astype(np.float32)
        tensors[f"code.{l}"] = code_weights(prompt, concepts)
        tensors[f"paper.{l}"] = paper_weights(prompt, concepts)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
