"""Rounds against dimension on the GRF, at a fixed total KL (the headline study).

For d = 2^8 .. 2^16 and each sampler, find the fewest rounds (the critical path: steps
for the sequential samplers, sum of sweeps for the Picard ones) whose output reaches
KL(output || p_delta) <= --kl. Every sampler is linear on the GRF, so the KL is computed
exactly from per-mode variances (hpc_picard.linear_analysis), not estimated from samples.

Search, per d (T chosen so that the initial law's error is 1% of the KL budget):
- sequential-sde / sequential-ode: the fewest steps L (bisection);
- piadm-sde / piadm-ode: for blocks N in a candidate set and slices per block
  M = ceil(L_f / N), L_f the sequential steps that reach a fraction f of the budget
  (f in 0.5, 0.8), the fewest sweeps K per block; rounds = N K (plus the corrector's
  sweeps for piadm-ode, tried without a corrector and with 4 or 16 corrector slices,
  each run to its exact fixed point); the minimum over all of these;
- paradigms: window p = --window, total slices L_f as above, tol in 3, 1, 0.3, 0.1, 0.03;
  rounds from the expected residual (linear_analysis.paradigms_variance), on
  --paradigms-bins eigenvalue bins (the covariance of the window costs ~ p^3 per bin).
- piadm-sde --schedule wavefront (column "wavefront"): total slices L_f as above, split
  into blocks of M = 32 slices, W = 2, 4 or 8 blocks in flight (a width of W M = 64,
  128 or 256 slices scored per round; 64 is paradigms' window), the linear part "ou",
  K = M (no cap), tol as for paradigms (loosest first); rounds from the expected
  residual (linear_analysis.wavefront_variance) on the same bins as paradigms. The
  column is the fewest rounds over W; the plans column lists every W's rounds, since
  the rounds at this tolerance are set by the width (docs/samplers.md).

Prints the table and writes docs/figures/dimension_scaling.{png,json}.

    python drivers/dimension_scaling.py [--kl 0.1] [--exponents 8 10 12 14 16]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

from hpc_picard import linear_analysis as la
from hpc_picard.grid import TimeGrid
from hpc_picard.models import GaussianRandomField
from hpc_picard.samplers.corrector import LangevinCorrector

BLOCK_CANDIDATES = (2, 3, 4, 6, 8, 12, 16, 24, 32, 48)
BUDGET_FRACTIONS = (0.5, 0.8)
MAX_SWEEPS = 48


def horizon(lam, mult, kl):
    """T with sum_k mult (1 - lambda)^2 e^{-4T} / 4 (the initial law's KL) = kl / 100."""
    excess = float((mult * (1 - lam) ** 2).sum())
    return max(2.0, 0.25 * math.log(25.0 * excess / kl))


def fewest_sequential_steps(path, lam, mult, T, delta, kl):
    target = la.target_variance(lam, delta)

    def ok(steps):
        grid = TimeGrid.build(T, delta, 1, steps)
        return la.kl_gaussian(la.sequential_variance(grid, path, lam), target, mult) <= kl

    hi = 8
    while not ok(hi):
        hi *= 2
    lo = hi // 2
    while hi - lo > max(1, lo // 200):          # 0.5% resolution is plenty on a log plot
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if ok(mid) else (mid, hi)
    return hi


def fewest_picard_rounds(path, lam, mult, T, delta, kl, corrector=None):
    """(rounds, blocks, slices per block, sweeps) of the cheapest plan found."""
    target = la.target_variance(lam, delta)
    best = None
    for fraction in BUDGET_FRACTIONS:
        total = fewest_sequential_steps(path, lam, mult, T, delta, fraction * kl)
        for blocks in BLOCK_CANDIDATES:
            slices = math.ceil(total / blocks)
            sweeps = min(slices, MAX_SWEEPS)
            grid = TimeGrid.build(T, delta, blocks, slices)
            var = la.picard_variance(grid, path, lam, sweeps, corrector=corrector)
            kls = np.array([la.kl_gaussian(v, target, mult) for v in var])
            good = np.flatnonzero(kls <= kl)
            if not good.size:
                continue
            k = int(good[0]) + 1
            extra = corrector.sweeps if corrector is not None else 0
            rounds = blocks * (k + extra)
            if best is None or rounds < best[0]:
                best = (rounds, blocks, slices, k)
    return best


def fewest_paradigms_rounds(lam, mult, T, delta, kl, window, bins_lam):
    """(rounds, total slices, tol) of the cheapest ParaDiGMS run found (window fixed)."""
    lam_p, mult_p = bins_lam
    target = la.target_variance(lam_p, delta)
    best = None
    for fraction in BUDGET_FRACTIONS:
        total = fewest_sequential_steps("sde", lam, mult, T, delta, fraction * kl)
        grid = TimeGrid.build(T, delta, 1, total)
        # Looser tolerances take fewer rounds: the first one within budget is the best.
        for tol in PARADIGMS_TOLERANCES:
            var, rounds = la.paradigms_variance(grid, lam_p, mult_p, window, tol)
            if la.kl_gaussian(var, target, mult_p) <= kl:
                if best is None or rounds < best[0]:
                    best = (rounds, total, tol)
                break
    return best


def fewest_wavefront_rounds(lam, mult, T, delta, kl, bins_lam):
    """{W: (rounds, total slices, slices per block, W, tol, evaluations per sample, KL)}:
    the cheapest wavefront run found for each number W of blocks in flight."""
    lam_p, mult_p = bins_lam
    target = la.target_variance(lam_p, delta)
    best = {}
    for fraction in BUDGET_FRACTIONS:
        total = fewest_sequential_steps("sde", lam, mult, T, delta, fraction * kl)
        blocks = math.ceil(total / WAVEFRONT_SLICES)
        grid = TimeGrid.build(T, delta, blocks, WAVEFRONT_SLICES)
        for active in WAVEFRONT_ACTIVE:
            for tol in PARADIGMS_TOLERANCES:
                var, rounds, evaluations = la.wavefront_variance(
                    grid, "sde", lam_p, mult_p, WAVEFRONT_SLICES, tol, active, linear="ou")
                found = la.kl_gaussian(var, target, mult_p)
                if found <= kl:
                    if active not in best or rounds < best[active][0]:
                        best[active] = (rounds, blocks * WAVEFRONT_SLICES, WAVEFRONT_SLICES,
                                        active, tol, evaluations, found)
                    break
    return best


WAVEFRONT_SLICES = 32
WAVEFRONT_ACTIVE = (2, 4, 8)
#: corrector settings tried for piadm-ode: None, or (slices = sweeps)
CORRECTORS = (None, 4, 16)
PARADIGMS_TOLERANCES = (3.0, 1.0, 0.3, 0.1, 0.03)    # loosest first


def study(exponents, kl, delta, bins, window, paradigms_bins, wavefront=True):
    rows = []
    for e in exponents:
        d = 2**e
        model = GaussianRandomField(d)
        lam, mult = la.grf_modes(model, bins)
        T = horizon(lam, mult, kl)
        start = time.perf_counter()
        row = {"d": d, "T": T}
        for path in ("sde", "ode"):
            row[f"sequential-{path}"] = fewest_sequential_steps(path, lam, mult, T, delta, kl)
        row["piadm-sde-plan"] = fewest_picard_rounds("sde", lam, mult, T, delta, kl)
        options = []
        for steps in CORRECTORS:
            corrector = None if steps is None else LangevinCorrector(
                steps=steps, duration=1.0, friction=2.0, sweeps=steps, tol=0.0)
            found = fewest_picard_rounds("ode", lam, mult, T, delta, kl, corrector)
            if found:
                options.append(found + (steps or 0,))
        row["piadm-ode-plan"] = min(options) if options else None
        row["paradigms-plan"] = fewest_paradigms_rounds(
            lam, mult, T, delta, kl, window, la.grf_modes(model, paradigms_bins)) \
            if window else None
        per_width = fewest_wavefront_rounds(
            lam, mult, T, delta, kl, la.grf_modes(model, paradigms_bins)) if wavefront else {}
        row["wavefront-widths"] = {str(w): plan for w, plan in per_width.items()}
        row["wavefront-plan"] = min(per_width.values()) if per_width else None
        for name in ("piadm-sde", "piadm-ode", "paradigms", "wavefront"):
            row[name] = row[f"{name}-plan"][0] if row[f"{name}-plan"] else None
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        print(format_row(row), flush=True)
    return rows


SAMPLERS = ("sequential-sde", "piadm-sde", "paradigms", "wavefront", "sequential-ode", "piadm-ode")


def describe_plans(row) -> str:
    sde, ode, para = row["piadm-sde-plan"], row["piadm-ode-plan"], row["paradigms-plan"]
    wave = row.get("wavefront-plan")
    parts = [f"sde N={sde[1]} M={sde[2]} K={sde[3]}" if sde else "sde -",
             f"ode N={ode[1]} M={ode[2]} K={ode[3]} Mc={ode[4]}" if ode else "ode -",
             f"paradigms L={para[1]} tol={para[2]}" if para else "paradigms -",
             f"wavefront L={wave[1]} M={wave[2]} W={wave[3]} (width {wave[2] * wave[3]}) "
             f"tol={wave[4]} evals={wave[5]}" if wave else "wavefront -"]
    widths = row.get("wavefront-widths") or {}
    if widths:
        parts.append("wavefront rounds by width: " + ", ".join(
            f"{p[2] * p[3]}: {p[0]}" for _, p in sorted(widths.items(), key=lambda kv: int(kv[0]))))
    return "; ".join(parts)


def format_row(row):
    cells = [f"{row['d']:>7}", f"{row['T']:5.2f}"]
    cells += [f"{row[s] if row[s] is not None else '-':>14}" for s in SAMPLERS]
    return " ".join(cells) + "  " + describe_plans(row)


def fit_growth(rows, name):
    """Exponent b of rounds ~ d^b (least squares on log-log) and of rounds ~ (log d)^b."""
    d = np.array([r["d"] for r in rows if r[name]], dtype=float)
    y = np.array([r[name] for r in rows if r[name]], dtype=float)
    if len(d) < 2:
        return None, None
    power = np.polyfit(np.log(d), np.log(y), 1)[0]
    polylog = np.polyfit(np.log(np.log(d)), np.log(y), 1)[0]
    return float(power), float(polylog)


def plot(rows, path, kl):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, style in zip(SAMPLERS, ("o-", "s-", "^-", "v-", "o--", "s--")):
        d = [r["d"] for r in rows if r[name]]
        y = [r[name] for r in rows if r[name]]
        power, polylog = fit_growth(rows, name)
        label = name if power is None else f"{name}: ~ d^{power:.2f} (~ log(d)^{polylog:.1f})"
        ax.loglog(d, y, style, base=2, label=label)
    ax.set_xlabel("dimension d")
    ax.set_ylabel("rounds (critical path)")
    ax.set_title(f"GRF, KL(output || p_delta) <= {kl}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--exponents", type=int, nargs="+", default=[8, 10, 12, 14, 16])
    parser.add_argument("--kl", type=float, default=0.1, help="total KL budget (nats)")
    parser.add_argument("--delta", type=float, default=1e-3)
    parser.add_argument("--bins", type=int, default=256, help="eigenvalue bins (0: exact)")
    parser.add_argument("--window", type=int, default=64, help="paradigms window (0: skip)")
    parser.add_argument("--paradigms-bins", type=int, default=32,
                        help="eigenvalue bins of the paradigms analysis (its cost is ~ p^3)")
    parser.add_argument("--no-wavefront", action="store_true", help="skip the wavefront column")
    parser.add_argument("--out", default="docs/figures")
    args = parser.parse_args()
    print(f"{'d':>7} {'T':>5} " + " ".join(f"{s:>14}" for s in SAMPLERS) + "  plans")
    rows = study(args.exponents, args.kl, args.delta, args.bins, args.window, args.paradigms_bins,
                 not args.no_wavefront)
    print()
    for name in SAMPLERS:
        power, polylog = fit_growth(rows, name)
        if power is not None:
            print(f"{name:<15} rounds ~ d^{power:.3f}   (or ~ (log d)^{polylog:.2f})")
    last = rows[-1]
    for seq, par in (("sequential-sde", "piadm-sde"), ("sequential-sde", "paradigms"),
                     ("sequential-sde", "wavefront"), ("sequential-ode", "piadm-ode")):
        if last[par]:
            print(f"d = {last['d']}: {seq} / {par} = {last[seq] / last[par]:.1f}x")
    if last.get("paradigms"):
        for plan in sorted((last.get("wavefront-widths") or {}).values(), key=lambda p: p[3]):
            print(f"d = {last['d']}: wavefront (width {plan[2] * plan[3]}, KL {plan[6]:.3f}) / "
                  f"paradigms (window {args.window}) rounds = {plan[0]} / {last['paradigms']} "
                  f"= {plan[0] / last['paradigms']:.2f}")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "dimension_scaling.json"), "w") as fh:
        json.dump({"kl": args.kl, "delta": args.delta, "bins": args.bins, "rows": rows}, fh,
                  indent=1)
    plot(rows, os.path.join(args.out, "dimension_scaling.png"), args.kl)


if __name__ == "__main__":
    main()
