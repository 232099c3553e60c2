"""The benchmark scripts' command lines run end to end on small settings and write their results."""

import json

import pytest

pytest.importorskip("spikingjelly")


@pytest.fixture(autouse=True)
def keep_threads():
    """The scripts set torch's (and numba's) thread count for the process: restore it after each."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_peers_writes_json_and_table(tmp_path):
    from bench import peers

    result = peers.main(["--sizes", "seed", "--configs", "sj-soft,snn-subtract", "--repeats", "2", "--threads", "1",
                         "--out", str(tmp_path)])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert len(files) == 2 and files[0].endswith("-1threads.json") and files[1].endswith(".md")
    saved = json.loads((tmp_path / files[0]).read_text())
    assert saved["malloc"] == "glibc" and [r["config"] for r in saved["rows"]] == ["sj-soft", "snn-subtract"]
    assert all(r["spikes_differ"] == 0 and r["speedup"] > 0 for r in result["rows"])
    assert "allocator: glibc's defaults" in (tmp_path / files[1]).read_text()


def test_peers_rejects_unknown_sizes(capsys):
    from bench import peers

    with pytest.raises(SystemExit):
        peers.main(["--sizes", "huge"])
    assert "unknown sizes ['huge']" in capsys.readouterr().err


def test_spike_profile_writes_the_pieces(tmp_path):
    from bench import spike_profile

    result = spike_profile.main(["--workloads", "bigbatch", "--repeats", "2", "--out", str(tmp_path)])
    (row,) = result["rows"]
    assert set(row["median_ms"]) == {"step (events)", "step (dense)", "rest", "pack", "events fwd", "events wgrad",
                                      "dense fwd", "dense wgrad"}
    assert 0.15 < row["density"] < 0.3 and row["M"] == 102400 and row["N"] == 30
    table = next(tmp_path.glob("spike-profile-*.md")).read_text()
    assert "step / rest" in table and "packing alone takes" in table


def test_phase_offsets_reproduces_a_runs_own_metrics(tmp_path, capsys):
    """At the offset its test evaluation drew (the run's eval_test stream), the run's test set scores exactly its
    metrics.json test accuracy; the table has a row per set and a column per offset."""
    import torch

    from bench import phase_offsets
    from fastsnn.experiment.cli import main as fastsnn
    from fastsnn.experiment.run import dataset, generator, load_checkpoint

    out = tmp_path / "run"
    assert fastsnn(["train", "--epochs", "2", "--train-batches", "2", "--test-batches", "2", "--batch-size", "16",
                    "--hidden", "6", "--anf-per-ear", "10", "--max-delay", "4", "--readout-max-delay", "3",
                    "--quiet", "--seed", "5", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    config, model = load_checkpoint(out / "checkpoint.pt")
    drawn = torch.rand((), generator=generator(5, "eval_test"), dtype=torch.float64).item()
    assert phase_offsets.accuracy(model, dataset(config, "test", 5), drawn, batch_size=7) == metrics["test_accuracy"]
    rows = phase_offsets.main([str(out), "--offsets", "3"])
    assert [row["set"] for row in rows] == ["train", "test"] and all(len(row["accuracy"]) == 3 for row in rows)
    assert "| 0.00 | 0.33 | 0.67 | mean | min | max |" in capsys.readouterr().out
