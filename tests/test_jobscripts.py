"""Job script templates and the scaling-sweep generator (jobscripts/)."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GENERATOR = os.path.join(ROOT, "jobscripts", "make_sweep.py")


def generate(tmp_path, *args, picard=("--dim", "64", "--num-samples", "8", "--blocks", "4",
                                     "--steps-per-block", "16")):
    out = tmp_path / "jobs"
    result = subprocess.run([sys.executable, GENERATOR, *args, "--out", str(out), "--", *picard],
                            capture_output=True, text=True, timeout=60)
    return result, out


def scripts(out) -> dict:
    return {name: (out / name).read_text() for name in sorted(os.listdir(out))}


@pytest.mark.parametrize("scheduler", ["slurm", "pbs"])
@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_every_template_renders_to_valid_bash(tmp_path, scheduler, device):
    result, out = generate(tmp_path, "--scheduler", scheduler, "--device", device,
                           "--ranks", "1,4,8", "--ranks-per-node", "4", "--time", "00:30:00")
    assert result.returncode == 0, result.stderr
    files = scripts(out)
    assert sorted(files) == ["picard-strong-p00001.sh", "picard-strong-p00004.sh",
                             "picard-strong-p00008.sh", "submit-all.sh"]
    for name, text in files.items():
        assert not re.search(r"@[A-Z_]+@", text), f"unfilled field in {name}"
        subprocess.run(["bash", "-n", str(out / name)], check=True, timeout=30)
    eight = files["picard-strong-p00008.sh"]
    assert "--checkpoint \"${CHECKPOINT}\" --resume" in eight
    assert "CHECKPOINT=picard-strong-p00008.ckpt.h5" in eight
    assert "--dim 64 --num-samples 8 --blocks 4 --steps-per-block 16" in eight
    if scheduler == "slurm":
        assert "#SBATCH --nodes=2" in eight and "#SBATCH --ntasks-per-node=4" in eight
        assert "#SBATCH --requeue" in eight and "--output=picard-strong-p00008-%j.log" in eight
        assert "scontrol requeue" in eight
        assert "srun --mpi=pmi2 --kill-on-bad-exit=1" in eight
        assert "python -m hpc_picard.launch clean-shm \"${SLURM_JOB_ID}\"" in eight
        assert "is complete: not requeueing" in eight and "wait \"${srun_pid}\"" in eight
        assert "sbatch picard-strong-p00001.sh" in files["submit-all.sh"]
    else:
        assert "#PBS -l select=2:" in eight and "mpiprocs=4" in eight and "#PBS -r y" in eight
        assert "mpiexec -n 8" in eight and "$(( 1800 - 120 ))" in eight
        assert "OUTPUT=picard-strong-p00008-${JOB_ID}.h5" in eight
        assert "qsub picard-strong-p00004.sh" in files["submit-all.sh"]
    if device == "gpu":
        assert "bind-gpu.sh picard-sample" in eight
        assert ("gpus-per-node=4" in eight) if scheduler == "slurm" else ("ngpus=4" in eight)


def test_weak_scaling_grows_the_chosen_size(tmp_path):
    result, out = generate(tmp_path, "--scheduler", "slurm", "--mode", "weak", "--ranks", "1,2,4")
    assert result.returncode == 0, result.stderr
    files = scripts(out)
    for p in (1, 2, 4):
        assert f"--steps-per-block {16 * p}" in files[f"picard-weak-p{p:05d}.sh"]
    result, out = generate(tmp_path, "--scheduler", "slurm", "--mode", "weak",
                           "--weak-scale", "num_samples", "--ranks", "2", "--name", "ws")
    assert "--num-samples 16" in scripts(out)["ws-weak-p00002.sh"]


@pytest.mark.parametrize("picard, message", [
    (("--time-ranks", "3"), "4 ranks: --time-ranks 3 must divide the number of ranks (4)"),
    (("--dim", "10"), "perfect square"),
    (("--output", "x.h5"), "--output is set by the job scripts"),
    (("--bogus", "1"), "unknown picard-sample option '--bogus'"),
])
def test_a_sweep_that_could_not_run_fails_before_writing(tmp_path, picard, message):
    result, out = generate(tmp_path, "--scheduler", "slurm", "--ranks", "4", picard=picard)
    assert result.returncode == 2
    assert message in result.stderr
    assert not out.exists() or os.listdir(out) == []


@pytest.mark.parametrize("choice, launch", [("pmix", "srun --mpi=pmix --kill"),
                                            ("default", "srun  --kill")])
def test_srun_mpi_plugin_is_configurable(tmp_path, choice, launch):
    result, out = generate(tmp_path, "--scheduler", "slurm", "--ranks", "2", "--srun-mpi", choice)
    assert result.returncode == 0, result.stderr
    assert launch in scripts(out)["picard-strong-p00002.sh"]
    result, out = generate(tmp_path, "--scheduler", "slurm", "--ranks", "2", "--srun-mpi", "pmi2; rm")
    assert result.returncode == 2 and "--srun-mpi 'pmi2; rm'" in result.stderr


def test_bind_gpu_picks_the_local_rank(tmp_path):
    bind = os.path.join(ROOT, "jobscripts", "bind-gpu.sh")
    env = {k: v for k, v in os.environ.items()
           if k not in ("CUDA_VISIBLE_DEVICES", "SLURM_LOCALID", "MPI_LOCALRANKID")}
    run = lambda extra: subprocess.run([bind, "sh", "-c", "echo $CUDA_VISIBLE_DEVICES"],  # noqa: E731
                                       env={**env, **extra}, capture_output=True, text=True,
                                       timeout=30).stdout.strip()
    assert run({"MPI_LOCALRANKID": "3"}) == "3"
    assert run({"SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "4,5,6,7"}) == "5"
    assert run({"SLURM_LOCALID": "1", "CUDA_VISIBLE_DEVICES": "6"}) == "6"


def test_collector_reads_outputs_into_the_scaling_table(tmp_path):
    import json

    import h5py
    import numpy as np

    sys.path.insert(0, os.path.join(ROOT, "jobscripts"))
    from collect_sweep import COLUMNS, collect, format_table

    from hpc_picard.config import RunConfig
    from hpc_picard.output import write_samples
    stats = {"rounds": 12, "evaluations": 96, "wall_time": 2.0, "score_time": 0.5,
             "communication_time": 0.25, "noise_time": 0.125, "io_time": 0.5, "restarts": 1}
    for ranks, time_ranks in ((4, 2), (1, 0)):
        config = json.loads(RunConfig(dim=16, num_samples=3, time_ranks=time_ranks).to_json())
        config["field_of_a_newer_version"] = 1
        write_samples(str(tmp_path / f"p{ranks}.h5"), np.zeros((3, 16)), json.dumps(config),
                      ranks, stats, {}, {})
    with h5py.File(tmp_path / "p4.ckpt.h5", "w") as fh:    # a checkpoint: skipped
        fh.create_dataset("states", data=np.zeros(3))
    rows = collect(tmp_path)
    assert [(row["ranks"], row["time_ranks"]) for row in rows] == [(1, 1), (4, 2)]
    assert rows[1]["other_s"] == 2.0 - 0.5 - 0.25 - 0.125
    assert {(row["samples"], row["dim"], row["rounds"], row["evals_per_sample"], row["restarts"])
            for row in rows} == {(3, 16, 12, 96, 1)}
    lines = format_table(rows).splitlines()
    assert lines[0].split() == list(COLUMNS) and len(lines) == 3
    assert collect([str(tmp_path / "p4.h5")])[0]["ranks"] == 4
    with pytest.raises(ValueError, match="not a picard-sample output"):
        collect([str(tmp_path / "p4.ckpt.h5")])
