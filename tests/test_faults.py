"""The fault suite (issue 11): one test group per class of defect that could destroy
data, lose a finished run or mislead. Every test touches only its own temporary
folder (a FIFO stands in for a device node) and caps its subprocesses' memory.

Checkpoint fuzzing is in test_checkpoint_fuzz.py.
"""
from __future__ import annotations

import dataclasses
import json
import os
import resource
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner
from ops_support import PICARD, TESTS_ON_PATH, leftovers, mpirun, read_samples

from hpc_picard import fileguard
from hpc_picard.cli import check_main, main
from hpc_picard.config import RunConfig
from hpc_picard.limits import RANGES

SMALL = ["--dim", "16", "--num-samples", "4", "--blocks", "2", "--steps-per-block", "8"]
#: a subprocess's address space: far below what a huge --dim would take
MEMORY_CAP = 1 << 30


@pytest.fixture(autouse=True)
def in_tmp(cli_tmp):
    return cli_tmp


def invoke(args, command=main):
    return CliRunner().invoke(command, args, catch_exceptions=False)


def run_fails(args, code, message):
    result = invoke(args + ["--quiet"])
    assert result.exit_code == code, result.output
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    return result


def capped(memory=MEMORY_CAP):
    """preexec_fn for a subprocess: at most ``memory`` bytes of address space."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    return limit


def picard(args, cwd, timeout=60):
    return subprocess.run([PICARD, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, preexec_fn=capped(), env=TESTS_ON_PATH)


# -- 1. --overwrite replaces only a regular file ------------------------------------------------
def _fifo(path):
    os.mkfifo(path)


def _directory(path):
    os.mkdir(path)


def _symlink(path):
    (path.parent / "target.h5").write_bytes(b"target")
    os.symlink("target.h5", path)


def _read_only(path):
    path.write_bytes(b"precious")
    os.chmod(path, 0o444)


@pytest.mark.parametrize("make, message", [
    (_fifo, "is a FIFO, not a regular file"),
    (_directory, "is a directory, not a regular file"),
    (_symlink, "is a symbolic link, not a regular file"),
    (_read_only, "is read-only; --overwrite does not replace read-only files"),
])
@pytest.mark.parametrize("role", ["--output", "--checkpoint", "--save-images"])
def test_overwrite_replaces_only_regular_files(in_tmp, make, message, role):
    path = in_tmp / "target"
    make(path)
    before = os.lstat(path)
    extra = [] if role == "--output" else ["--output", "out.h5"]
    args = SMALL + [role, "target", *extra, "--overwrite"]
    if role == "--checkpoint":
        args += ["--resume"]       # with --resume a FIFO must not be opened (it would block)
    run_fails(args, 2, message)
    after = os.lstat(path)
    assert (after.st_mode, after.st_ino, after.st_size) == (before.st_mode, before.st_ino, before.st_size)
    if make is _symlink:
        assert (in_tmp / "target.h5").read_bytes() == b"target"
    assert not (in_tmp / "out.h5").exists()


def test_overwrite_still_replaces_a_writable_regular_file(in_tmp):
    (in_tmp / "out.h5").write_bytes(b"old")
    assert invoke(SMALL + ["--output", "out.h5", "--overwrite", "--quiet"]).exit_code == 0
    assert read_samples(in_tmp / "out.h5").shape == (4, 16)


# -- 2. sizes are refused before anything is allocated ------------------------------------------
def test_a_huge_dim_is_refused_fast_without_allocating(in_tmp):
    for dim in (2**62, 2**40, 2**30):           # range cap, range cap, memory estimate
        # CPU seconds, not wall-clock: the shared machine may be loaded; the 1 GiB
        # address-space cap shows that nothing large was allocated
        start = resource.getrusage(resource.RUSAGE_CHILDREN)
        result = picard(["--dim", str(dim), "--num-samples", "16", "--output", "out.h5"], in_tmp)
        end = resource.getrusage(resource.RUSAGE_CHILDREN)
        assert (end.ru_utime + end.ru_stime) - (start.ru_utime + start.ru_stime) < 5, dim
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
        assert ("--dim must be in [0, 2147483647]" in result.stderr if dim > 2**31
                else "needs about" in result.stderr), result.stderr
    assert leftovers(in_tmp) == []


def test_a_run_larger_than_the_address_space_limit_is_refused(in_tmp):
    # fits the node, not a 1 GiB `ulimit -v`: refused by the estimate, not a MemoryError
    result = picard(["--dim", str(1024 * 1024), "--num-samples", "16", "--blocks", "2",
                     "--steps-per-block", "8", "--output", "out.h5"], in_tmp)
    assert result.returncode == 2, result.stderr
    assert "address-space limit (ulimit -v)" in result.stderr
    assert "Traceback" not in result.stderr


def test_dry_run_says_when_a_plan_does_not_fit(in_tmp):
    result = invoke(["--dry-run", "--dim", str(2**30), "--num-samples", "64"])
    assert result.exit_code == 0, result.output
    assert "memory: DOES NOT FIT: the run needs about" in result.output
    fits = invoke(["--dry-run"] + SMALL)
    assert "memory: fits:" in fits.output


def test_dry_run_memory_counts_the_interpreter_baseline(in_tmp):
    from hpc_picard.dry_run import make_plan
    from hpc_picard.limits import BASELINE_BYTES
    plan = make_plan(RunConfig(dim=16, num_samples=4, blocks=2, steps_per_block=8).validate(), 1)
    assert plan["ranks"][0]["memory_bytes"] > BASELINE_BYTES


@pytest.mark.parametrize("text, message", [
    ("blocks = 1000000\nsteps-per-block = 1000000\npicard-iters = 1000000\n",
     "--blocks must be in [1, 100000]"),
    ("blocks = 10000\nsteps-per-block = 10000\n", "slices exceeds"),
    ('model = "gmm"\ngmm-components = 100000000\n', "--gmm-components must be in [1, 100000]"),
])
def test_huge_counts_in_a_config_file_are_refused(in_tmp, text, message):
    (in_tmp / "run.toml").write_text(text)
    run_fails(["--config", "run.toml"], 2, message)


# -- 4. two jobs on the same files ------------------------------------------------------------
def test_a_second_job_on_the_same_paths_is_refused(in_tmp):
    # job 1: its model waits for a "release" file, so it runs while job 2 starts
    first = subprocess.Popen([PICARD, "--model", "fault_models:make_gated", *SMALL,
                              "--picard-iters", "2", "--output", "out.h5",
                              "--checkpoint", "ck.h5", "--quiet"],
                             cwd=in_tmp, env=TESTS_ON_PATH, stderr=subprocess.PIPE, text=True)
    try:
        lock = in_tmp / ".ck.h5.lock"
        deadline = time.monotonic() + 30
        while not lock.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.exists()
        second = run_fails(SMALL + ["--output", "out.h5", "--checkpoint", "ck.h5"], 2,
                           "is in use by another run (pid")
        assert f"pid {first.pid}" in second.output
        # --overwrite does not break the lock either
        run_fails(SMALL + ["--output", "out.h5", "--checkpoint", "ck.h5", "--overwrite"], 2,
                  "is in use by another run")
        (in_tmp / "release").touch()
        assert first.wait(timeout=60) == 0, first.stderr.read()
    finally:
        first.kill()
        first.wait()
    assert read_samples(in_tmp / "out.h5").shape == (4, 16)
    assert not lock.exists() and not (in_tmp / ".out.h5.lock").exists()
    # after it ended, a third job needs --resume or --overwrite as usual
    run_fails(SMALL + ["--output", "out.h5", "--checkpoint", "ck.h5"], 2, "exists")


def test_a_lock_is_exclusive_and_released(in_tmp):
    path = str(in_tmp / "x.h5")
    with fileguard.locked([(path, "output file")]):
        with pytest.raises(Exception, match="is in use by another run"):
            fileguard.PathLock(path, "output file").acquire()
    fileguard.PathLock(path, "output file").acquire().release()


# -- 5. finished runs are not lost to late failures ---------------------------------------------
def test_output_problems_are_found_before_sampling(in_tmp):
    # a NaN model would fail the sampling with exit 1: exit 2 proves nothing was computed
    os.mkdir(in_tmp / "dir.h5")
    os.mkdir(in_tmp / "img.png")
    nan = ["--model", "fault_models:make_nan", "--dim", "4", "--num-samples", "4",
           "--blocks", "2", "--steps-per-block", "8"]
    run_fails(nan + ["--output", "dir.h5", "--overwrite"], 2, "is a directory")
    run_fails(nan + ["--output", "out.h5", "--save-images", "img.png", "--overwrite"], 2,
              "--save-images file img.png is a directory")


def test_a_failed_output_write_leaves_a_rescue_file(in_tmp, monkeypatch):
    import hpc_picard.output as output

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    with monkeypatch.context() as patched:
        patched.setattr(output, "write_samples", full_disk)
        result = invoke(SMALL + ["--output", "out.h5", "--quiet"])
    assert result.exit_code == 1, result.output
    assert "could not write output file out.h5 (No space left on device); the samples were " \
           "saved to" in result.output
    rescue = result.output.split("saved to ")[1].split(" (numpy.load")[0]
    samples = np.load(rescue)
    reference = invoke(SMALL + ["--output", "ref.h5", "--quiet"])
    assert reference.exit_code == 0, reference.output
    np.testing.assert_array_equal(samples, read_samples(in_tmp / "ref.h5"))


FULL_DISK_AFTER_INIT = """
import resource, signal, sys
from mpi4py import MPI             # MPI's own shared-memory files come first
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (6 << 10, 6 << 10))
from hpc_picard.cli import main
sys.argv[0] = "picard-sample"
main()
"""


def test_a_full_disk_at_the_output_write_rescues_and_cleans_up(in_tmp):
    # files are capped at 6 KiB: the samples' .npy fits, the HDF5 output does not
    result = subprocess.run([sys.executable, "-c", FULL_DISK_AFTER_INIT, *SMALL, "--output",
                             "out.h5", "--quiet"], cwd=in_tmp, capture_output=True, text=True,
                            timeout=60, preexec_fn=capped())
    assert result.returncode == 1, result.stderr
    assert "could not write output file out.h5" in result.stderr
    assert "decrement id ref count" not in result.stderr
    assert "Traceback" not in result.stderr
    assert leftovers(in_tmp) == []
    rescue = [name for name in os.listdir(in_tmp) if ".rescue-" in name]
    assert len(rescue) == 1 and np.load(in_tmp / rescue[0]).shape == (4, 16)


# -- 6. temporary files on every failure path ---------------------------------------------------
STALL_IN_WRITE = """
import os, sys, time
from hpc_picard.cli import main
def stalled(fd):
    print("WRITING", flush=True)     # the temporary file is written, not yet renamed
    time.sleep(60)
