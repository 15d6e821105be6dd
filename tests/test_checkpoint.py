"""Checkpoint and restart on one rank: resume equality, refusals, atomic writes."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from ops_support import leftovers, small_config

from hpc_picard import checkpoint
from hpc_picard.checkpoint import CheckpointError, RunState
from hpc_picard.cli import main
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run


class Interrupted(Exception):
    """Stands in for a job killed between blocks."""


def stop_after(block_count: int):
    def on_block(index, stats):
        if index + 1 == block_count:
            raise Interrupted
    return on_block


def run_interrupted(config, stop: int):
    with pytest.raises(Interrupted):
        run(config, Communicator.self_comm(), on_block=stop_after(stop))


def assert_same_run(resumed, reference):
    np.testing.assert_array_equal(resumed.samples, reference.samples)
    for name in ("rounds", "evaluations", "sequential_rounds"):
        assert resumed.stats[name] == reference.stats[name], name
    for name, values in reference.per_block.items():
        np.testing.assert_array_equal(resumed.per_block[name], values)


@pytest.mark.parametrize("changes", [{}, {"dtype": "float32", "tol": 0.05},
                                     {"sampler": "sequential-sde"}])
def test_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path, changes):
    ck = str(tmp_path / "ck.h5")
    reference = run(small_config(tmp_path, **changes), Communicator.self_comm())
    config = small_config(tmp_path, checkpoint=ck, **changes)
    run_interrupted(config, stop=4)
    with h5py.File(ck, "r") as fh:
        assert fh.attrs["next_block"] == 4
    resumed = run(config, Communicator.self_comm(), resume=True)
    assert_same_run(resumed, reference)
    assert resumed.stats["restarts"] == 1
    assert reference.stats["restarts"] == 0


def test_resume_continues_from_the_last_complete_checkpoint(tmp_path):
    ck = str(tmp_path / "ck.h5")
    config = small_config(tmp_path, checkpoint=ck, checkpoint_every=2)
    run_interrupted(config, stop=5)        # checkpoints after blocks 2 and 4, not 5
    with h5py.File(ck, "r") as fh:
        assert fh.attrs["next_block"] == 4
    blocks_run = []
    resumed = run(config, Communicator.self_comm(), resume=True,
                  on_block=lambda index, stats: blocks_run.append(index))
    assert blocks_run == [4, 5]
    assert_same_run(resumed, run(small_config(tmp_path), Communicator.self_comm()))


def test_a_second_interruption_resumes_again(tmp_path):
    ck = str(tmp_path / "ck.h5")
    config = small_config(tmp_path, checkpoint=ck)
    run_interrupted(config, stop=2)
    with pytest.raises(Interrupted):
        run(config, Communicator.self_comm(), resume=True, on_block=stop_after(4))
    resumed = run(config, Communicator.self_comm(), resume=True)
    assert resumed.stats["restarts"] == 2
    assert_same_run(resumed, run(small_config(tmp_path), Communicator.self_comm()))


def test_resume_without_a_checkpoint_file_starts_from_block_0(tmp_path):
    config = small_config(tmp_path, checkpoint=str(tmp_path / "absent.h5"))
    resumed = run(config, Communicator.self_comm(), resume=True)
    assert resumed.stats["restarts"] == 0
    assert_same_run(resumed, run(small_config(tmp_path), Communicator.self_comm()))


def test_result_changing_fields_are_refused_by_name(tmp_path):
    ck = str(tmp_path / "ck.h5")
    run_interrupted(small_config(tmp_path, checkpoint=ck), stop=2)
    changed = small_config(tmp_path, checkpoint=ck, seed=4, picard_iters=7)
    with pytest.raises(CheckpointError) as info:
        run(changed, Communicator.self_comm(), resume=True)
    message = str(info.value)
    assert "different configuration" in message
    assert "seed (checkpoint 3, now 4)" in message
    assert "picard_iters (checkpoint 6, now 7)" in message
    assert "dim" not in message


def test_fields_that_do_not_change_the_samples_may_differ(tmp_path):
    ck = str(tmp_path / "ck.h5")
    run_interrupted(small_config(tmp_path, checkpoint=ck), stop=2)
    other = small_config(tmp_path, checkpoint=ck, output=str(tmp_path / "other.h5"),
                         max_batch=5, checkpoint_every=3)
    resumed = run(other, Communicator.self_comm(), resume=True)
    assert_same_run(resumed, run(small_config(tmp_path), Communicator.self_comm()))


def _flip_state_bytes(path):
    with h5py.File(path, "r") as fh:
        offset = fh["states"].id.get_chunk_info(0).byte_offset
    with open(path, "r+b") as fh:
        fh.seek(offset + 16)
        byte = fh.read(1)
        fh.seek(offset + 16)
        fh.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_corrupt_or_truncated_checkpoints_are_refused(tmp_path, damage):
    ck = str(tmp_path / "ck.h5")
    config = small_config(tmp_path, checkpoint=ck)
    run_interrupted(config, stop=3)
    if damage == "flip":
        _flip_state_bytes(ck)
    elif damage == "truncate":
        os.truncate(ck, os.path.getsize(ck) // 2)
    else:
        with open(ck, "wb") as fh:
            fh.write(b"not a checkpoint at all\n" * 40)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        run(config, Communicator.self_comm(), resume=True)


def test_a_file_of_the_wrong_shape_is_refused(tmp_path):
    ck = str(tmp_path / "ck.h5")
    config = small_config(tmp_path, checkpoint=ck)
    state = RunState(next_block=2, states=np.zeros((config.num_samples + 1, config.dim)),
                     sweeps=[1, 1], residuals=[0.0, 0.0])
    checkpoint.write(ck, state, config, 1)
    with pytest.raises(CheckpointError, match="inconsistent"):
        checkpoint.read(ck, config)


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    ck = str(tmp_path / "ck.h5")
    config = small_config(tmp_path, checkpoint=ck)
    run_interrupted(config, stop=2)
    before = open(ck, "rb").read()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(checkpoint, "_checksummed", full_disk)
    with pytest.raises(checkpoint.CheckpointWriteError, match="No space left on device"):
        run(config, Communicator.self_comm(), resume=True)
    assert open(ck, "rb").read() == before
    assert leftovers(tmp_path) == ["ck.h5"]
    monkeypatch.undo()
    assert checkpoint.read(ck, config).next_block == 2


def test_an_interrupted_output_write_leaves_no_file(tmp_path):
    from hpc_picard.output import write_samples
    path = str(tmp_path / "out.h5")
    with pytest.raises(TypeError):
        # a model parameter h5py cannot store fails the write after the samples are in
        write_samples(path, np.zeros((2, 4)), "{}", 1, {"rounds": 1}, {}, {"bad": object()})
    assert leftovers(tmp_path) == []


def test_files_get_the_mode_of_a_plain_open(tmp_path):
    from hpc_picard.output import write_atomic
    old = os.umask(0o022)
    try:
        write_atomic(str(tmp_path / "f.h5"), lambda fh: fh.create_dataset("x", data=[1]))
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "f.h5").st_mode & 0o777 == 0o644


def test_states_are_checksummed(tmp_path):
    ck = str(tmp_path / "ck.h5")
    run_interrupted(small_config(tmp_path, checkpoint=ck), stop=1)
    with h5py.File(ck, "r") as fh:
        assert fh["states"].fletcher32
        assert fh["sweeps_per_block"].fletcher32
        assert len(fh.attrs["config_hash"]) == 64


# -- through the command line -----------------------------------------------------------
def invoke(args):
    return CliRunner().invoke(main, args + ["--quiet"], catch_exceptions=False)


def test_cli_resume_writes_the_same_output(tmp_path, monkeypatch):
    import sys
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.chdir(tmp_path)
    base = ["--dim", "16", "--num-samples", "4", "--blocks", "4", "--steps-per-block", "8"]
    assert invoke(base + ["--output", "ref.h5"]).exit_code == 0
    assert invoke(base + ["--output", "a.h5", "--checkpoint", "ck.h5"]).exit_code == 0
    # An existing checkpoint is neither overwritten nor resumed by accident.
    again = invoke(base + ["--output", "b.h5", "--checkpoint", "ck.h5"])
    assert again.exit_code == 2
    assert "checkpoint ck.h5 exists; pass --resume" in again.output
    resumed = invoke(base + ["--output", "b.h5", "--checkpoint", "ck.h5", "--resume"])
    assert resumed.exit_code == 0
    with h5py.File("ref.h5", "r") as ref, h5py.File("b.h5", "r") as out:
        np.testing.assert_array_equal(out["samples"][...], ref["samples"][...])
        assert out["stats"].attrs["rounds"] == ref["stats"].attrs["rounds"]
        assert out["stats"].attrs["restarts"] == 1


def test_cli_resume_needs_a_checkpoint_path(tmp_path, monkeypatch):
    import sys
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)
    monkeypatch.chdir(tmp_path)
    result = invoke(["--dim", "16", "--resume"])
    assert result.exit_code == 2
    assert "--resume needs --checkpoint" in result.output
    assert leftovers(tmp_path) == []
