"""Fréchet distance maths, the feature classifier, and the run's quality.json."""

import json
import math

import pytest
import torch

from data import ImageSet, load_config, load_split, to_model_range
from data.config import DataConfig
from data.provenance import recorded
from data.rundir import RunPaths
from pipeline import classifier as classifier_module
from pipeline.classifier import (FeatureClassifier, accuracy, features, load_classifier, load_or_train_classifier,
                                 save_classifier, train_classifier)
from pipeline.frechet import frechet_distance, sample_quality
from pipeline.run import write_quality


def gaussian_samples(mean, cov, n=4000, seed=0):
    """Samples whose sample mean and unbiased sample covariance are exactly ``mean`` and ``cov``."""
    mean, cov = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(cov, dtype=torch.float64)
    z = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    z = z - z.mean(0)
    z = z @ torch.linalg.inv(torch.linalg.cholesky(torch.cov(z.T))).T  # whiten: sample covariance = I
    return mean + z @ torch.linalg.cholesky(cov).T


@pytest.fixture(scope="module")
def fashion():
    cfg = DataConfig()
    return load_split(cfg, "train"), load_split(cfg, "val")


# ---------------------------------------------------------------- Fréchet distance


def test_fd_of_a_set_with_itself_is_zero():
    feats = torch.randn(500, 32, generator=torch.Generator().manual_seed(1)).relu()  # sparse, like ReLU features
    assert frechet_distance(feats, feats) == pytest.approx(0.0, abs=1e-6)


def test_fd_is_symmetric():
    gen = torch.Generator().manual_seed(2)
    a = torch.randn(400, 16, generator=gen) @ torch.randn(16, 16, generator=gen)
    b = torch.randn(300, 16, generator=gen) * 2 + 1
    assert frechet_distance(a, b) == pytest.approx(frechet_distance(b, a), rel=1e-9)


def test_fd_matches_closed_form_for_gaussians():
    # Diagonal covariances: FD = sum (mu_a - mu_b)^2 + sum (sigma_a - sigma_b)^2.
    a = gaussian_samples([0.0, 1.0, 2.0], torch.diag(torch.tensor([1.0, 4.0, 9.0])))
    b = gaussian_samples([1.0, 1.0, 0.0], torch.diag(torch.tensor([4.0, 4.0, 1.0])), seed=1)
    assert frechet_distance(a, b) == pytest.approx((1 + 0 + 4) + (1 + 0 + 4), rel=1e-9)
    # Covariances R diag(d) R^T and R diag(e) R^T (non-diagonal, shared eigenvectors):
    # FD = sum (sqrt d - sqrt e)^2 for equal means.
    c, s = math.cos(0.6), math.sin(0.6)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    a = gaussian_samples([0.0, 0.0], rot @ torch.diag(torch.tensor([1.0, 16.0], dtype=torch.float64)) @ rot.T)
    b = gaussian_samples([0.0, 0.0], rot @ torch.diag(torch.tensor([9.0, 4.0], dtype=torch.float64)) @ rot.T, seed=1)
    assert frechet_distance(a, b) == pytest.approx((1 - 3) ** 2 + (4 - 2) ** 2, rel=1e-9)


def test_fd_grows_as_the_distribution_shifts():
    base = torch.randn(1000, 8, generator=torch.Generator().manual_seed(3))
    other = torch.randn(1000, 8, generator=torch.Generator().manual_seed(4))
    distances = [frechet_distance(base, other + shift) for shift in (0.0, 0.25, 0.5, 1.0, 2.0)]
    assert distances == sorted(distances) and distances[-1] > 10 * distances[0]


def test_fd_rejects_mismatched_feature_sizes():
    with pytest.raises(ValueError, match="feature sizes"):
        frechet_distance(torch.randn(10, 3), torch.randn(10, 4))


# ---------------------------------------------------------------- the classifier


def test_classifier_learns_the_labels(fashion):
    train, val = fashion
    classifier = train_classifier(train.images, train.labels, 10, steps=60, batch_size=64, seed=0)
    assert classifier.task == "labels"
    assert accuracy(classifier, val.images, val.labels) > 0.4  # chance: 0.1


