"""Config validation: each bad value raises a ValueError naming its field; JSON round trip."""

import json

import pytest

from fastsnn.experiment.config import LOSS_SCALES, ModelConfig, RunConfig, StimulusConfig, TrainConfig

BAD = [
    (StimulusConfig, "anf_per_ear", 0), (StimulusConfig, "anf_per_ear", 2.5), (StimulusConfig, "steps", 0),
    (StimulusConfig, "dt_ms", -1.0), (StimulusConfig, "dt_ms", float("nan")), (StimulusConfig, "rate_max_hz", 0.0),
    (StimulusConfig, "rate_max_hz", 2000.0), (StimulusConfig, "tone_hz", -20.0),
    (StimulusConfig, "envelope_power", 0.0), (StimulusConfig, "num_classes", 1),
    (StimulusConfig, "phase_offset", "per_epoch"),
    (ModelConfig, "hidden", 0), (ModelConfig, "hidden", True), (ModelConfig, "tau_ms", -5.0),
    (ModelConfig, "tau_ms", 0.0), (ModelConfig, "tau_ms", float("inf")), (ModelConfig, "readout_tau_ms", -1.0),
    (ModelConfig, "threshold", 0.0), (ModelConfig, "beta", -5.0), (ModelConfig, "ie_ratio", 1.5),
    (ModelConfig, "ie_ratio", -0.1), (ModelConfig, "dale_mask", "checkerboard"), (ModelConfig, "backend", "cuda"),
    (TrainConfig, "epochs", 0), (TrainConfig, "lr", 0.0), (TrainConfig, "lr", -0.1), (TrainConfig, "batch_size", 0),
    (TrainConfig, "train_samples", 0), (TrainConfig, "test_samples", -5), (TrainConfig, "loss_scale", 0.0),
    (TrainConfig, "patience", 0), (TrainConfig, "min_epochs", -1), (TrainConfig, "seed", -1),
    (TrainConfig, "device", "tpu"), (TrainConfig, "threads", 0),
]


@pytest.mark.parametrize("kind,field,value", BAD, ids=[f"{k.__name__}.{f}={v!r}" for k, f, v in BAD])
def test_bad_value_names_the_field(kind, field, value):
    with pytest.raises(ValueError, match=rf"^{field} must be"):
        kind(**{field: value})


@pytest.mark.parametrize("split", ["train_samples", "valid_samples", "test_samples"])
def test_batch_larger_than_the_data_set(split):
    with pytest.raises(ValueError, match=rf"^batch_size must be at most {split} \(32\)"):
        TrainConfig(batch_size=64, **{split: 32})


def test_defaults_are_the_seeds():
    s, m, t = StimulusConfig(), ModelConfig(), TrainConfig()
    assert (s.anf_per_ear, s.inputs, s.steps, s.dt_ms, s.rate_max_hz, s.tone_hz, s.num_classes) == (
        100, 200, 100, 1.0, 600.0, 20.0, 12)
    assert (m.hidden, m.tau_ms, m.threshold, m.beta, m.dales_law, m.ie_ratio, m.detach_reset) == (
        30, 5.0, 1.0, 5.0, False, 0.5, False)
    assert (t.epochs, t.lr, t.batch_size, t.train_samples, t.valid_samples, t.test_samples) == (
        150, 0.005, 64, 4096, 4096, 2048)
    assert (t.loss_scale, LOSS_SCALES[m.readout], t.patience, t.min_epochs, t.restore_best) == (
        None, 0.01, 10, 10, True)
    assert (m.readout, s.phase_offset, s.phase_jitter, m.spike_dropout, m.segments, t.validation, t.rate_weight) == (
        "sum", "per_pass", 0.0, 0.0, 0, True, 0.0)


def test_json_round_trip():
    config = RunConfig(StimulusConfig(anf_per_ear=7), ModelConfig(hidden=3, dales_law=True), TrainConfig(seed=9))
    assert RunConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match="unknown model fields"):
        RunConfig.from_dict({"model": {"hiden": 3}})
    with pytest.raises(ValueError, match="unknown config sections"):
        RunConfig.from_dict({"modle": {}})
