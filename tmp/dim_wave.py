"""The wavefront column of the dimension study at given exponents (the rest of the
study is drivers/dimension_scaling.py)."""
import sys, time
sys.path.insert(0, "drivers")
import dimension_scaling as ds
from hpc_picard import linear_analysis as la
from hpc_picard.models import GaussianRandomField
for e in map(int, sys.argv[1:]):
    t = time.time()
    model = GaussianRandomField(2**e)
    lam, mult = la.grf_modes(model, 256)
    T = ds.horizon(lam, mult, 0.1)
    print(e, T, ds.fewest_wavefront_rounds(lam, mult, T, 1e-3, 0.1, la.grf_modes(model, 32)),
          f"{time.time() - t:.0f}s", flush=True)
