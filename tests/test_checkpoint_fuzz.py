"""Checkpoint fuzzing: every damaged checkpoint is refused as corrupt (exit 2, no
traceback) or, if accepted, resumes to bitwise the same samples.

The checkpoint's SHA-256 covers every byte after its header and the header is compared
whole, so in practice every flip is refused; the test accepts the other outcome only
if the state read back is identical to the one written.
"""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
from click.testing import CliRunner
from ops_support import cli_args, read_samples, small_config

from hpc_picard import checkpoint
from hpc_picard.checkpoint import CheckpointError
from hpc_picard.cli import main
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run

FLIPS = 600


class Interrupted(Exception):
    pass


def stop_after(count):
    def on_block(index, stats):
        if index + 1 == count:
            raise Interrupted
    return on_block


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    """A real checkpoint after 3 of 6 blocks, its config and the uninterrupted samples."""
    tmp_path = tmp_path_factory.mktemp("fuzz")
    config = small_config(tmp_path, checkpoint=str(tmp_path / "ck.h5"))
    reference = run(config.replace(checkpoint=""), Communicator.self_comm())
    with pytest.raises(Interrupted):
        run(config, Communicator.self_comm(), on_block=stop_after(3))
    with open(config.checkpoint, "rb") as fh:
        original = fh.read()
    return config, original, reference.samples


def same_state(a, b) -> bool:
    return (a.next_block == b.next_block and a.sweeps == b.sweeps and a.residuals == b.residuals
            and a.evaluations == b.evaluations and a.restarts == b.restarts
            and a.timings == b.timings and a.states.dtype == b.states.dtype
            and np.array_equal(a.states, b.states))


def test_random_byte_flips_are_refused_or_harmless(written, tmp_path):
    config, original, _ = written
    good = checkpoint.read(config.checkpoint, config)
    rng = random.Random(11)
    path = str(tmp_path / "flipped.h5")
    refused = accepted = 0
    for _ in range(FLIPS):
        damaged = bytearray(original)
        offset = rng.randrange(len(damaged))
        damaged[offset] ^= rng.randrange(1, 256)
        with open(path, "wb") as fh:
            fh.write(damaged)
        try:
            state = checkpoint.read(path, config)
        except CheckpointError as exc:      # anything else fails the test: a traceback
            assert "corrupt or truncated" in str(exc)
            refused += 1
            continue
        assert same_state(state, good), f"flip at byte {offset} changed the state silently"
        accepted += 1
    assert refused + accepted == FLIPS
    assert refused > 0.99 * FLIPS


@pytest.mark.parametrize("damage", [
    lambda data: data[: len(data) // 2],                    # truncated
    lambda data: data[:-1],
    lambda data: data + b"\0" * 16,                         # a tail appended
    lambda data: b"",                                       # empty
    lambda data: data[512:],                                # header lost
    lambda data: bytes(512) + data[512:],                   # header zeroed
])
def test_structural_damage_is_refused(written, tmp_path, damage):
    config, original, _ = written
    path = tmp_path / "damaged.h5"
    path.write_bytes(damage(original))
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        checkpoint.read(str(path), config)


def test_the_cli_refuses_flips_with_exit_2_and_resumes_an_intact_copy_bitwise(
        written, cli_tmp):
    config, original, reference = written
    rng = random.Random(5)
    args = cli_args({k: getattr(config, k) for k in
                     ("model", "dim", "num_samples", "blocks", "steps_per_block",
                      "picard_iters", "tol", "seed")})
    for _ in range(3):
        damaged = bytearray(original)
        damaged[rng.randrange(len(damaged))] ^= 0xFF
        (cli_tmp / "ck.h5").write_bytes(damaged)
        result = CliRunner().invoke(main, args + ["--checkpoint", "ck.h5", "--resume",
                                                  "--output", "out.h5", "--quiet"])
        assert result.exit_code == 2, result.output
        assert "checkpoint ck.h5 is corrupt or truncated" in result.output
        assert "Traceback" not in result.output and not os.path.exists("out.h5")
    (cli_tmp / "ck.h5").write_bytes(original)
    result = CliRunner().invoke(main, args + ["--checkpoint", "ck.h5", "--resume",
                                              "--output", "out.h5", "--quiet"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(read_samples(cli_tmp / "out.h5"), reference)
