"""Conditional sampling: --labels, classifier-free guidance, the condition in every sampler.

The exact conditional target is the Gaussian mixture: label c is component c, label -1
the whole mixture (hpc_picard/models/gmm.py), so guided runs are checked to round-off
against the sequential samplers and against one rank.
"""
import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hpc_picard.check import check_model
from hpc_picard.cli import main
from hpc_picard.conditioning import NULL_LABEL, Condition, parse_labels, resolve_labels
from hpc_picard.config import ConfigError, RunConfig
from hpc_picard.models import build_model
from hpc_picard.models.base import ScoreModel
from hpc_picard.models.gmm import GaussianMixture
from hpc_picard.parallel import Communicator
from hpc_picard.runner import run

# four well-separated components, mixed labels over 7 samples (not a multiple of 4)
GUIDED = dict(model="gmm", dim=6, num_samples=7, gmm_components=4, gmm_radius=4.0, blocks=3,
              steps_per_block=6, picard_iters=6, tol=0.0, seed=5, labels="0-3",
              guidance_scale=1.5, corrector_steps=0, window=6, output="unused.h5")


def sample(**changes):
    return run(RunConfig(**{**GUIDED, **changes}).validate(), Communicator.self_comm())


# -- --labels ---------------------------------------------------------------------------
def test_label_lists_ranges_and_files_are_cycled_over_the_samples(tmp_path):
    assert parse_labels("") == ("none", None)
    assert parse_labels("random") == ("random", None)
    assert parse_labels("0-2, 7").__getitem__(1).tolist() == [0, 1, 2, 7]
    assert resolve_labels("3,5", 5, 0, 10).tolist() == [3, 5, 3, 5, 3]
    assert resolve_labels("0-9", 200, 0, 10).tolist() == list(range(10)) * 20
    path = tmp_path / "labels.txt"
    path.write_text("# one per line or comma separated\n4\n1, 2\n")
    assert resolve_labels(str(path), 4, 0, 10).tolist() == [4, 1, 2, 4]
    random = resolve_labels("random", 500, 7, 10)
    assert random.min() == 0 and random.max() == 9
    assert resolve_labels("random", 10, 7, 10).tolist() == random[:10].tolist()
    assert resolve_labels("random", 10, 8, 10).tolist() != random[:10].tolist()


@pytest.mark.parametrize("spec,classes,message", [
    ("5-2", 10, "runs backwards"), ("no/such/file", 10, "neither a list"),
    ("10", 10, "label 10 is not a class"), ("1", 0, "needs a class-conditional model")])
def test_bad_labels_are_config_errors(spec, classes, message):
    with pytest.raises(ConfigError, match=message):
        resolve_labels(spec, 4, 0, classes)


def test_guidance_needs_labels_and_a_sane_scale():
    with pytest.raises(ConfigError, match="needs --labels"):
        RunConfig(guidance_scale=1.0).validate()
    with pytest.raises(ConfigError, match="--guidance-scale"):
        RunConfig(labels="1", guidance_scale=-1.0).validate()


# -- the guided score -------------------------------------------------------------------
class RecordingModel(GaussianMixture):
    """The mixture, recording the rows and labels of every call."""

    def __init__(self, *args, **kw):
        super().__init__(*args, **kw)
        self.calls = []

    def score(self, x, t, cond=None):
        self.calls.append(None if cond is None else np.array(cond))
        return super().score(x, t, cond)


