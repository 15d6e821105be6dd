"""Sweep variants: Anderson mixing and the noise-only initial guess."""
import numpy as np
import pytest

from hpc_picard.config import ConfigError, RunConfig
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run

SMALL = dict(model="grf", dim=64, num_samples=4, blocks=4, steps_per_block=16, tol=0.0,
             T=5.0, delta=1e-2)


def sample(comm=None, **options):
    comm = comm or Communicator.self_comm()
    config = RunConfig(**{**SMALL, **options}).validate(comm.size)
    return run(config, comm)


def relative_error(result, reference):
    return np.linalg.norm(result.samples - reference.samples) / np.linalg.norm(reference.samples)


@pytest.mark.parametrize("guess", ["constant", "noise"])
@pytest.mark.parametrize("accelerate", ["none", "anderson"])
def test_all_sweeps_reproduce_sequential_sde(accelerate, guess):
    reference = sample(sampler="sequential-sde")
    picard = sample(sampler="piadm-sde", picard_iters=16, accelerate=accelerate,
                    initial_guess=guess)
    assert relative_error(picard, reference) < 1e-12


@pytest.mark.parametrize("path", ["sde", "ode"])
def test_anderson_gets_closer_to_the_fixed_point_in_equal_sweeps(path):
    extra = {"corrector_steps": 0} if path == "ode" else {}
    reference = sample(sampler=f"sequential-{path}")
    plain = sample(sampler=f"piadm-{path}", picard_iters=5, **extra)
    mixed = sample(sampler=f"piadm-{path}", picard_iters=5, accelerate="anderson", **extra)
    assert relative_error(mixed, reference) < 0.3 * relative_error(plain, reference)


def test_anderson_needs_a_history():
    with pytest.raises(ConfigError, match="anderson-depth"):
        RunConfig(**{**SMALL, "accelerate": "anderson", "anderson_depth": 0}).validate(1)


@pytest.mark.mpi
@pytest.mark.timeout(120)
def test_anderson_and_noise_guess_are_rank_count_invariant():
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    options = dict(sampler="piadm-sde", picard_iters=5, accelerate="anderson",
                   initial_guess="noise", dim=16, blocks=3, steps_per_block=6)
    result = sample(comm=world, **options)
    verdict = None
    if world.rank == 0:
        verdict = float(relative_error(result, sample(**options)))
    assert world.bcast_obj(verdict) < 1e-10