def test_classifier_without_labels_learns_rotation(fashion):
    train, val = fashion
    classifier = train_classifier(train.images, None, steps=60, batch_size=64, seed=0)
    assert classifier.task == "rotation"
    assert accuracy(classifier, val.images, None) > 0.45  # chance: 0.25


def test_classifier_accepts_other_sizes_and_channels():
    classifier = FeatureClassifier(in_channels=3, num_classes=5)
    for size in (28, 32, 48):
        assert features(classifier, torch.zeros(6, 3, size, size)).shape == (6, 128)


def test_training_is_deterministic_given_the_seed():
    images = torch.randint(0, 256, (256, 1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(5))
    runs = [train_classifier(images, None, steps=5, batch_size=32, seed=7).state_dict() for _ in range(2)]
    other = train_classifier(images, None, steps=5, batch_size=32, seed=8).state_dict()
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], other[k]) for k in runs[0])


def test_save_load_round_trip_gives_identical_features(tmp_path, fashion):
    _, val = fashion
    classifier = train_classifier(val.images, val.labels, 10, steps=3, batch_size=32, seed=0)
    path = tmp_path / "classifier" / "checkpoint.pt"
    save_classifier(classifier, path, val_accuracy=0.5, computed_from={"inputs": {}, "settings": {"steps": 3}})
    assert set(torch.load(path, weights_only=True)) >= {"model", "model_config", "val_accuracy"}
    loaded, val_accuracy = load_classifier(path)
    x = to_model_range(val.images[:64])
    a, b = features(classifier, x), features(loaded, x)
    assert a.dtype == torch.float64 and a.shape == (64, 128)
    assert torch.equal(a, b) and val_accuracy == 0.5
    assert recorded(path) == {"inputs": {}, "settings": {"steps": 3}}  # the provenance rule reads it


# ---------------------------------------------------------------- the run's classifier and quality.json


@pytest.fixture
def small_splits(monkeypatch, fashion):
    """load_split returning 512 training / 128 val images, to keep the run-level tests quick."""
    calls = []

    def fake(cfg, split):
        calls.append(split)
        data = fashion[0] if split == "train" else fashion[1]
        n = 512 if split == "train" else 128
        return ImageSet(data.images[:n], data.labels[:n], data.class_names, data.dataset, split)

    monkeypatch.setattr(classifier_module, "load_split", fake)
    return calls


def test_run_classifier_is_saved_and_reused_until_settings_change(tmp_path, small_splits):
    cfg = load_config(overrides=["sample.classifier_steps=5"])
    first, acc = load_or_train_classifier(RunPaths(tmp_path), cfg, log=lambda _: None)
    assert (tmp_path / "classifier" / "checkpoint.pt").is_file() and 0.0 <= acc <= 1.0
    assert small_splits == ["train", "val"]
    again, acc_again = load_or_train_classifier(RunPaths(tmp_path), cfg, log=lambda _: None)
    assert small_splits == ["train", "val"] and acc_again == acc  # loaded, not retrained
    x = torch.rand(8, 1, 28, 28) - 0.5
    assert torch.equal(features(first, x), features(again, x))
    load_or_train_classifier(RunPaths(tmp_path), load_config(overrides=["sample.classifier_steps=6"]), log=lambda _: None)
    assert small_splits == ["train", "val"] * 2  # other steps: retrained


def test_run_classifier_has_its_own_seed(tmp_path, small_splits):
    """Another run.seed keeps the feature space; another sample.classifier_seed trains a new network."""
    cfg = load_config(overrides=["sample.classifier_steps=5"])
    first, _ = load_or_train_classifier(RunPaths(tmp_path / "a"), cfg, log=lambda _: None)
    other_run, _ = load_or_train_classifier(RunPaths(tmp_path / "b"), load_config(overrides=["sample.classifier_steps=5",
                                                                                    "run.seed=7"]), log=lambda _: None)
    reseeded, _ = load_or_train_classifier(RunPaths(tmp_path / "b"), load_config(overrides=["sample.classifier_steps=5",
                                                                                   "sample.classifier_seed=7"]),
                                           log=lambda _: None)
    assert small_splits == ["train", "val"] * 3
    x = torch.rand(8, 1, 28, 28) - 0.5
    assert torch.equal(features(first, x), features(other_run, x))
    assert not torch.equal(features(first, x), features(reseeded, x))


