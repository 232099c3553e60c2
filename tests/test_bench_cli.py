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


def test_report_with_peers_writes_only_into_its_out_folder(tmp_path, monkeypatch, capsys):
    """The default --out (runs/bench) takes every file, the peers' included; the committed bench/results is
    left alone. Without the seed notebook's script the report says so and claims no chart."""
    from bench import common, report, seed_baseline

    monkeypatch.setattr(common, "OUT", tmp_path / "out")
    monkeypatch.setattr(seed_baseline, "SEED_PATH", tmp_path / "missing.py")
    committed = {path: path.stat().st_mtime_ns for path in common.RESULTS.rglob("*")}
    report.main(["--workloads", "seed", "--repeats", "2", "--no-memory", "--peers"])
    assert {path: path.stat().st_mtime_ns for path in common.RESULTS.rglob("*")} == committed
    written = sorted(path.suffix for path in (tmp_path / "out").iterdir())
    assert written == [".json"] * 3 + [".md"] * 3  # the report, bench.peers, bench.peer_step; no chart
    out, err = capsys.readouterr()
    assert f"no seed notebook script at {tmp_path / 'missing.py'}: the seed's columns" in err
    assert "--seed-script PATH or set FASTSNN_SEED" in err
    stem = next(line for line in out.splitlines() if line.startswith("wrote ") and "cpu-" in line)
    assert stem.endswith(".{json,md}"), stem


def test_a_seed_script_that_is_not_there_is_an_error(tmp_path, capsys):
    from bench import whole_run

    with pytest.raises(SystemExit):
        whole_run.main(["--seeds", "0", "--seed-script", str(tmp_path / "nope.py"), "--out", str(tmp_path)])
    assert f"--seed-script {tmp_path / 'nope.py'}: no such file" in capsys.readouterr().err


SCRIPTS = ["ab_step", "delays", "docs_figures", "epoch", "family", "gpu_check", "pack", "peer_step", "peers",
           "report", "spike_crossover", "spike_profile", "stimulus", "threads", "variants", "whole_run"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_imports_and_explains_itself(name, capsys):
    """bench/README.md lists these; each imports against the current package layout and answers --help."""
    import importlib

    module = importlib.import_module(f"bench.{name}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0 and "usage:" in capsys.readouterr().out


def test_epoch_breaks_an_epoch_down(tmp_path):
    from bench import epoch

    result = epoch.main(["--rounds", "1", "--epochs", "2", "--run-epochs", "0", "--no-seed", "--out", str(tmp_path)])
    (row,) = result["fastsnn_epochs"]  # the first epoch is left out
    assert abs(sum(row[part] for part in epoch.PARTS) - row["epoch"]) < 1e-9
    assert all(row[part] > 0 for part in ("stimulus", "training steps", "validation forwards", "saving"))
    assert result["ready_inputs_s"]["training steps"] > 0 and result["epoch_over_ready"] > 0
    table = next(tmp_path.glob("epoch-*.md")).read_text()
    assert "| stimulus |" in table and "Ready inputs" in table


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


def test_pack_gpu_part_runs_at_a_tiny_size():
    """bench.gpu_check's packed-sweep part (bench.pack.throughput and end_to_end), on the CPU at a tiny size, so
    that a GPU session does not find it broken."""
    from bench import pack
    from fastsnn.experiment.config import ModelConfig, RunConfig, StimulusConfig, TrainConfig

    tiny = RunConfig(StimulusConfig(anf_per_ear=4, steps=12), ModelConfig(hidden=5),
                     TrainConfig(batch_size=8, train_samples=16, valid_samples=8, test_samples=8, threads=1))
    out = pack.throughput(sizes=(1, 3), device="cpu", repeats=1, base=tiny)
    assert [r["runs"] for r in out["rows"]] == [1, 3] and all(r["runs_per_s"] > 0 for r in out["rows"])
    assert sum(out["packs_of_108"]) == 108
    sweep = pack.end_to_end(epochs=1, device="cpu", base=tiny)
    assert sweep["first_epoch_loss_rel_max"] == 0 and sweep["test_accuracy_abs_diff_max"] == 0  # per member