def test_guided_score_is_one_batch_of_pairs_within_max_batch():
    model = RecordingModel(5, components=3, radius=3.0)
    rng = np.random.default_rng(0)
    x, t = rng.standard_normal((8, 5)), np.full(8, 0.3)
    labels = np.array([0, 1, 2, 0])
    cond = Condition(labels, scale=2.0)
    owners = np.arange(8) % 4
    got = cond.score(model, x, t, owners)
    want = 3.0 * model.score(x, t, labels[owners]) - 2.0 * model.score(x, t)
    np.testing.assert_allclose(got, want, rtol=1e-13)
    pair = model.calls[0]
    assert pair.tolist() == labels[owners].tolist() + [NULL_LABEL] * 8

    # through a sampler with --max-batch 5: pairs never split, calls within 5 rows
    model.calls.clear()
    config = RunConfig(**{**GUIDED, "num_samples": 4, "max_batch": 5, "dim": 5, "labels": "0-2",
                          "gmm_components": 3, "gmm_radius": 3.0})
    chunked = run(config.validate(), Communicator.self_comm(), model=model)
    assert all(len(c) <= 5 and len(c) % 2 == 0 for c in model.calls)
    assert all((c[len(c) // 2:] == NULL_LABEL).all() and (c[:len(c) // 2] >= 0).all()
               for c in model.calls)
    whole = run(config.replace(max_batch=0).validate(), Communicator.self_comm(), model=model)
    np.testing.assert_allclose(chunked.samples, whole.samples, rtol=1e-13)


def test_stats_count_a_guided_pair_as_two_network_rows():
    guided, plain = sample(), sample(guidance_scale=0.0)
    assert guided.stats["network_rows_per_evaluation"] == 2
    assert plain.stats["network_rows_per_evaluation"] == 1
    assert guided.stats["evaluations"] == plain.stats["evaluations"]
    assert sample(labels="", guidance_scale=0.0).stats.get("network_rows_per_evaluation") is None


# -- every sampler, exact -----------------------------------------------------------------
@pytest.mark.parametrize("sampler,reference", [
    ("piadm-sde", "sequential-sde"), ("piadm-ode", "sequential-ode"), ("paradigms", "sequential-sde")])
def test_guided_parallel_samplers_with_all_sweeps_equal_sequential(sampler, reference):
    ref = sample(sampler=reference).samples
    got = sample(sampler=sampler).samples
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12 * np.abs(ref).max())
    # and guidance really changed the run
    assert np.abs(sample(sampler=sampler, guidance_scale=0.0).samples - got).max() > 1e-3


def test_labels_steer_samples_to_their_component():
    result = sample(sampler="sequential-sde", num_samples=16, blocks=6, steps_per_block=12,
                    guidance_scale=0.0)
    model = result.model
    acc = model.accuracy(result.samples, 1e-3, 0, labels=result.labels)
    assert acc["label_accuracy"] == 1.0
    assert result.labels.tolist() == [0, 1, 2, 3] * 4


# -- files -----------------------------------------------------------------------------
def invoke(*args):
    return CliRunner().invoke(main, [*args, "--quiet"], catch_exceptions=False)


GMM_ARGS = ["--model", "gmm", "--dim", "4", "--num-samples", "6", "--blocks", "3",
            "--steps-per-block", "4", "--picard-iters", "4", "--gmm-components", "3"]


def test_output_holds_labels_and_checkpoint_refuses_changed_label_file(cli_tmp):
    labels = cli_tmp / "labels.txt"
    labels.write_text("2 0 1")
    res = invoke(*GMM_ARGS, "--labels", str(labels), "--guidance-scale", "1",
                 "--output", "a.h5", "--checkpoint", "a.ckpt")
    assert res.exit_code == 0, res.output
    with h5py.File(cli_tmp / "a.h5") as fh:
        assert fh["labels"][()].tolist() == [2, 0, 1, 2, 0, 1]
        assert fh["stats"].attrs["network_rows_per_evaluation"] == 2
        assert 0.0 <= fh["stats"].attrs["label_accuracy"] <= 1.0
    with h5py.File(cli_tmp / "a.ckpt") as fh:
        assert fh["labels"][()].tolist() == [2, 0, 1, 2, 0, 1]
    labels.write_text("1 1 1")
    res = invoke(*GMM_ARGS, "--labels", str(labels), "--guidance-scale", "1",
                 "--output", "b.h5", "--checkpoint", "a.ckpt", "--resume")
    assert res.exit_code == 2 and "other class labels" in res.output
    assert not (cli_tmp / "b.h5").exists()


def test_labels_for_an_unconditional_model_fail_cleanly(cli_tmp):
    res = invoke("--model", "grf", "--dim", "16", "--num-samples", "2", "--labels", "1",
                 "--output", "x.h5")
    assert res.exit_code == 2
    assert "needs a class-conditional model" in res.output
    assert not (cli_tmp / "x.h5").exists()


# -- picard-check-model -----------------------------------------------------------------
class IgnoresLabels(ScoreModel):
    dim, num_classes = 3, 2

    def score(self, x, t, cond=None):
        return -np.asarray(x)


class NullIsNotUnconditional(IgnoresLabels):
    def score(self, x, t, cond=None):
        shift = 0.0 if cond is None else np.asarray(cond)[:, None] + 2.0
        return -np.asarray(x) + 0.01 * shift


def test_check_model_catches_ignored_labels_and_a_wrong_null_label():
    good = check_model(GaussianMixture(4, components=3, radius=3.0))
    assert good.status("condition") == "ok" and good.status("null label") == "ok"
    ignored = check_model(IgnoresLabels())
    assert ignored.status("condition") == "fail" and not ignored.ok
    wrong = check_model(NullIsNotUnconditional())
    assert wrong.status("condition") == "ok" and wrong.status("null label") == "fail"


def test_gmm_conditional_score_is_its_component():
    model = build_model(RunConfig(model="gmm", dim=3, gmm_components=2, gmm_radius=2.0))
    x, t = np.ones((2, 3)), np.array([0.2, 0.7])
    got = model.score(x, t, cond=np.array([1, NULL_LABEL]))
    v = model._variance(t[0])
    np.testing.assert_allclose(got[0], -(x[0] - np.exp(-0.2) * model.means[1]) / v)
    np.testing.assert_allclose(got[1], model.score(x[1:], t[1:])[0])


# -- diffusers: a class-conditional UNet2DModel ---------------------------------------------
def test_diffusers_class_labels_reach_the_unet(tmp_path):
    diffusers = pytest.importorskip("diffusers")
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(
        sample_size=4, in_channels=1, out_channels=1, layers_per_block=1,
        block_out_channels=(8, 8), down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4, num_class_embeds=4)
    unet.save_pretrained(str(tmp_path / "unet"))
    diffusers.DDPMScheduler(num_train_timesteps=20, beta_end=0.3).save_pretrained(
        str(tmp_path / "scheduler"))
    config = RunConfig(model=f"diffusers:{tmp_path}", dim=16, num_samples=3, blocks=2,
                       steps_per_block=3, picard_iters=3, tol=0.0, labels="0,2", guidance_scale=2.0)
    model = build_model(config.validate())
    assert model.num_classes == 3            # the fourth embedding is the null class
    x = np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)
    t = np.array([0.3, 0.3])
    got = model.score(x, t, cond=np.array([2, NULL_LABEL]))
    with torch.no_grad():
        eps = model.unet(torch.as_tensor(x).reshape(2, 1, 4, 4),
                         torch.as_tensor(model.clock.timestep(t), dtype=torch.float32),
                         class_labels=torch.tensor([2, 3])).sample.reshape(2, 16).double().numpy()
    np.testing.assert_allclose(got, -eps / np.sqrt(-np.expm1(-2 * t))[:, None], rtol=1e-5)
    report = check_model(model, points=4)
    assert report.status("condition") == "ok" and report.status("null label") == "ok"
    seq = run(config.replace(sampler="sequential-sde").validate(), Communicator.self_comm(), model=model)
    par = run(config.validate(), Communicator.self_comm(), model=model)
    # float32 network: batches of other compositions agree to its round-off
    assert np.abs(par.samples - seq.samples).max() <= 1e-4 * np.abs(seq.samples).max()
    assert seq.labels.tolist() == [0, 2, 0]
