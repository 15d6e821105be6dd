"""The engine's compiled host kernels (kernels.py): the same states as numpy's operations,
bit for bit, on every path that uses them, loaded before sampling starts."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from hpc_picard import kernels
from hpc_picard.config import RunConfig
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run

pytest.importorskip("numba")

SMALL = dict(model="grf", dim=16, num_samples=3, blocks=8, steps_per_block=6, picard_iters=6,
             tol=0.01, seed=5)
# the engine's samplers and sweep variants, float32 states among them
VARIANTS = [("piadm-sde", {}), ("piadm-sde", {"initial_guess": "noise"}),
            ("piadm-sde", {"accelerate": "anderson"}), ("piadm-sde", {"dtype": "float32"}),
            ("piadm-sde", {"tol": 0.0}), ("piadm-ode", {}),
            ("paradigms", {"window": 5}), ("paradigms", {"window": 7, "dtype": "float32"}),
            ("paradigms", {"window": 3, "paradigms_form": "additive"})]


class Counting:
    """The compiled kernels, counting their calls."""

    def __init__(self, jit):
        self.calls = {}
        for name in ("sweep_running", "accumulate", "rebuild", "add_increments"):
            setattr(self, name, self._counted(name, getattr(jit, name)))

    def _counted(self, name, kernel):
        def call(*args):
            self.calls[name] = self.calls.get(name, 0) + 1
            return kernel(*args)
        return call


def both_paths(cfg, comm, monkeypatch):
    """(numpy operations' run, compiled kernels' run, the kernels' call counts)."""
    monkeypatch.setattr(kernels, "enabled", False)
    plain = run(cfg, comm)
    monkeypatch.setattr(kernels, "enabled", True)
    kernels.warm_up(cfg.dtype)              # loaded here, so that only sampling is counted
    counting = Counting(kernels.get())
    monkeypatch.setattr(kernels, "_compiled", counting)
    monkeypatch.setattr(kernels, "warm_up", lambda dtype: True)
    compiled = run(cfg, comm)
    return plain, compiled, counting.calls


@pytest.mark.parametrize("sampler, options", VARIANTS)
def test_kernels_give_numpys_states_bit_for_bit(sampler, options, monkeypatch):
    cfg = RunConfig(**{**SMALL, **options}, sampler=sampler)
    plain, compiled, calls = both_paths(cfg, Communicator.self_comm(), monkeypatch)
    assert np.array_equal(compiled.samples, plain.samples)
    for key in ("rounds", "evaluations"):
        assert compiled.stats[key] == plain.stats[key]
    if options.get("paradigms_form") == "additive":
        assert calls == {}                  # a lagged term: numpy's operations
    elif sampler == "paradigms":            # one rank: every run's base is known
        assert calls["sweep_running"] > 0 and calls["rebuild"] > 0 and "accumulate" not in calls
    else:                                   # one rank: the running sweep
        assert calls["sweep_running"] > 0 and "accumulate" not in calls
        if sampler == "piadm-sde":                # fixed rows: the SDE path
            assert calls["add_increments"] > 0


def test_no_kernels_without_numba_or_when_turned_off(monkeypatch):
    monkeypatch.setenv("HPC_PICARD_NO_JIT", "1")
    assert kernels.get() is None and kernels.warm_up("float64") is False
    monkeypatch.delenv("HPC_PICARD_NO_JIT")
    monkeypatch.setattr(kernels, "enabled", False)
    assert kernels.get() is None


WARM = """
import json, sys
from hpc_picard import kernels
from hpc_picard.config import RunConfig
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run
jit = kernels.get()
kinds = (jit.sweep_running, jit.accumulate, jit.rebuild, jit.add_increments)
counts = lambda: [len(f.signatures) for f in kinds]
loaded = {}
for dtype in ("float64", "float32"):
    kernels.warm_up(dtype)
    loaded[dtype] = counts()
    for sampler in ("piadm-sde", "paradigms"):
        cfg = RunConfig(**json.loads(sys.argv[1]), sampler=sampler, dtype=dtype)
        run(cfg, Communicator.self_comm())
    loaded[dtype + " after runs"] = counts()
print(json.dumps(loaded))
"""


@pytest.mark.timeout(300)
def test_warm_up_loads_every_kernel_a_run_calls():
    """In a fresh process: after warm_up, sampling compiles or loads nothing more (the
    warm-up passes the engine's argument types and layouts)."""
    out = subprocess.run([sys.executable, "-c", WARM, json.dumps(SMALL)], capture_output=True,
                         text=True, timeout=280, env={**os.environ, "HPC_PICARD_NO_JIT": ""})
    assert out.returncode == 0, out.stderr
    loaded = json.loads(out.stdout)
    assert loaded["float64"] == [1] * 4 == loaded["float64 after runs"]
    assert loaded["float32"] == [2] * 4 == loaded["float32 after runs"]


@pytest.mark.timeout(120)
def test_runs_without_kernels_do_not_import_numba():
    script = ("import sys; from hpc_picard.config import RunConfig; "
              "from hpc_picard.parallel import Communicator; from hpc_picard.runner import run; "
              "run(RunConfig(model='grf', dim=16, num_samples=2, blocks=2, steps_per_block=4, "
              "sampler=sys.argv[1]), Communicator.self_comm()); print('numba' in sys.modules)")
    for sampler, env, imported in (("sequential-sde", {}, "False"),
                                   ("piadm-sde", {"HPC_PICARD_NO_JIT": "1"}, "False"),
                                   ("piadm-sde", {}, "True")):
        out = subprocess.run([sys.executable, "-c", script, sampler], capture_output=True,
                             text=True, timeout=100, env={**os.environ, **env})
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == imported, (sampler, env)


@pytest.mark.mpi
@pytest.mark.timeout(300)
def test_kernels_give_numpys_states_bit_for_bit_on_every_rank_count(monkeypatch):
    """At 1 to 4 ranks: time rank 0's running sweep (its total for the Exscan is its last
    running sum), the other ranks' Exscan path (increments, then states from their
    bases), the re-split, and the ring (its opening run swept with a running sum, the
    others from the cyclic Exscan)."""
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    problems = []
    resplit = {"blocks": 4, "steps_per_block": 16, "picard_iters": 16}
    for sampler, options in (VARIANTS[0], VARIANTS[1], VARIANTS[2], VARIANTS[3], VARIANTS[5],
                             VARIANTS[6], ("piadm-sde", resplit), ("piadm-ode", resplit)):
        cfg = RunConfig(**{**SMALL, **options}, sampler=sampler)
        cfg.validate(world.size)
        plain, compiled, calls = both_paths(cfg, world, monkeypatch)
        same = (np.array_equal(compiled.samples, plain.samples)
                and compiled.stats["evaluations"] == plain.stats["evaluations"])
        if sampler == "paradigms":      # the opening run swept, the others scanned
            everywhere = world.allgather_obj(sorted(calls))
            used = all(any(kind in names for names in everywhere)
                       for kind in ("sweep_running",
                                    "accumulate" if world.size > 1 else "rebuild"))
        else:
            kinds = ("accumulate", "rebuild") if world.rank > 0 else ("sweep_running",)
            used = all(calls.get(kind, 0) > 0 for kind in kinds)
            if world.rank == 0 and "accumulate" in calls:
                used = False
        if not (same and used):
            problems.append(f"rank {world.rank}: {sampler} {options}: same {same}, "
                            f"calls {calls}")
    assert world.allgather_obj(problems) == [[]] * world.size
