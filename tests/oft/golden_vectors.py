"""Golden vectors for the oft:: ops, produced by PEFT's own OFT rotation module in fp64.

  golden_vectors.py check [JSON]   PEFT (the version in .venv) reproduces the committed values (1e-6)
  golden_vectors.py write [JSON]   rewrite the JSON from PEFT

The case (docs/method.md §9): r = 2 blocks of b = 4 (d = 8), two fixed packed rows of Q in PEFT's
row-major strict-upper-triangle order, and a fixed 2 x 8 input. Recorded: both Cayley-Neumann blocks
(k = 5), x rotated by them, and the exact-Cayley blocks (use_cayley_neumann = False).
tests/oft/ops_test.cc compares our ops against the same JSON.
"""
import json
import os
import sys

import peft
import torch
from peft.tuners.oft.layer import OFTRotationModule

TOL = 1e-6
PACKED = [[0.10, -0.20, 0.05, 0.30, -0.10, 0.15], [-0.05, 0.02, 0.12, -0.08, 0.20, 0.07]]
X = [[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8], [0.9, 1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6]]
BLOCK, TERMS = 4, 5


def rounded(t):
    """Six decimals, as committed: a later PEFT must agree within TOL, not bit for bit."""
    return [[round(v, 6) for v in row] if not isinstance(row[0], list) else
            [[round(v, 6) for v in r] for r in row] for row in t.tolist()]


def from_peft(keep=rounded):
    """Every value through PEFT's code paths: _cayley_batch for R, forward() for x R."""
    out = {"block_size": BLOCK, "num_cayley_neumann_terms": TERMS, "packed": PACKED, "x": X,
           "peft_version": peft.__version__}
    for use_cnp, key in ((True, "cayley_neumann"), (False, "exact_cayley")):
        mod = OFTRotationModule(r=2, n_elements=6, block_size=BLOCK, in_features=8,
                                use_cayley_neumann=use_cnp, num_cayley_neumann_terms=TERMS).double()
        with torch.no_grad():
            mod.weight.copy_(torch.tensor(PACKED, dtype=torch.float64))
            rot = mod._cayley_batch(mod.weight, BLOCK, use_cnp, TERMS)
            x_rot = mod(torch.tensor(X, dtype=torch.float64))
        out[key] = {"rotation": keep(rot), "x_rot": keep(x_rot)}
    return out


def max_abs(a, b):
    return (torch.tensor(a, dtype=torch.float64) - torch.tensor(b, dtype=torch.float64)).abs().max().item()


def main():
    mode = sys.argv[1] if len(sys.argv) > 1 else "check"
    path = sys.argv[2] if len(sys.argv) > 2 else os.path.join(os.path.dirname(__file__), "golden_vectors.json")
    if mode == "write":
        got = from_peft()
        with open(path, "w") as f:
            json.dump(got, f, indent=None, separators=(", ", ": "))
            f.write("\n")
        print(f"wrote {path} from PEFT {peft.__version__}")
        return 0
    if mode != "check":
        print(__doc__)
        return 2
    got = from_peft(keep=lambda t: t.tolist())  # full fp64: the committed 6 decimals must be within TOL
    with open(path) as f:
        want = json.load(f)
    worst = 0.0
    for key in ("packed", "x"):
        if want[key] != got[key]:
            print(f"FAIL: {key} in {path} differs from this script's inputs")
            return 1
    for key in ("cayley_neumann", "exact_cayley"):
        for field in ("rotation", "x_rot"):
            err = max_abs(want[key][field], got[key][field])
            worst = max(worst, err)
            status = "ok" if err <= TOL else "FAIL"
            print(f"{status}: {key}.{field} max |committed - PEFT {peft.__version__}| = {err:.3g} (tol {TOL})")
    return 0 if worst <= TOL else 1


if __name__ == "__main__":
    sys.exit(main())
