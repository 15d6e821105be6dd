"""The job scripts under a real Slurm: run by `make test-slurm` inside the private
one-node cluster of tests/slurm/cluster.sh (it needs SLURM_CONF from there), never by
`make test` (the file name keeps pytest's default collection away).

Every job is written by jobscripts/make_sweep.py exactly as a user would, submitted
with sbatch, and judged by its log and its output file: a 2-rank job makes one 2-rank
world; a launch without the right --mpi plugin is refused; the GPU script binds one
(stand-in) GPU per rank; a job signalled before its wall-time limit requeues itself,
resumes from its checkpoint and ends with bitwise the samples of an uninterrupted run;
the 1-2 rank sweep goes through submit-all.sh and collect_sweep.py.
"""
import os
import re
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from conftest import tool

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(REPO, "jobscripts"))
from collect_sweep import collect, format_table  # noqa: E402

if not os.environ.get("SLURM_CONF"):
    pytest.skip("needs the private cluster: run `make test-slurm`", allow_module_level=True)

HERE = os.path.dirname(os.path.abspath(__file__))
ENV = (f"source {os.path.dirname(sys.executable)}/activate\n"
       f"export PYTHONPATH={HERE}")
PROBLEM = {"--model": "grf", "--dim": "16", "--num-samples": "4", "--blocks": "4",
           "--steps-per-block": "4", "--picard-iters": "4", "--tol": "0", "--device": "cpu"}


def problem(**changes) -> list:
    """picard-sample options of a problem that takes a second: PROBLEM with changes
    (keyword names without the dashes, underscores for dashes)."""
    options = {**PROBLEM, **{"--" + name.replace("_", "-"): str(value)
                             for name, value in changes.items()}}
    return [token for pair in options.items() for token in pair]


SMALL = problem()
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY",
         "BOOT_FAIL", "DEADLINE", "PREEMPTED"}


def make_sweep(out, *args, picard=SMALL, env=ENV):
    subprocess.run([sys.executable, os.path.join(REPO, "jobscripts", "make_sweep.py"),
                    "--scheduler", "slurm", "--out", str(out), "--env", env, *args, "--", *picard],
                   check=True, timeout=60, capture_output=True)
    return out


def sbatch(directory, script) -> str:
    res = subprocess.run(["sbatch", "--parsable", script], cwd=directory, capture_output=True,
                         text=True, timeout=60, check=True)
    return res.stdout.strip().split(";")[0]


def job_info(job_id) -> dict:
    text = subprocess.run(["scontrol", "show", "job", "--oneliner", job_id], capture_output=True,
                          text=True, timeout=60, check=True).stdout
    return dict(re.findall(r"(\w+)=(\S*)", text))


def wait(job_id, timeout) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = job_info(job_id)
        # A requeued job passes through REQUEUED and PENDING: not final.
        if info.get("JobState") in FINAL:
            return info
        time.sleep(1)
    subprocess.run(["scancel", job_id], timeout=60)
    pytest.fail(f"job {job_id} did not finish in {timeout} s: {job_info(job_id)}")


def log_of(directory, name, job_id) -> str:
    return (directory / f"{name}-{job_id}.log").read_text()


def test_two_rank_job_is_one_two_rank_world(tmp_path):
    out = make_sweep(tmp_path / "jobs", "--ranks", "2", "--ranks-per-node", "2", "--time", "00:05:00")
    job = sbatch(out, "picard-strong-p00002.sh")
    info = wait(job, 180)
    log = log_of(out, "picard-strong-p00002", job)
    assert info["JobState"] == "COMPLETED", log
    assert "rank 0/2" in log and "rank 1/2" in log
    assert log.count("picard-sample: piadm-sde") == 1      # one run, not two singletons
    with h5py.File(out / f"picard-strong-p00002-{job}.h5") as fh:
        assert fh.attrs["n_ranks"] == 2


def test_srun_without_the_pmi_plugin_is_refused(tmp_path):
    out = make_sweep(tmp_path / "jobs", "--ranks", "2", "--ranks-per-node", "2",
                     "--time", "00:05:00", "--srun-mpi", "none")
    job = sbatch(out, "picard-strong-p00002.sh")
    info = wait(job, 180)
    log = log_of(out, "picard-strong-p00002", job)
    # Task 0 refuses with exit code 2. The others refuse too, unless --kill-on-bad-exit
    # (which the job scripts set, so that a failed rank ends the job) terminates them
    # first: then srun, and the job, report the signal (143) instead of 2. Which comes
    # first is a race, so the job's code is only required to be a failure.
    assert info["JobState"] == "FAILED" and info["ExitCode"] in ("2:0", "143:0"), log
    assert "task 0: Exited with exit code 2" in log, log
    refusals = [line for line in log.splitlines() if line.startswith("picard-sample: error:")]
    assert refusals == ["picard-sample: error: the launcher started 2 tasks (SLURM_STEP_NUM_TASKS=2) "
                        "but MPI sees a world of 1 in each, so 2 one-rank runs would race on the "
                        "same files: launch with `srun --mpi=pmi2` (MPICH, the mpich wheel) or "
                        "`srun --mpi=pmix` (Open MPI), or with the mpiexec of the MPI behind mpi4py "
                        "(docs/operations.md)"], log
    assert not list(out.glob("*.h5"))


