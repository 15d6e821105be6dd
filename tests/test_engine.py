"""The sweep engine (samplers/engine.py): no wasted evaluations, array backends, moves."""
import numpy as np
import pytest

from hpc_picard.config import RunConfig
from hpc_picard.grid import TimeGrid
from hpc_picard.models import build_model
from hpc_picard.parallel import Communicator
from hpc_picard.runner import initial_state, run
from hpc_picard.samplers import PicardSampler, SamplerContext, SequentialSampler
from hpc_picard.samplers.engine import row_plan

torch = pytest.importorskip("torch")

SMALL = dict(model="grf", dim=16, num_samples=3, blocks=8, steps_per_block=6, picard_iters=6,
             tol=0.01, seed=5)
# Every sampler that runs on the engine, with its sweep variants.
VARIANTS = [("piadm-sde", {}), ("piadm-sde", {"initial_guess": "noise"}),
            ("piadm-sde", {"accelerate": "anderson"}), ("piadm-ode", {}),
            ("paradigms", {"window": 5}), ("paradigms", {"window": 3, "paradigms_form": "additive"})]


class CountingModel:
    """A model that counts the score rows it is asked for."""

    def __init__(self, model):
        self.model, self.dim, self.rows = model, model.dim, 0

    def score(self, x, t):
        self.rows += len(x)
        return self.model.score(x, t)

    def parameters(self):
        return self.model.parameters()


@pytest.mark.parametrize("sampler, options", VARIANTS)
def test_stats_count_the_evaluations_actually_made(sampler, options):
    cfg = RunConfig(**SMALL, sampler=sampler, **options)
    model = CountingModel(build_model(cfg))
    result = run(cfg, Communicator.self_comm(), model=model)
    assert model.rows == result.stats["evaluations"] * cfg.num_samples


def test_exact_and_converged_slices_are_not_re_evaluated():
    """tol = 0: sweep k scores only slices k-1 .. M-1 (the earlier ones are exact);
    tol > 0 freezes more, at an accuracy close to the sequential sampler's."""
    cfg = RunConfig(**{**SMALL, "tol": 0.0, "blocks": 8, "steps_per_block": 8, "picard_iters": 5})
    exact = run(cfg, Communicator.self_comm())
    assert exact.stats["evaluations"] == 8 * sum(8 - k for k in range(5))
    loose = run(cfg.replace(tol=0.05, picard_iters=8), Communicator.self_comm())
    sequential = run(cfg.replace(sampler="sequential-sde"), Communicator.self_comm())
    sweeps = loose.per_block["sweeps_per_block"]
    assert loose.stats["evaluations"] < 8 * sweeps.sum()
    scale = np.abs(sequential.samples).max()
    assert np.abs(loose.samples - sequential.samples).max() < 0.05 * scale


@pytest.mark.parametrize("sampler, options", VARIANTS)
def test_torch_backend_equals_numpy(sampler, options):
    cfg = RunConfig(**SMALL, sampler=sampler, **options)
    numpy_run = run(cfg.replace(array_backend="numpy"), Communicator.self_comm())
    torch_run = run(cfg.replace(array_backend="torch"), Communicator.self_comm())
    np.testing.assert_allclose(torch_run.samples, numpy_run.samples, rtol=0, atol=1e-12)
    assert torch_run.stats["evaluations"] == numpy_run.stats["evaluations"]
    assert torch_run.stats["rounds"] == numpy_run.stats["rounds"]


def test_torch_backend_with_M_sweeps_equals_sequential():
    cfg = RunConfig(model="gmm", dim=3, gmm_components=3, gmm_radius=3.0, seed=11)
    model = build_model(cfg)
    grid = TimeGrid.build(10.0, 1e-3, 4, 7)
    from hpc_picard.arrays import make_backend

    def context(backend):
        return SamplerContext(model=model, comm=Communicator.self_comm(), samples=np.arange(4),
                              dtype=np.dtype("float64"), seed=11,
                              backend=make_backend(backend, model))
    picard = PicardSampler(context("torch"), picard_iters=7, tol=0.0)
    seq = SequentialSampler(context("numpy"))
    y_seq = y_pic = initial_state(cfg, np.arange(4), 3)
    for block in grid.blocks:
        y_seq, _ = seq.run_block(block, y_seq)
        y_pic, _ = picard.run_block(block, y_pic)
        np.testing.assert_allclose(y_pic, y_seq, rtol=1e-10, atol=1e-12 * np.abs(y_seq).max())


