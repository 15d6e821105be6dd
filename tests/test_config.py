import pytest

from hpc_picard.config import ConfigError, RunConfig


def write(tmp_path, text):
    p = tmp_path / "run.toml"
    p.write_text(text)
    return str(p)


def test_file_then_overrides(tmp_path):
    path = write(tmp_path, 'model = "gmm"\ndim = 9\nsteps-per-block = 5\ntol = 0\n')
    cfg = RunConfig.from_sources(path, {"dim": 12})
    assert (cfg.model, cfg.dim, cfg.steps_per_block, cfg.tol) == ("gmm", 12, 5, 0.0)
    assert isinstance(cfg.tol, float)


@pytest.mark.parametrize("text,needle", [
    ("colour = 3\n", "unknown configuration key(s): colour"),
    ('dim = "big"\n', "'dim' must be of type int"),
    ("tol = true\n", "'tol' must be of type float"),
    ("dim = 3.5\n", "'dim' must be of type int"),
    ("dim = \n", "not valid TOML"),
])
def test_bad_files(tmp_path, text, needle):
    with pytest.raises(ConfigError, match=None) as info:
        RunConfig.from_sources(write(tmp_path, text))
    assert needle in str(info.value)


def test_missing_file():
    with pytest.raises(ConfigError, match="cannot read config file"):
        RunConfig.from_sources("/nonexistent/run.toml")


@pytest.mark.parametrize("changes,needle", [
    ({"model": "nope"}, "unknown model 'nope'"),
    ({"sampler": "euler"}, "unknown sampler 'euler'"),
    ({"dim": 10}, "perfect square"),
    ({"dim": -4}, "--dim must be positive"),
    ({"num_samples": -1}, "--num-samples must be positive"),
    ({"blocks": 0}, "--blocks must be positive"),
    ({"steps_per_block": 0}, "--steps-per-block must be positive"),
    ({"picard_iters": 0}, "--picard-iters must be positive"),
    ({"T": 1e-3}, "--T must exceed --delta"),
    ({"delta": 0.0}, "--delta must be positive"),
    ({"tol": -1.0}, "--tol must be non-negative"),
    ({"output": "/nonexistent/dir/x.h5"}, "does not exist"),
])
def test_validation(changes, needle, tmp_path):
    cfg = RunConfig(output=str(tmp_path / "x.h5")).replace(**changes)
    with pytest.raises(ConfigError) as info:
        cfg.validate(1)
    assert needle in str(info.value)
    assert "\n" not in str(info.value)


def test_rank_dependent_validation(tmp_path):
    cfg = RunConfig(steps_per_block=3, output=str(tmp_path / "x.h5"))
    cfg.validate(3)
    with pytest.raises(ConfigError, match="4 time ranks but only 3 slices per block"):
        cfg.validate(4)
    # sequential samplers split samples, not slices
    cfg.replace(sampler="sequential-sde").validate(4)
    with pytest.raises(ConfigError, match="must divide the number of ranks"):
        cfg.replace(time_ranks=2).validate(3)


def test_config_round_trips_through_json():
    import json
    cfg = RunConfig(model="gmm", dim=7, tol=0.0)
    assert RunConfig.from_dict(json.loads(cfg.to_json())) == cfg
