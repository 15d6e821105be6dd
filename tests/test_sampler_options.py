"""Sampler classes own their options, their checks, their dry-run bounds and memory
estimates; config, cli, plans and dry_run only ask them (samplers/options.py)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from hpc_picard.cli import OPTIONS, main
from hpc_picard.config import ConfigError, RunConfig
from hpc_picard.dry_run import format_plan, make_plan
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run
from hpc_picard.samplers import SAMPLERS, sampler_options

TESTS = os.path.dirname(os.path.abspath(__file__))
SMALL = dict(model="grf", dim=16, num_samples=4, blocks=2, steps_per_block=6, picard_iters=4,
             corrector_steps=3, window=4, seed=1)


@pytest.fixture(autouse=True)
def in_tmp(cli_tmp):
    return cli_tmp


def test_every_sampler_option_is_a_field_a_toml_key_and_a_documented_flag(in_tmp):
    flags = {flag: (name, text) for flag, name, _, text in OPTIONS}
    declared = sampler_options()
    assert {"picard_iters", "tol", "initial_guess", "accelerate", "anderson_depth",
            "corrector_steps", "corrector_time", "corrector_friction", "window",
            "paradigms_form"} <= set(declared)
    toml = []
    for name, (option, users) in declared.items():
        assert getattr(RunConfig(), name) == option.default
        assert flags[option.flag][0] == name
        assert flags[option.flag][1].startswith(", ".join(users) + ":")
        assert all(option in SAMPLERS[user].options for user in users)
        other = option.choices[-1] if option.choices else option.type(option.default) + option.type(1)
        toml.append(f"{option.flag[2:]} = {json.dumps(other)}")
    (in_tmp / "run.toml").write_text("\n".join(toml) + "\n")
    loaded = RunConfig.from_sources("run.toml")
    assert all(getattr(loaded, name) != option.default for name, (option, _) in declared.items())


@pytest.mark.parametrize("changes,needle", [
    ({"corrector_steps": -1}, "--corrector-steps must be non-negative, got -1"),
    ({"window": 0}, "--window must be positive, got 0"),
    ({"corrector_time": float("inf")}, "--corrector-time must be finite"),
    ({"corrector_friction": 0.0}, "--corrector-friction must be positive"),
    ({"paradigms_form": "cubic"}, "unknown --paradigms-form 'cubic'; choose one of: exponential, additive"),
    ({"accelerate": "anderson", "anderson_depth": 0}, "needs --anderson-depth of at least 1"),
    ({"sampler": "piadm-ode", "initial_guess": "noise"}, "use --initial-guess constant"),
    ({"sampler": "paradigms", "checkpoint": "ck.h5"}, "paradigms works on the whole trajectory"),
])
def test_a_sampler_checks_its_options(changes, needle):
    with pytest.raises(ConfigError) as info:
        RunConfig(**{**SMALL, **changes}).validate(1)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_an_option_of_another_sampler_is_a_warning(in_tmp):
    result = CliRunner().invoke(main, ["--dry-run", "--dim", "16", "--window", "8",
                                       "--corrector-steps", "2", "--tol", "0.1"])
    assert result.exit_code == 0, result.output
    assert "warning: --window is not an option of piadm-sde; ignored" in result.output
    assert "warning: --corrector-steps is not an option of piadm-sde; ignored" in result.output
    assert "--tol is not" not in result.output
    assert "plan: piadm-sde" in result.output


@pytest.mark.parametrize("tol", [0.0, 0.3])
@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_dry_run_bounds_hold_for_the_run(sampler, tol):
    # blocks short enough for 4 sweeps to converge
    config = RunConfig(**{**SMALL, "blocks": 8}, sampler=sampler, tol=tol).validate(1)
    plan = make_plan(config, 1)
    stats = run(config, Communicator.self_comm()).stats
    assert plan["min_rounds"] <= stats["rounds"] <= plan["rounds"]
    assert plan["min_evaluations_per_sample"] <= stats["evaluations"] <= plan["evaluations_per_sample"]
    if not plan["early_stopping"]:
        assert (stats["rounds"], stats["evaluations"]) == (plan["rounds"], plan["evaluations_per_sample"])


def test_dry_run_counts_the_corrector_and_the_window():
    ode = make_plan(RunConfig(**SMALL, sampler="piadm-ode", tol=0.0), 1)
    # 2 blocks x (4 predictor sweeps of 6 slices + 3 corrector sweeps of 3 slices);
    # sweep k scores only the slices not yet exact (k-1 of them are): 6+5+4+3 and 3+2+1
    assert (ode["rounds"], ode["evaluations_per_sample"]) == (2 * (4 + 3), 2 * (18 + 6))
    assert not ode["early_stopping"]
    assert "4 per block + 3 corrector sweeps of 3 slices" in format_plan(ode)
    para = make_plan(RunConfig(**SMALL, sampler="paradigms"), 2)
    # 12 slices, windows of 4: 3 to 12 rounds; 12 to 4 + 4 + ... + 3 + 2 + 1 evaluations
    assert (para["min_rounds"], para["rounds"]) == (3, 12)
    assert (para["min_evaluations_per_sample"], para["evaluations_per_sample"]) == (12, 8 * 4 + 10)
    assert [r["slices"] for r in para["ranks"]] == [(0, 2), (2, 4)]
    assert "windows of 4 slices, at least 3 rounds" in format_plan(para)


def test_memory_estimates_grow_with_the_options_that_add_arrays():
    base = RunConfig(**SMALL)
    memory = {name: make_plan(base.replace(**changes), 1)["ranks"][0]["memory_bytes"]
              for name, changes in {"plain": {}, "anderson": {"accelerate": "anderson"},
                                    "ode": {"sampler": "piadm-ode"},
                                    "ode-no-corrector": {"sampler": "piadm-ode", "corrector_steps": 0},
                                    "window-4": {"sampler": "paradigms"},
                                    "window-8": {"sampler": "paradigms", "window": 8}}.items()}
    assert memory["anderson"] > memory["plain"]
    assert memory["ode"] > memory["ode-no-corrector"]
    assert memory["window-8"] > memory["window-4"]


SCRIPT = """
import json, sys
from hpc_picard.samplers import SAMPLERS
from toy_sampler import EulerSampler
SAMPLERS["euler-sde"] = EulerSampler            # the registry line
from click.testing import CliRunner
from hpc_picard.cli import main
from hpc_picard.config import RunConfig
import h5py
run = CliRunner().invoke
small = ["--dim", "16", "--num-samples", "4", "--blocks", "2", "--steps-per-block", "5"]
open("run.toml", "w").write('sampler = "euler-sde"\\neuler-substeps = 3\\n')
out = {
    "help": run(main, ["--help"]).output,
    "dry": run(main, ["--dry-run", "--sampler", "euler-sde", "--euler-substeps", "2"] + small).output,
    "bad": run(main, ["--sampler", "euler-sde", "--euler-substeps", "0"] + small).output,
    "other": run(main, ["--dry-run", "--euler-substeps", "2"] + small).output,
    "toml": RunConfig.from_sources("run.toml").euler_substeps,
}
result = run(main, ["--config", "run.toml", "--quiet"] + small)
with h5py.File("samples.h5") as fh:
    out["run"] = [result.exit_code, int(fh["stats"].attrs["rounds"]),
                  json.loads(fh.attrs["config"])["euler_substeps"]]
print(json.dumps(out))
"""


def test_a_new_sampler_is_one_module_and_one_registry_line(in_tmp):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=in_tmp, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert "--euler-substeps" in out["help"] and "euler-sde: Euler-Maruyama steps per slice." in out["help"]
    assert "euler-sde" in out["help"].split("--sampler")[1].split("--")[0]
    assert "rounds: 20 (10 per block; sequential: 10)" in out["dry"]
    assert "--euler-substeps must be positive, got 0" in out["bad"]
    assert "warning: --euler-substeps is not an option of piadm-sde" in out["other"]
    assert out["toml"] == 3
    assert out["run"] == [0, 30, 3]


def test_reading_the_sampler_classes_does_not_start_mpi():
    """config.py imports the registry; --help and the job-script generator (login
    nodes) must still not initialise MPI (parallel/__init__.py loads comm lazily)."""
    code = ("import sys, hpc_picard.cli, hpc_picard.config; "
            "print('mpi4py.MPI' in sys.modules, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["False", "False"], done.stderr
