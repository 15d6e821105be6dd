"""Check a score model against the contract before a long run (``picard-check-model``).

The contract (docs/models.md): ``model.dim`` is the data dimension d, and
``model.score(x, t)`` takes a host numpy batch x of shape (B, d) and forward times t of
shape (B,) (float64, the project's clock: unit-rate OU, t = 0 at the data, t = T at
the noise end) and returns a host numpy array (B, d) of grad log p_t(x), finite, of
x's dtype, each row depending only on its own (x, t).

:func:`check_model` evaluates the model on a few points and reports each property:

- dim:         a positive integer;
- shape:       (B, d) out for (B, d) in;
- device:      the output is a numpy array on the host (not a torch or cupy array);
- dtype:       float64 in -> float64 out, float32 in -> float32 out (a warning
               otherwise: the samplers cast, but precision may be lost);
- finite:      no NaN or inf at forward times from delta to T;
- rows:        the batch's rows are independent (each row equals the row alone), which
               fails for models that mix a batch (batch norm in training mode);
- time convention: at the noise end t = T >= 5 the OU process has forgotten the data,
               p_T is N(0, I) to within e^{-2T}, so s(x, T) must be close to -x, and
               the Stein identity E[x . s(x)] = -d must hold for x ~ N(0, I). A model
               that reads t as a DDPM timestep index, or as reverse time, fails this;
- time dependence: the score changes between t = delta and t = T (a warning
               otherwise: a model ignoring t only fits a Gaussian target).

For a conditional model (``num_classes`` > 0, hpc_picard.conditioning) also:

- condition:   the label changes the score (two different labels, or a label and no
               label for a one-class model, give different scores): a model that
               ignores its labels makes --labels and guidance silently useless;
- null label:  label -1 in every row gives the same score as no labels at all
               (cond=None): the dropped label is the unconditional score that
               classifier-free guidance subtracts.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

#: the noise end must be at least this late for the N(0, I) test to mean anything
MIN_NOISE_END = 5.0
#: |s(x, T) + x| / |x| and |E[x.s]/d + 1| allowed at the noise end
NOISE_END_TOLERANCE = 0.25


@dataclass
class CheckReport:
    """One line per property: (name, "ok" | "warn" | "fail", message)."""
    results: list = field(default_factory=list)

    def add(self, name: str, status: str, message: str):
        self.results.append((name, status, message))

    @property
    def ok(self) -> bool:
        return all(status != "fail" for _, status, _ in self.results)

    def status(self, name: str) -> str:
        for n, status, _ in self.results:
            if n == name:
                return status
        raise KeyError(name)

    def text(self) -> str:
        lines = [f"  [{status:>4}] {name:<16} {message}" for name, status, message in self.results]
        lines.append("  model OK" if self.ok else "  model FAILED the checks above")
        return "\n".join(lines)


def check_model(model, T: float = 10.0, delta: float = 1e-3, points: int = 8,
                seed: int = 0, expected_dim: int | None = None) -> CheckReport:
    """Evaluate ``model`` on ``points`` states per check and report (module docstring).

    T, delta: the forward-time range the run will use (the noise end and the early
    stop); expected_dim: the d the user asked for (--dim), if any. Never raises for a bad model: every problem is a line of the report.
    """
    report = CheckReport()
    dim = getattr(model, "dim", None)
    if not isinstance(dim, (int, np.integer)) or dim <= 0:
        report.add("dim", "fail", f"model.dim must be a positive integer, got {dim!r}")
        return report
    dim = int(dim)
    if expected_dim is not None and dim != expected_dim:
        report.add("dim", "fail", f"the model has d = {dim}, but --dim {expected_dim} was given")
        return report
    report.add("dim", "ok", f"d = {dim}")
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((points, dim))
    times = np.geomspace(delta, T, points)

    try:
        out = model.score(x, times)
    except Exception as exc:           # a user's model: report whatever it raises
        report.add("call", "fail", f"score(x, t) raised {type(exc).__name__}: {exc}")
        return report

    if not isinstance(out, np.ndarray):
        report.add("device", "fail", f"score returned {type(out).__module__}.{type(out).__name__}; "
                   "it must return a numpy array on the host (copy device results back)")
        return report
    report.add("device", "ok", "host numpy output")
    if out.shape != x.shape:
        report.add("shape", "fail", f"score returned shape {out.shape} for input {x.shape}")
        return report
    report.add("shape", "ok", f"(B, d) = {out.shape}")

    dtype_notes, too_coarse = [], []
    for dtype in (np.float64, np.float32):
        got = np.asarray(model.score(x.astype(dtype), times)).dtype
        if got != dtype:
            dtype_notes.append(f"{np.dtype(dtype).name} in -> {got.name} out")
        if got not in (np.float64, np.float32):
            too_coarse.append(got.name)
    if too_coarse:
        # float16 (or integers) lose the precision the sweeps' residuals need
        report.add("dtype", "fail", "; ".join(dtype_notes) + ": scores must be float32 or float64")
        return report
    report.add("dtype", "warn" if dtype_notes else "ok",
               "; ".join(dtype_notes) if dtype_notes else "keeps float64 and float32")

    bad = ~np.isfinite(out).all(axis=1)
    if bad.any():
        report.add("finite", "fail", f"non-finite scores at forward times {times[bad].tolist()}")
        return report
    report.add("finite", "ok", f"finite at t in [{delta:g}, {T:g}]")

    single = np.stack([model.score(x[i:i + 1], times[i:i + 1])[0] for i in range(points)])
    scale = np.abs(out).max() + 1e-30
    err = float(np.abs(single - out).max() / scale)
    report.add("rows", "ok" if err < 1e-3 else "fail",
               f"rows independent (max rel. difference {err:.1e})" if err < 1e-3 else
               f"row i of a batch differs from row i alone by {err:.1e} (relative): the "
               "model mixes samples of a batch (batch norm in training mode?)")

    if T < MIN_NOISE_END:
        report.add("time convention", "warn",
                   f"not checked: T = {T:g} < {MIN_NOISE_END:g} is too early for p_T ~ N(0, I)")
    else:
        noise = rng.standard_normal((max(points, 64), dim))
        s_end = model.score(noise, np.full(len(noise), T))
        rel = float(np.linalg.norm(s_end + noise) / np.linalg.norm(noise))
        stein = float((noise * s_end).sum(axis=1).mean() / dim)
        ok = rel <= NOISE_END_TOLERANCE and abs(stein + 1.0) <= NOISE_END_TOLERANCE
        report.add("time convention", "ok" if ok else "fail",
                   f"at t = T = {T:g}: |s + x|/|x| = {rel:.3f}, E[x.s]/d = {stein:.3f} (expect 0, -1)"
                   + ("" if ok else ": the model does not see forward time t of the unit-rate "
                      "OU clock (a DDPM timestep index? reverse time? see docs/models.md)"))

    s_lo = model.score(x, np.full(points, delta))
    s_hi = model.score(x, np.full(points, T))
    change = float(np.linalg.norm(s_lo - s_hi) / (np.linalg.norm(s_hi) + 1e-30))
    report.add("time dependence", "ok" if change > 1e-3 else "warn",
               f"|s(x, delta) - s(x, T)| / |s(x, T)| = {change:.2e}"
               + ("" if change > 1e-3 else ": the score ignores t"))
    if int(getattr(model, "num_classes", 0) or 0) > 0:
        check_condition(model, x, times, report)
    return report


def check_condition(model, x: np.ndarray, times: np.ndarray, report: CheckReport):
    """The two condition checks of the module docstring, added to ``report``."""
    classes = int(model.num_classes)
    rows = np.arange(len(x))
    first = rows % classes
    other = (rows + 1) % classes if classes > 1 else np.full(len(x), -1)
    try:
        s_first = model.score(x, times, cond=first)
        s_other = model.score(x, times, cond=other)
        s_null = model.score(x, times, cond=np.full(len(x), -1))
        s_none = model.score(x, times)
    except Exception as exc:           # a user's model: report whatever it raises
        report.add("condition", "fail", f"score(x, t, cond) raised {type(exc).__name__}: {exc}")
        return
    change = float(np.linalg.norm(s_first - s_other) / (np.linalg.norm(s_first) + 1e-30))
    report.add("condition", "ok" if change > 1e-3 else "fail",
               f"another label changes the score by {change:.2e} (relative)"
               + ("" if change > 1e-3 else ": the model ignores its labels"))
    gap = float(np.abs(s_null - s_none).max() / (np.abs(s_none).max() + 1e-30))
    report.add("null label", "ok" if gap < 1e-5 else "fail",
               f"label -1 gives the unconditional score (max rel. difference {gap:.1e})"
               if gap < 1e-5 else
               f"label -1 differs from no label by {gap:.1e} (relative): the dropped label "
               "must give the unconditional score that guidance subtracts")