def test_write_quality_writes_every_fd_and_the_accuracy(tmp_path, small_splits, fashion):
    cfg = load_config(overrides=["sample.classifier_steps=5"])
    real = to_model_range(fashion[1].images[:200])
    noise = torch.rand(200, 1, 28, 28, generator=torch.Generator().manual_seed(0)) - 0.5
    result = write_quality(RunPaths(tmp_path), cfg, real, {"reconstructions": real.flip(0), "learned": real + 0.05,
                                                 "marginal": noise, "uniform": noise * 0.5}, log=lambda _: None)
    saved = json.loads((tmp_path / "report" / "quality.json").read_text())
    assert saved == result
    assert {"fd_reconstructions", "fd_learned", "fd_marginal", "fd_uniform", "classifier_val_accuracy",
            "fd_samples"} <= set(saved)
    assert saved["fd_reconstructions"] == pytest.approx(0.0, abs=1e-6)  # same images, other order
    assert saved["fd_marginal"] > saved["fd_learned"] and saved["fd_samples"] == 200


# ---------------------------------------------------------------- novelty: nearest training images


def test_nearest_over_chunks_matches_brute_force():
    from pipeline.novelty import nearest

    gen = torch.Generator().manual_seed(0)
    queries, references = torch.randn(37, 5, generator=gen), torch.randn(101, 5, generator=gen)
    distance, index = nearest(queries, references.split(16))  # 7 chunks, the last one short
    brute = torch.cdist(queries, references)
    torch.testing.assert_close(distance, brute.min(1).values, rtol=1e-5, atol=1e-5)
    assert torch.equal(index, brute.argmin(1))


def test_pixel_distance_is_the_rms_pixel_difference():
    from pipeline.novelty import nn_distances, pixel_embedding

    train = torch.zeros(3, 1, 4, 4, dtype=torch.uint8)
    train[1] += 255  # an all-white image
    sample = torch.full((1, 1, 4, 4), 0.5)  # model-range white, plus a half-grey corner pixel
    sample[0, 0, 0, 0] = 0.0
    distance, index = nn_distances(sample, train, pixel_embedding, chunk=2)
    assert index.tolist() == [1] and distance.item() == pytest.approx(math.sqrt(0.5 ** 2 / 16), rel=1e-5)


def test_copies_of_training_images_are_counted_and_new_images_are_not(fashion):
    from pipeline.novelty import measure_novelty

    train, val = fashion[0].images[:600], to_model_range(fashion[1].images[:200])
    copies = to_model_range(train[:50])
    stats, neighbours = measure_novelty(copies, val, train, lambda x: x.flatten(1))
    assert stats["space"] == "pixel" and stats["copy_fraction"] == 1.0 and stats["median_nn_distance_samples"] < 1e-3
    assert neighbours["pixel"][1].tolist() == list(range(50))  # each copy finds its own original
    assert stats["median_nn_distance_val"] > 0.05 and stats["feature"]["copy_fraction"] == 1.0
    fresh, _ = measure_novelty(to_model_range(fashion[1].images[200:300]), val, train, lambda x: x.flatten(1))
    assert fresh["copy_fraction"] < 0.1  # other held-out images: about the 1% the threshold lets through


def test_several_draws_of_a_set_give_the_mean_distance_and_each_draw_is_kept(fashion):
    real = to_model_range(fashion[1].images[:200])
    draws = [real + 0.05 * k for k in (1, 2, 3)]
    classifier = FeatureClassifier(1, 10)
    single = sample_quality(classifier, real, {f"d{k}": x for k, x in enumerate(draws)})
    both = sample_quality(classifier, real, {"learned": draws, "learned_T1": draws, "one": draws[0]})
    each = [single[f"fd_d{k}"] for k in range(3)]
    assert both["fd_by_draw"] == {"learned": each, "learned_T1": each}  # no entry for a single set
    assert both["fd_learned"] == both["fd_learned_T1"] == pytest.approx(sum(each) / 3)
    assert both["fd_one"] == each[0] and len(set(each)) == 3
