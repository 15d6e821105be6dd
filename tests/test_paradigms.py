"""ParaDiGMS: the sliding window over the whole trajectory."""
import numpy as np
import pytest

from hpc_picard.config import ConfigError, RunConfig
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run

SMALL = dict(model="grf", dim=16, num_samples=4, blocks=3, steps_per_block=6, T=4.0,
             delta=1e-2, window=5)


def sample(comm=None, **options):
    comm = comm or Communicator.self_comm()
    config = RunConfig(**{**SMALL, **options}).validate(comm.size)
    return run(config, comm)


@pytest.mark.parametrize("form", ["exponential", "additive"])
def test_zero_tolerance_is_sequential_sde_one_slice_a_round(form):
    reference = sample(sampler="sequential-sde")
    window = sample(sampler="paradigms", tol=0.0, paradigms_form=form)
    assert np.abs(window.samples - reference.samples).max() < 1e-12
    assert window.stats["rounds"] == 18


def test_additive_form_has_the_same_fixed_point():
    """Both window updates converge to sequential-sde, in fewer rounds than its steps.
    (Which needs fewer rounds depends on the model: here the additive one, on the
    diffusers test model the exponential one; docs/samplers.md.)"""
    reference = sample(sampler="sequential-sde")
    scale = np.abs(reference.samples).max()
    rounds = {}
    for form in ("exponential", "additive"):
        result = sample(sampler="paradigms", tol=1e-6, window=8, paradigms_form=form)
        assert np.abs(result.samples - reference.samples).max() < 1e-5 * scale
        rounds[form] = result.stats["rounds"]
    assert max(rounds.values()) < 18 and rounds["exponential"] != rounds["additive"]


def test_tight_tolerance_reproduces_sequential_sde_in_fewer_rounds():
    reference = sample(sampler="sequential-sde")
    window = sample(sampler="paradigms", tol=1e-7, window=8)
    scale = np.abs(reference.samples).max()
    assert np.abs(window.samples - reference.samples).max() < 1e-6 * scale
    assert window.stats["rounds"] < 18
    # One record for the whole trajectory; its residual is the largest accepted one.
    assert window.per_block["sweeps_per_block"].tolist() == [window.stats["rounds"]]
    assert window.per_block["residual_per_block"][0] <= 1e-7


def test_looser_tolerance_takes_fewer_rounds():
    tight = sample(sampler="paradigms", tol=1e-6, window=18)
    loose = sample(sampler="paradigms", tol=1e-1, window=18)
    assert loose.stats["rounds"] < tight.stats["rounds"]
    assert loose.stats["evaluations"] < tight.stats["evaluations"]


def test_window_must_be_positive():
    with pytest.raises(ConfigError, match="--window"):
        RunConfig(**{**SMALL, "sampler": "paradigms", "window": 0}).validate(1)
    with pytest.raises(ConfigError, match="--paradigms-form"):
        RunConfig(**{**SMALL, "sampler": "paradigms", "paradigms_form": "loose"}).validate(1)


@pytest.mark.mpi
@pytest.mark.timeout(120)
@pytest.mark.parametrize("form", ["exponential", "additive"])
def test_paradigms_is_rank_count_invariant(form):
    from mpi4py import MPI
    world = Communicator(MPI.COMM_WORLD)
    # A window of 3 on up to 4 ranks leaves some ranks without slices in every round.
    options = dict(sampler="paradigms", tol=1e-3, window=3, paradigms_form=form)
    result = sample(comm=world, **options)
    verdict = None
    if world.rank == 0:
        serial = sample(**options)
        verdict = (float(np.abs(result.samples - serial.samples).max()),
                   result.stats["rounds"] == serial.stats["rounds"])
    difference, same_rounds = world.bcast_obj(verdict)
    assert difference < 1e-10 and same_rounds
