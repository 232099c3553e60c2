"""The command line: a tiny run writes every artefact, evaluate reloads it, bad flags fail clearly."""

import json
import re
import subprocess
import sys

import pytest

from fastsnn.experiment.cli import main
from fastsnn.experiment.config import RunConfig

TINY = ["--epochs", "2", "--train-batches", "2", "--test-batches", "1", "--batch-size", "16", "--hidden", "5",
        "--anf-per-ear", "10", "--quiet", "--seed", "3"]
ARTEFACTS = ["config.json", "metrics.json", "history.csv", "checkpoint.pt", "inputs.png", "loss.png",
             "ipd_hist_train.png", "ipd_hist_test.png", "confusion_train.png", "confusion_test.png"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def test_train_writes_every_artefact(tiny_run):
    for name in ARTEFACTS:
        path = tiny_run / name
        assert path.is_file() and path.stat().st_size > 0, name
        if name.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    config = RunConfig.from_dict(json.loads((tiny_run / "config.json").read_text()))
    assert (config.model.hidden, config.stimulus.anf_per_ear, config.train.train_samples) == (5, 10, 32)
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    for key in ("test_accuracy", "test_abs_error_deg", "train_accuracy", "train_abs_error_deg", "epochs",
                "wall_seconds"):
        assert key in metrics, key
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["epochs"] == 2
    assert len((tiny_run / "history.csv").read_text().strip().splitlines()) == 1 + 2


def test_evaluate_reloads_the_checkpoint(tiny_run, tmp_path, capsys):
    assert main(["evaluate", str(tiny_run / "checkpoint.pt"), "--seed", "5", "--out", str(tmp_path)]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tmp_path / "evaluate-seed5.json").read_text())
    assert printed == saved and saved["samples"] == 16 and 0 <= saved["test_accuracy"] <= 1
    # the same seed gives the same fresh test set and so the same numbers
    assert main(["evaluate", str(tiny_run / "checkpoint.pt"), "--seed", "5", "--out", str(tmp_path)]) == 0
    assert json.loads(capsys.readouterr().out) == printed


@pytest.mark.parametrize("flags,message", [
    (["--hidden", "0"], "hidden must be an integer >= 1"),
    (["--tau-ms", "-5"], "tau_ms must be a finite number > 0"),
    (["--ie-ratio", "2"], r"ie_ratio must be a number in \[0, 1\]"),
    (["--train-batches", "0"], "--train-batches must be >= 1"),
    (["--lr", "0"], "lr must be a finite number > 0"),
    (["--backend", "fpga"], "invalid choice: 'fpga'"),
    (["--epochs", "ten"], "invalid int value: 'ten'"),
])
def test_bad_train_flags(flags, message, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: fastsnn" in err
    assert __import__("re").search(message, err), err


def test_evaluate_missing_checkpoint(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["evaluate", str(tmp_path / "nope.pt")])
    assert "does not exist" in capsys.readouterr().err


def test_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "fastsnn", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--anf-per-ear" in out.stdout and "--dales-law" in out.stdout


def test_evaluate_says_what_it_wrote_where(tiny_run, tmp_path, capsys):
    assert main(["evaluate", str(tiny_run / "checkpoint.pt"), "--seed", "6", "--out", str(tmp_path)]) == 0
    names = ["evaluate-seed6.json", "ipd_hist_eval-seed6.png", "confusion_eval-seed6.png"]
    assert f"wrote {', '.join(names)} in {tmp_path}" in capsys.readouterr().err
    assert all((tmp_path / name).is_file() for name in names)


def test_a_runs_loss_figure_is_titled_with_its_identity(tiny_run):
    from fastsnn.experiment.run import run_title

    config = RunConfig.from_dict(json.loads((tiny_run / "config.json").read_text()))
    title = run_title(tiny_run, config)
    assert title.startswith(f"{tiny_run.name}: seed 3, anf_per_ear=10, hidden=5, epochs=2, batch_size=16"), title
    assert "threads" not in title and "seed=" not in title
    assert run_title(tiny_run, RunConfig()) == f"{tiny_run.name}: seed 0, the seed network's defaults"


@pytest.mark.parametrize("command", ["train", "sweep"])
def test_help_shows_the_defaults(command):
    out = subprocess.run([sys.executable, "-m", "fastsnn", command, "--help"], capture_output=True, text=True).stdout
    flat = " ".join(out.split())
    assert "maximum epochs (early stopping may end sooner) (default: 150)" in flat
    assert re.search(r"--lr LR Adam learning rate [^)]*(?:\([^)]*\))? \(default: 0\.005\)", flat), flat
    assert "(default: None)" not in flat