os.fsync = stalled
sys.argv[0] = "picard-sample"
main()
"""


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_checkpoint_write_leaves_no_temporary_file(in_tmp, signum):
    job = subprocess.Popen([sys.executable, "-c", STALL_IN_WRITE, *SMALL, "--output", "out.h5",
                            "--checkpoint", "ck.h5", "--quiet"], cwd=in_tmp,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           preexec_fn=capped())
    try:
        assert job.stdout.readline().strip() == "WRITING"
        assert any(name.startswith(".tmp-ck.h5.") for name in os.listdir(in_tmp))
        job.send_signal(signum)
        assert job.wait(timeout=30) == 128 + signum
    finally:
        job.kill()
        job.wait()
    err = job.stderr.read()
    assert f"stopped by {signal.Signals(signum).name}; removed 1 temporary file(s)" in err
    assert "Traceback" not in err
    assert os.listdir(in_tmp) == []          # no temporary file, no output, no lock file


def test_a_failed_write_removes_its_temporary_file(in_tmp):
    from hpc_picard.output import write_atomic

    def broken(fh):
        fh.create_dataset("x", data=np.zeros(3))
        raise RuntimeError("disk gone")
    with pytest.raises(RuntimeError):
        write_atomic(str(in_tmp / "a.h5"), broken)
    assert os.listdir(in_tmp) == []


# -- 7. every option has a range ----------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(RANGES))
def test_every_range_refuses_the_value_above_it(name, in_tmp):
    lo, hi, _ = RANGES[name]
    # delta's real upper bound is T (validate says so first): test its lower bound
    value = lo / 2 if name == "delta" else type(hi)(hi * 2 + 1)
    config = RunConfig(model="gmm", **{name: value})
    with pytest.raises(Exception, match=f"--{name.replace('_', '-')} must be"):
        config.validate(1)
    assert lo <= getattr(RunConfig(), name) <= hi       # the default lies inside


@pytest.mark.parametrize("args, message", [
    (["--seed", str(2**64)], "--seed must be in [0, 18446744073709551615]"),
    (["--picard-iters", "9", "--tol", "0"], "--picard-iters 9 exceeds the 8 slices per block"),
    (["--T", "1e308"], "--T must be in"),
    (["--delta", "1e-300"], "--delta must be in"),
])
def test_out_of_range_values_are_refused(args, message, in_tmp):
    run_fails(SMALL + args + ["--output", "out.h5"], 2, message)
    assert leftovers(in_tmp) == []


def test_the_largest_seed_differs_from_seed_zero(in_tmp):
    assert invoke(SMALL + ["--seed", str(2**64 - 1), "--output", "a.h5", "--quiet"]).exit_code == 0
    assert invoke(SMALL + ["--seed", "0", "--output", "b.h5", "--quiet"]).exit_code == 0
    assert not np.array_equal(read_samples(in_tmp / "a.h5"), read_samples(in_tmp / "b.h5"))


def test_every_numeric_option_has_a_range():
    numeric = {f.name for f in dataclasses.fields(RunConfig)
               if f.type in ("int", "float", int, float)}
    assert numeric == set(RANGES)


def test_the_operations_guide_lists_every_range():
    guide = open(os.path.join(os.path.dirname(__file__), "..", "docs", "operations.md")).read()
    for name in RANGES:
        assert f"`--{name.replace('_', '-')}`" in guide, name


# -- 8. user models: one line naming the model, exit 2 ------------------------------------------
@pytest.mark.parametrize("factory, message", [
    ("no_such_module:make", "cannot import module 'no_such_module'"),
    ("fault_models:make_none", "building it failed: TypeError: the factory returned None"),
    ("fault_models:make_needs_everything", "building it failed: TypeError: make_needs_everything() "
                                           "missing 2 required positional arguments"),
    ("fault_models:make_raises", "building it failed: RuntimeError: weights file missing"),
    ("fault_models:make_wrong_shape", "score(x, t) returned shape (2, 15) for input (2, 16)"),
    ("fault_models:make_float16", "score(x, t) on a (2, 16) batch raised TypeError: score "
                                  "returned float16; it must return float32 or float64"),
])
def test_user_model_errors_are_one_line(factory, message, in_tmp):
    result = run_fails(SMALL + ["--model", factory, "--output", "out.h5"], 2,
                       f"error: model {factory}: {message}")
    assert len([line for line in result.output.splitlines() if "error" in line]) == 1


def test_device_cuda_without_a_gpu_is_bad_input(in_tmp):
    import torch
    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    run_fails(SMALL + ["--device", "cuda", "--output", "out.h5"], 2, "--device cuda, but no CUDA")


@pytest.mark.parametrize("factory, dim, message", [
    ("fault_models:make_float16", "16", "returned float16; it must return float32 or float64"),
    ("fault_models:make_dim_9", "16", "the model has d = 9, but --dim 16 was given"),
])
def test_check_model_rejects(factory, dim, message, in_tmp):
    result = invoke(["--model", factory, "--dim", dim], command=check_main)
    assert result.exit_code == 1, result.output
    assert message in result.output


def test_check_model_names_a_missing_module(in_tmp):
    result = invoke(["--model", "no_such_module:make", "--dim", "4"], command=check_main)
    assert result.exit_code == 2
    assert "error: model no_such_module:make: cannot import module" in result.output


# -- 9. logs: each line under its own rank, a failure reported once -----------------------------
def test_two_ranks_label_their_own_lines_and_report_a_failure_once(in_tmp):
    result = mpirun(2, SMALL + ["--output", "out.h5", "--quiet"], cwd=in_tmp)
    assert result.returncode == 0, result.stderr
    placements = [line for line in result.stderr.splitlines() if " device " in line]
    assert len(placements) == 2
    for rank, line in enumerate(sorted(placements)):
        assert line.startswith(f"[rank {rank}] INFO") and f"rank {rank}/2" in line
    # diverging sweeps: every rank stops, the message appears once
    failed = mpirun(2, ["--model", "gmm", "--dim", "8", "--num-samples", "4", "--blocks", "2",
                        "--steps-per-block", "64", "--output", "bad.h5"], cwd=in_tmp)
    assert failed.returncode == 1
    assert failed.stderr.count("Picard sweeps diverge in block 0") == 1
    assert not (in_tmp / "bad.h5").exists()


def test_setup_time_is_not_arithmetic(in_tmp):
    result = invoke(SMALL + ["--output", "out.h5"])
    assert "setup (imports, model)" in result.output
    with h5py.File(in_tmp / "out.h5", "r") as fh:
        assert fh["stats"].attrs["setup_time"] > 0


# -- 10. the output describes itself ------------------------------------------------------------
def test_the_output_records_its_provenance(in_tmp):
    assert invoke(SMALL + ["--output", "out.h5", "--quiet"]).exit_code == 0
    with h5py.File(in_tmp / "out.h5", "r") as fh:
        origin = dict(fh["provenance"].attrs)
    for name in ("created_utc", "command_line", "host", "python_version", "numpy_version",
                 "torch_version", "mpi4py_version", "h5py_version", "hdf5_version", "mpi_library"):
        assert origin[name], name
    assert origin["created_utc"].startswith(time.strftime("%Y-", time.gmtime()))
    assert origin["mpi_library"].split()[0] in ("MPICH", "Open", "Intel(R)", "Microsoft")
    assert origin["time_ranks"] == 1 and origin["sample_groups"] == 1
    devices = json.loads(origin["devices"])
    assert len(devices) == 1 and devices[0].endswith("device cpu")


def test_a_failed_checkpoint_write_is_one_line_and_keeps_the_previous_one(in_tmp, monkeypatch):
    import hpc_picard.checkpoint as checkpoint
    assert invoke(SMALL + ["--output", "a.h5", "--checkpoint", "ck.h5", "--quiet"]).exit_code == 0
    before = (in_tmp / "ck.h5").read_bytes()

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")
    with monkeypatch.context() as patched:
        patched.setattr(checkpoint, "write", full_disk)
        result = invoke(SMALL + ["--output", "b.h5", "--checkpoint", "ck.h5", "--overwrite",
                                 "--quiet"])
    assert result.exit_code == 1
    assert "could not write checkpoint ck.h5 (No space left on device); the previous " \
           "checkpoint is intact" in result.output
    assert (in_tmp / "ck.h5").read_bytes() == before
    assert not (in_tmp / "b.h5").exists()