def test_gpu_script_binds_one_gpu_per_rank(tmp_path):
    picard = problem(model="job_models:make_binding_reporter")
    out = make_sweep(tmp_path / "jobs", "--device", "gpu", "--ranks", "2", "--ranks-per-node", "2",
                     "--cpus-per-rank", "1", "--time", "00:05:00", picard=picard)
    text = (out / "picard-strong-p00002.sh").read_text()
    assert "#SBATCH --gpus-per-node=2" in text and "bind-gpu.sh picard-sample" in text
    job = sbatch(out, "picard-strong-p00002.sh")
    info = wait(job, 180)
    log = log_of(out, "picard-strong-p00002", job)
    assert info["JobState"] == "COMPLETED", log
    # Slurm gives every task CUDA_VISIBLE_DEVICES=0,1; bind-gpu.sh keeps the local rank's.
    bindings = sorted(line for line in log.splitlines() if line.startswith("binding:"))
    assert bindings == ["binding: SLURM_PROCID=0 SLURM_LOCALID=0 CUDA_VISIBLE_DEVICES=0",
                        "binding: SLURM_PROCID=1 SLURM_LOCALID=1 CUDA_VISIBLE_DEVICES=1"], log
    with h5py.File(out / f"picard-strong-p00002-{job}.h5") as fh:
        assert fh.attrs["n_ranks"] == 2


def test_sweep_submits_and_collects(tmp_path):
    out = make_sweep(tmp_path / "sweep", "--ranks", "1,2", "--ranks-per-node", "2", "--time", "00:05:00")
    submitted = subprocess.run(["./submit-all.sh"], cwd=out, capture_output=True, text=True,
                               timeout=60, check=True).stdout
    jobs = re.findall(r"Submitted batch job (\d+)", submitted)
    assert len(jobs) == 2, submitted
    for job in jobs:
        assert wait(job, 240)["JobState"] == "COMPLETED"
    rows = collect(out)
    print("\n" + format_table(rows))
    assert [(row["ranks"], row["time_ranks"]) for row in rows] == [(1, 1), (2, 2)]
    assert {(row["samples"], row["dim"], row["rounds"]) for row in rows} == {(4, 16, 4 * 4)}
    for row in rows:
        assert row["wall_s"] > 0 and row["other_s"] >= 0
    with h5py.File(rows[0]["file"]) as one, h5py.File(rows[1]["file"]) as two:
        np.testing.assert_allclose(two["samples"][()], one["samples"][()], rtol=1e-12, atol=1e-12)


@pytest.mark.timeout(720)
def test_requeued_job_resumes_to_the_same_samples(tmp_path):
    """A 2-rank job with a one-minute limit: Slurm signals it (USR1, --signal) before
    the limit, it requeues itself and resumes from its checkpoint until done. The
    model sleeps 1 s per call (no CPU): 60 s of work, more than one allocation holds.

    Slurm checks time limits every 30 s, so USR1 comes 5 to 35 s before the limit with
    --grace 5: each allocation runs 25 s at least, whatever the start-up costs."""
    picard = problem(model="job_models:make_slow", blocks=15)
    reference = subprocess.Popen([tool("mpiexec"), "-n", "2", tool("picard-sample"), *picard,
                                  "--quiet", "--output", str(tmp_path / "reference.h5")],
                                 env={**os.environ, "PYTHONPATH": HERE},
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = make_sweep(tmp_path / "jobs", "--ranks", "2", "--ranks-per-node", "2",
                     "--time", "00:01:00", "--grace", "5", picard=picard,
                     env=ENV + "\nexport PICARD_TEST_SCORE_PAUSE=1")
    job = sbatch(out, "picard-strong-p00002.sh")
    assert reference.wait(timeout=240) == 0, reference.stdout.read()
    info = wait(job, 600)
    log = log_of(out, "picard-strong-p00002", job)
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) >= 1, log
    assert "wall time nearly up: requeueing" in log and "(restart 1)" in log
    resumed = re.findall(r"resuming from \S+ at block (\d+) \(blocks 0-14\)", log)
    assert resumed and all(0 < int(block) < 15 for block in resumed), log
    with h5py.File(out / f"picard-strong-p00002-{job}.h5") as fh, \
            h5py.File(tmp_path / "reference.h5") as ref:
        assert fh["stats"].attrs["restarts"] >= 1
        assert fh["samples"][()].tobytes() == ref["samples"][()].tobytes()
        for name in ("rounds", "evaluations"):
            assert fh["stats"].attrs[name] == ref["stats"].attrs[name]
        assert np.array_equal(fh["stats/sweeps_per_block"][()], ref["stats/sweeps_per_block"][()])
