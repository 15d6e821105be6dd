import sys, time, math
sys.path.insert(0, "drivers")
import dimension_scaling as ds
from hpc_picard import linear_analysis as la
from hpc_picard.grid import TimeGrid
from hpc_picard.models import GaussianRandomField
e, total, active, tol = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
t = time.time()
model = GaussianRandomField(2**e)
lam, mult = la.grf_modes(model, 256)
T = ds.horizon(lam, mult, 0.1)
lam_p, mult_p = la.grf_modes(model, 32)
blocks = math.ceil(total / 32)
grid = TimeGrid.build(T, 1e-3, blocks, 32)
var, rounds, ev = la.wavefront_variance(grid, "sde", lam_p, mult_p, 32, tol, active, linear="ou")
print(e, T, blocks * 32, active, tol, "rounds", rounds, "evals", ev, "KL", la.kl_gaussian(var, la.target_variance(lam_p, 1e-3), mult_p), f"{time.time()-t:.0f}s", flush=True)
