"""Anderson acceleration of the Picard sweeps (ParaTAA-style, triangular).

A block's sweep is a fixed-point map Y -> F(Y) on the whole trajectory (Y_0 .. Y_{M-1},
the states whose scores the next sweep evaluates). Plain sweeps iterate Y <- F(Y).
Anderson mixing of depth m keeps the last m differences of the images G_i = F(Y_i) and
of the residuals f_i = G_i - Y_i and takes

    Y_{k+1} = G_k - sum_a gamma_a dG_a,   gamma = argmin | f_k - sum_a gamma_a df_a |^2.

The map is lower triangular in time (slice m depends only on slices before it), so, as
in ParaTAA (Tang et al., ICML 2024), the least-squares problem for slice m uses only the
residuals of slices <= m: each slice and sample gets its own small m x m normal
equations, whose sums over slices are a prefix sum (an MPI Exscan of m x m matrices
between ranks). A slice whose predecessors have converged (f = 0 on them) gets gamma = 0, so the
"first k+1 points exact after k sweeps" property of plain sweeps is kept, and K = M
sweeps still reproduce the sequential sampler.
"""
from __future__ import annotations

import numpy as np

ACCELERATIONS = ("none", "anderson")


class AndersonMixer:
    """Triangular Anderson mixing for one block's sweeps on one rank.

    depth:          m, the number of past differences used;
    regularization: Tikhonov weight relative to the mean diagonal of the normal matrix.
    """

    def __init__(self, comm, depth: int = 3, regularization: float = 1e-6):
        self.comm = comm
        self.depth = int(depth)
        self.regularization = float(regularization)
        self.reset()

    def reset(self):
        """Forget the history: call at the start of every block."""
        self._last = None          # (iterate, image) of the previous sweep
        self._df, self._dg = [], []

    def mix(self, iterate: np.ndarray, image: np.ndarray) -> np.ndarray:
        """Next iterate from this sweep's iterate Y_k and image F(Y_k).

        Both have shape (J, S, d): the J slices whose states this rank scores, in time
        order, float64. Returns a new array of the same shape.
        """
        residual = image - iterate
        if self._last is not None:
            last_iterate, last_image = self._last
            self._df.append(residual - (last_image - last_iterate))
            self._dg.append(image - last_image)
            del self._df[:-self.depth], self._dg[:-self.depth]
        self._last = (iterate.copy(), image.copy())
        if not self._df:
            return image.copy()
        return triangular_mix(self.comm, image, residual, np.stack(self._df),
                              np.stack(self._dg), self.regularization)


def triangular_mix(comm, image, residual, df, dg, regularization: float) -> np.ndarray:
    """G - sum_a gamma_a dG_a for J slices of this rank, in time order, with gamma from
    the triangular least squares (ParaTAA): slice j solves the normal equations summed
    over the slices before it, on every rank (an Exscan of this rank's totals).

    image, residual: (J, S, d); df, dg: (m, J, S, d), float64. Collective over ``comm``
    (a rank with J = 0 takes part). Returns a new (J, S, d) array.
    """
    m = df.shape[0]
    normal = np.einsum("ajsd,bjsd->jsab", df, df)             # (J, S, m, m)
    rhs = np.einsum("ajsd,jsd->jsa", df, residual)            # (J, S, m)
    # Triangular least squares: slice j sums the equations of the slices before it,
    # across ranks too (Exscan of this rank's totals). Its own residual is left out:
    # the image G_k at j already corrects it, and a converged prefix then gives
    # gamma = 0, so G_k at j stays exact.
    J, S = normal.shape[:2]
    totals = np.concatenate([normal.sum(axis=0).reshape(S, -1), rhs.sum(axis=0)], axis=1)
    normal = np.cumsum(normal, axis=0) - normal
    rhs = np.cumsum(rhs, axis=0) - rhs
    offset = comm.exscan_sum(totals)
    normal += offset[:, :m * m].reshape(S, m, m)
    rhs += offset[:, m * m:]
    if J == 0:
        return image.copy()
    diag = np.trace(normal, axis1=2, axis2=3) / m
    ridge = regularization * diag + np.finfo(np.float64).tiny
    normal += ridge[..., None, None] * np.eye(m)
    gamma = np.linalg.solve(normal, rhs[..., None])[..., 0]   # (J, S, m)
    return image - np.einsum("jsa,ajsd->jsd", gamma, dg)


class WindowMixer(AndersonMixer):
    """Triangular Anderson mixing of the wavefront's window (samplers/wavefront.py).

    The window slides and its rows change ranks between rounds, so the history is kept
    per row, in an array that travels with the window's states: a row holds (last
    residual, last image, the m newest differences of the residuals, the m newest of
    the images), shape (J, 2 + 2m, S, d) for J rows (:meth:`empty_history`). ``count``,
    the same on every rank, is the number of differences made so far (at most m).
    Rows that entered the window since the last mix (``fresh``) have no last pair:
    their differences are zero, so their equations add nothing to the least squares.
    """

    def reset(self):
        """Forget the history: call at the start of every run."""
        self.count = 0
        self.mixed = False

    def empty_history(self, rows: int, row_shape: tuple) -> np.ndarray:
        return np.zeros((rows, 2 + 2 * self.depth) + tuple(row_shape))

    def mix(self, iterate, image, history, fresh) -> np.ndarray:
        """Next iterate of J rows from their iterate and image, (J, S, d) float64.

        history: their (J, 2 + 2m, S, d) rows, updated in place; fresh: (J,) bool.
        Collective over ``comm`` (ranks with J = 0 take part). Returns a new array.
        """
        m = self.depth
        residual = image - iterate
        if self.mixed:
            keep = (~np.asarray(fresh, dtype=bool)).reshape((-1,) + (1,) * (residual.ndim - 1))
            df, dg = history[:, 2:2 + m], history[:, 2 + m:]
            df[:, :-1], dg[:, :-1] = df[:, 1:].copy(), dg[:, 1:].copy()     # oldest out
            df[:, -1] = (residual - history[:, 0]) * keep
            dg[:, -1] = (image - history[:, 1]) * keep
            self.count = min(self.count + 1, m)
        history[:, 0], history[:, 1] = residual, image
        self.mixed = True
        if self.count == 0:
            return image.copy()
        newest = slice(m - self.count, m)
        return triangular_mix(self.comm, image, residual,
                              np.moveaxis(history[:, 2:2 + m][:, newest], 1, 0),
                              np.moveaxis(history[:, 2 + m:][:, newest], 1, 0),
                              self.regularization)
