"""The Gaussian random field's score on any array backend (cupy on a GPU).

Same target and same filter as :class:`~hpc_picard.models.grf.GaussianRandomField`,
written against an array module ``xp`` (numpy or cupy) so that the FFTs of a rank's
whole batch run on its GPU. Input and output stay numpy on the host, the samplers'
side of the seam; only the filter runs on the device.
"""
from __future__ import annotations

import numpy as np

from .grf import GaussianRandomField
from .. import devices

#: fraction of the free GPU memory one chunk may take
GPU_MEMORY_FRACTION = 0.5


class DeviceGaussianRandomField(GaussianRandomField):
    """GaussianRandomField whose score runs on ``xp`` (numpy, or cupy for --device cuda)."""

    def __init__(self, dim: int, k0: float = 4.0, alpha: float = 2.0, xp=np):
        super().__init__(dim, k0=k0, alpha=alpha)
        self.xp = xp
        # _eig_half is a strided view of the full spectrum: copy it contiguous first
        self._eig_half_xp = xp.asarray(np.ascontiguousarray(self._eig_half))
        #: the sweep engine keeps this model's states as cupy arrays on a GPU (arrays.py)
        self.array_backend = "numpy" if xp is np else "cupy"

    def preferred_batch(self) -> int:
        """Rows per call: on a GPU half the free memory over the per-row footprint of
        the transforms (about 6 float64 copies of a state); on the host, 2^18 numbers."""
        if self.xp is np:
            return max(1, (1 << 18) // self.dim)
        free, _ = self.xp.cuda.runtime.memGetInfo()
        free += self.xp.get_default_memory_pool().free_bytes()   # cupy's cached blocks
        return max(1, devices.gpu_memory_budget(free, GPU_MEMORY_FRACTION) // (6 * 8 * self.dim))

    def score(self, x, t):
        """x: (B, d) host array, t: (B,) forward times -> (B, d) host array, x's dtype;
        an xp (cupy) array in, an xp array out (the engine's states stay on the GPU)."""
        xp, n = self.xp, self.n
        if xp is not np and isinstance(x, xp.ndarray):
            return self._filter(x.astype(xp.float64, copy=False), t).astype(x.dtype, copy=False)
        x = np.asarray(x)
        s = self._filter(xp.asarray(x, dtype=xp.float64), t)
        return devices.to_host(s).astype(x.dtype, copy=False)

    def _filter(self, xd, t):
        """The score on xp: xd (B, d) float64 on the device -> (B, d) float64."""
        xp, n = self.xp, self.n
        td = xp.asarray(np.ascontiguousarray(np.broadcast_to(np.asarray(t, dtype=np.float64),
                                                             (xd.shape[0],))))
        level = xp.exp(-2.0 * td)[:, None, None]
        # 1 - e^{-2t} as expm1, like the numpy reference: near t = delta the plain
        # difference loses digits, and the two must agree to 1e-12 (tests/gpu)
        variance = -xp.expm1(-2.0 * td)[:, None, None]
        f = xp.fft.rfft2(xd.reshape(-1, n, n), norm="ortho")
        f /= self._eig_half_xp[None] * level + variance
        return -xp.fft.irfft2(f, s=(n, n), norm="ortho").reshape(xd.shape)