def test_row_plan_moves_each_wanted_position_from_its_one_holder():
    held = [(0, 3), (3, 5), (5, 8)]             # rank 2 also holds the old end, position 7
    wanted = [(2, 5), (5, 7), (7, 8)]           # a slide by 2, the last rank wants the end
    for rank in range(3):
        sends, receives = row_plan(held, wanted, rank)
        for peer in range(3):
            count = sends[peer][1]
            assert count == row_plan(held, wanted, peer)[1][rank][1]
        assert sum(c for _, c in receives) == wanted[rank][1] - wanted[rank][0]
    assert row_plan(held, wanted, 0)[0] == [(2, 1), (0, 0), (0, 0)]
    assert row_plan(held, wanted, 1)[1] == [(0, 0), (0, 0), (0, 2)]


@pytest.mark.mpi
@pytest.mark.timeout(240)
def test_every_backend_and_rank_count_equals_one_numpy_rank():
    """Torch and numpy on P ranks against numpy on one rank, for every engine sampler."""
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    problems = []
    for sampler, options in (VARIANTS[0], VARIANTS[3], VARIANTS[5]):
        cfg = RunConfig(**SMALL, sampler=sampler, **options)
        cfg.validate(world.size)
        runs = {b: run(cfg.replace(array_backend=b), world) for b in ("numpy", "torch")}
        if world.rank == 0:
            serial = run(cfg, Communicator.self_comm())
            for backend, result in runs.items():
                err = float(np.abs(result.samples - serial.samples).max())
                if err > 1e-12 or result.stats["evaluations"] != serial.stats["evaluations"]:
                    problems.append(f"{sampler} {options} {backend}: {err:.3g}")
    assert world.bcast_obj(problems, root=0) == []


