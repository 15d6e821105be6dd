"""Calibrate and check the constants of hpc_picard/plans.py on the GRF.

For d in 2^6..2^14 and KL budgets eps^2 in (0.1, 0.01): the fewest sequential steps L
that reach the budget (exact linear analysis), a fit L = C U x^beta (x = d / eps^2,
U the warped length of the grid), and then the KL that the resulting --accuracy plan
reaches with piadm-sde and piadm-ode (no corrector), which must be <= eps^2.

    python drivers/calibrate_plans.py
"""
from __future__ import annotations

import math

import numpy as np

from hpc_picard import linear_analysis as la
from hpc_picard.grid import TimeGrid, warp
from hpc_picard.models import GaussianRandomField
from hpc_picard.plans import plan

from dimension_scaling import fewest_sequential_steps

DELTA = 1e-3


def main():
    rows = []
    for e in (6, 8, 10, 12, 14):
        d = 2**e
        lam, mult = la.grf_modes(GaussianRandomField(d), 128)
        for kl in (0.1, 0.01):
            x = d / kl
            T = max(2.0, 0.25 * math.log(25.0 * x))
            U = float(warp(T) - warp(DELTA))
            seq = {p: fewest_sequential_steps(p, lam, mult, T, DELTA, kl) for p in ("sde", "ode")}
            checks = {}
            for p in ("sde", "ode"):
                chosen = plan(d, math.sqrt(kl), DELTA, p)
                grid = TimeGrid.build(chosen["T"], DELTA, chosen["blocks"], chosen["steps_per_block"])
                var = la.picard_variance(grid, p, lam, chosen["picard_iters"])[-1]
                checks[p] = (la.kl_gaussian(var, la.target_variance(lam, DELTA), mult) / kl, chosen)
            rows.append((x, U, seq))
            print(f"d={d:6} kl={kl:5} x={x:9.0f} U={U:5.2f} L_sde={seq['sde']:6} L_ode={seq['ode']:6}"
                  f"  plan KL/budget sde={checks['sde'][0]:.2f} ode={checks['ode'][0]:.2f}"
                  f"  sde plan {checks['sde'][1]}", flush=True)
    for p in ("sde", "ode"):
        x = np.array([r[0] for r in rows])
        y = np.array([r[2][p] / r[1] for r in rows])
        beta, logc = np.polyfit(np.log(x), np.log(y), 1)
        print(f"{p}: L / U ~ {math.exp(logc):.4f} x^{beta:.3f}")


if __name__ == "__main__":
    main()