FAULTS = """
import resource, sys, numpy as np
from hpc_picard import arrays
if sys.argv[1] == "keep":
    assert arrays.keep_freed_memory()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    a = [np.ones(1 << 19) for _ in range(4)]    # 4 x 4 MiB, like a model call's temporaries
    del a
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.timeout(60)
def test_keep_freed_memory_stops_fresh_pages_for_every_temporary():
    """arrays.keep_freed_memory (called by runner.run): temporaries of a few MiB freed
    and allocated again reuse the heap instead of faulting in fresh pages each time
    (glibc's default trims them away: about 1024 faults per 4 MiB)."""
    import subprocess
    import sys
    faults = {mode: int(subprocess.run([sys.executable, "-c", FAULTS, mode], check=True,
                                       capture_output=True, text=True).stdout)
              for mode in ("default", "keep")}
    assert faults["keep"] * 5 < faults["default"], faults


@pytest.mark.mpi
@pytest.mark.timeout(60)
def test_cyclic_exscan_sums_in_window_order_from_every_first_rank():
    """Communicator.cyclic_exscan_into: rank `first` gets the total, every other rank
    the sum of the ranks before it in the order first, first + 1, ..., first - 1;
    numpy and torch buffers. Integer-valued contributions: the sums are exact."""
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    P, rank = world.size, world.rank
    contribution = lambda r: np.arange(6.0).reshape(2, 3) * (r + 1) + 10.0 ** r   # noqa: E731
    problems = []
    for kind in ("numpy", "torch"):
        wrap = (lambda a: torch.from_numpy(a)) if kind == "torch" else (lambda a: a)   # noqa: E731
        for first in range(P):
            order = [(first + i) % P for i in range(P)]
            before = order[:order.index(rank)] if rank != first else order
            expected = sum((contribution(r) for r in before), np.zeros((2, 3)))
            out = wrap(np.full((2, 3), np.nan))
            world.cyclic_exscan_into(first, wrap(contribution(rank)), out)
            got = out.numpy() if kind == "torch" else out
            if not np.array_equal(got, expected):
                problems.append(f"{kind}, first {first}, rank {rank}: {got} != {expected}")
    assert world.allgather_obj(problems) == [[]] * P


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_paradigms_slices_never_change_ranks_and_each_noise_row_is_drawn_once(monkeypatch):
    """ParaDiGMS' ring window: no slice's state or noise row moves between ranks (the
    only rows moved are the window's end state, at most one per round); each rank
    draws the noise of exactly the slices at its ring positions, once each, most of
    them ahead of the round they enter; the samples equal one rank's."""
    from mpi4py import MPI
    from hpc_picard.samplers.engine import RingWindow
    world = Communicator(MPI.COMM_WORLD)
    windows = []
    start = RingWindow.start

    def recording_start(self, *args, **kwargs):
        windows.append(self)
        return start(self, *args, **kwargs)

    moves = []
    move_rows = Communicator.move_rows

    def recording_moves(self, send, recv, plan):
        moves.append(send.shape[0])
        return move_rows(self, send, recv, plan)

    cfg = RunConfig(**{**SMALL, "blocks": 8, "steps_per_block": 6}, sampler="paradigms", window=7)
    serial = run(cfg, Communicator.self_comm()) if world.rank == 0 else None
    monkeypatch.setattr(RingWindow, "start", recording_start)
    monkeypatch.setattr(Communicator, "move_rows", recording_moves)
    result = run(cfg, world)
    ring = windows[-1]
    total = cfg.blocks * cfg.steps_per_block
    mine = sum(1 for j in range(total) if ring.lo <= j % ring.ring < ring.hi)
    problems = []
    if set(moves) - {1} or len(moves) > result.stats["rounds"]:
        problems.append(f"rank {world.rank} moved rows {moves} in {result.stats['rounds']} rounds")
    if ring.drawn != mine:
        problems.append(f"rank {world.rank} drew {ring.drawn} rows for {mine} slices")
    if mine > ring.owned and ring.drawn_ahead < (mine - ring.owned) // 2:
        problems.append(f"rank {world.rank} drew only {ring.drawn_ahead} rows ahead")
    if world.rank == 0:
        if result.stats["rounds"] != serial.stats["rounds"]:
            problems.append(f"rounds {result.stats['rounds']} != {serial.stats['rounds']}")
        err = float(np.abs(result.samples - serial.samples).max())
        if err > 1e-12:
            problems.append(f"samples differ from one rank's by {err:.3g}")
    drawn = world.allgather_obj(ring.drawn)
    assert sum(drawn) == total
    assert world.allgather_obj(problems) == [[]] * world.size


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_a_block_is_re_split_as_its_front_advances():
    """piadm: once the front leaves a rank 2 or more rows short of its share, the
    frozen prefix is dropped and the live slices are spread evenly again
    (BlockSweep.drop_frozen); the fronts, rounds, evaluations and samples stay those
    of one rank (SDE with its noise rows, and ODE without). Not on an emulated device,
    whose calls cost the same for fewer rows."""
    from mpi4py import MPI
    from hpc_picard.samplers.engine import BlockSweep
    world = Communicator(MPI.COMM_WORLD)
    drops, worst = [], []
    drop = BlockSweep.drop_frozen

    def recording_drop(self):
        drop(self)
        drops.append(self.offset)
        live = [hi - lo for lo, hi in self.ranges]
        worst.append(max(live) - -(-self.size // self.comm.size))

    problems = []
    for sampler in ("piadm-sde", "piadm-ode"):
        cfg = RunConfig(**{**SMALL, "blocks": 4, "steps_per_block": 16, "picard_iters": 16},
                        sampler=sampler, corrector_steps=0)
        serial = run(cfg, Communicator.self_comm()) if world.rank == 0 else None
        BlockSweep.drop_frozen = recording_drop
        try:
            result = run(cfg, world)
        finally:
            BlockSweep.drop_frozen = drop
        if world.size > 1 and not drops:
            problems.append(f"{sampler}: no block was re-split on {world.size} ranks")
        if any(w > 0 for w in worst):
            problems.append(f"{sampler}: uneven after a re-split: {worst}")
        if world.rank == 0:
            for key in ("rounds", "evaluations"):
                if result.stats[key] != serial.stats[key]:
                    problems.append(f"{sampler} {key}: {result.stats[key]} != {serial.stats[key]}")
            err = float(np.abs(result.samples - serial.samples).max())
            if err > 1e-12:
                problems.append(f"{sampler}: samples {err:.3g} from one rank's")
        drops.clear()
        worst.clear()
    # an emulated device (spare batch width): fewer rows save nothing, no re-split
    BlockSweep.drop_frozen = recording_drop
    try:
        run(cfg.replace(emulate_latency="0.0001"), world)
    finally:
        BlockSweep.drop_frozen = drop
    if drops:
        problems.append(f"{len(drops)} re-splits with an emulated device")
    assert world.allgather_obj(problems) == [[]] * world.size


TORCH_THREADS = """
import sys, torch
from hpc_picard.arrays import make_backend
torch.set_num_threads(2)
make_backend(sys.argv[1])
print(torch.get_num_threads())
"""


@pytest.mark.timeout(60)
def test_torch_cpu_backend_uses_one_thread_per_rank_unless_told():
    """--array-backend torch on the CPU: the sweep's tensor arithmetic takes
    OMP_NUM_THREADS threads (1 if unset), like a torch model, not torch's default pool
    on every rank."""
    import os
    import subprocess
    import sys

    def threads(env_threads):
        env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
        if env_threads:
            env["OMP_NUM_THREADS"] = env_threads
        out = subprocess.run([sys.executable, "-c", TORCH_THREADS, "torch"], env=env,
                             check=True, capture_output=True, text=True)
        return int(out.stdout)
    assert threads(None) == 1
    assert threads("3") == 3
