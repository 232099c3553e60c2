"""fastsnn sweep-report: on a 1-d, 2-d and 3-d grid (tiny runs) it writes summary.md / summary.csv whose
numbers match a hand computation from results.csv, and figures named for the swept keys; --x / --hue /
--metric choose what is drawn, and a bad choice is a one-line error naming the flag and the valid ones."""

import csv
import re
import statistics

import pytest

from fastsnn.experiment.cli import main
from fastsnn.experiment.sweeps import cpu_model, read_results

TINY = ["--anf-per-ear", "8", "--train-batches", "2", "--test-batches", "1", "--epochs", "2", "--batch-size", "16",
        "--threads", "1", "--quiet"]
GRID = ["--grid", "tau-ms=2,5,10", "--grid", "hidden=4,8", "--grid", "dales-law=true,false"]
SUMMARY = ("test_accuracy", "test_abs_error_deg", "epochs_run", "wall_seconds")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def sweep3(tmp_path_factory):
    """A 3 x 2 x 2 grid, 2 seeds: 24 tiny runs; `fastsnn sweep` draws the figures when it ends."""
    out = tmp_path_factory.mktemp("sweep3")
    assert main(["sweep", *TINY, *GRID, "--seeds", "2", "--out", str(out)]) == 0
    return out


def subset(sweep, out, **fixed):
    """``out/results.csv``: the rows of ``sweep`` whose fields equal ``fixed`` (a smaller grid)."""
    text = (sweep / "results.csv").read_text().splitlines(keepends=True)
    keep = [line for line, row in zip(text[1:], csv.DictReader(text))
            if all(row[k] == v for k, v in fixed.items())]
    out.mkdir(exist_ok=True)
    (out / "results.csv").write_text(text[0] + "".join(keep))
    return out


def figures(out):
    return sorted(p.name for p in out.glob("*.png") if p.read_bytes()[:8] == PNG)


def by_point(rows, keys):
    points = {}
    for row in rows:
        points.setdefault(tuple(row[k] for k in keys), []).append(row)
    return points


def assert_summary_matches_rows(out, keys, points):
    """summary.csv: one line per point, n and the mean and sample std of each metric as computed by hand."""
    rows = by_point(read_results(out / "results.csv"), keys)
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert len(summary) == len(rows) == points
    for line in summary:
        runs = rows[tuple(line[k] for k in keys)]
        assert int(line["n"]) == len(runs)
        for metric in SUMMARY:
            x = [float(run[metric]) for run in runs]
            assert float(line[f"{metric}_mean"]) == pytest.approx(statistics.mean(x), rel=1e-12), metric
            assert float(line[f"{metric}_std"]) == pytest.approx(statistics.stdev(x), rel=1e-12, abs=1e-15), metric
    md = (out / "summary.md").read_text()
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0] == "| " + " | ".join([*keys, "n", "test accuracy (%)", "test error (deg)", "epochs run",
                                          "wall time per run (s)"]) + " |"
    assert len(table) == 1 + points
    first = sorted(rows.values(), key=lambda r: [float(r[0][k]) if k != "dales_law" else r[0][k] for k in keys])[0]
    acc = [100 * float(run["test_accuracy"]) for run in first]
    assert f"| {statistics.mean(acc):.1f} ± {statistics.stdev(acc):.1f} |" in table[1]
    assert f"measured on {cpu_model()}, device cpu, 1 thread" in md


def test_sweep_3d_writes_summary_and_figures_named_for_keys(sweep3):
    rows = read_results(sweep3 / "results.csv")
    assert len(rows) == 24 and {row["cpu_model"] for row in rows} == {cpu_model()}
    assert figures(sweep3) == ["accuracy_vs_tau_ms.png", "heatmap_tau_ms_x_hidden.png", "walltime_vs_tau_ms.png"]
    assert_summary_matches_rows(sweep3, ["dales_law", "hidden", "tau_ms"], 12)


def test_sweep_report_2d(sweep3, tmp_path, capsys):
    out = subset(sweep3, tmp_path, dales_law="False")
    assert main(["sweep-report", str(out)]) == 0
    assert capsys.readouterr().out == (out / "summary.md").read_text()
    assert figures(out) == ["accuracy_vs_tau_ms.png", "heatmap_tau_ms_x_hidden.png", "walltime_vs_tau_ms.png"]
    assert_summary_matches_rows(out, ["hidden", "tau_ms"], 6)


def test_sweep_report_1d(sweep3, tmp_path):
    out = subset(sweep3, tmp_path, dales_law="True", hidden="8")
    assert main(["sweep-report", str(out)]) == 0
    assert figures(out) == ["accuracy_vs_tau_ms.png", "walltime_vs_tau_ms.png"]
    assert_summary_matches_rows(out, ["tau_ms"], 3)
    assert "Fixed: anf_per_ear=8, hidden=8, dales_law=True, epochs=2, batch_size=16" in (out / "summary.md").read_text()


def test_sweep_report_x_hue_metric_choose_the_figures(sweep3, tmp_path):
    out = subset(sweep3, tmp_path)
    assert main(["sweep-report", str(out), "--x", "dales_law", "--hue", "tau_ms", "--metric", "epochs_run"]) == 0
    assert figures(out) == ["epochs_vs_dales_law.png", "heatmap_dales_law_x_tau_ms_epochs.png",
                            "walltime_vs_dales_law.png"]
    assert_summary_matches_rows(out, ["hidden", "tau_ms", "dales_law"], 12)
    assert main(["sweep-report", str(out), "--x", "hidden"]) == 0  # a model-size key: wall time against weights
    assert {"accuracy_vs_hidden.png", "heatmap_hidden_x_tau_ms.png", "walltime_vs_weights.png"} <= set(figures(out))


def test_sweep_report_one_point(sweep3, tmp_path):
    out = subset(sweep3, tmp_path, dales_law="True", hidden="8", tau_ms="5.0")
    assert main(["sweep-report", str(out)]) == 0
    assert figures(out) == ["accuracy_vs_hidden.png", "walltime_vs_weights.png"]
    assert_summary_matches_rows(out, ["hidden"], 1)


def test_sweep_report_rows_without_a_cpu_model(sweep3, tmp_path):
    """Rows from before the cpu_model / gpu_model columns still report, saying the CPU was not recorded."""
    out = subset(sweep3, tmp_path, hidden="4")
    rows = list(csv.DictReader((out / "results.csv").open()))
    with (out / "results.csv").open("w", newline="") as f:
        columns = [c for c in rows[0] if c not in ("cpu_model", "gpu_model")]
        writer = csv.DictWriter(f, columns, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    assert main(["sweep-report", str(out)]) == 0
    assert "measured on an unrecorded CPU, device cpu, 1 thread" in (out / "summary.md").read_text()


@pytest.mark.parametrize("flags,message", [
    (["--x", "lr"], r"--x 'lr' is not a swept key; valid: tau_ms, hidden, dales_law"),
    (["--hue", "lr"], r"--hue 'lr' is not a swept key other than --x; valid: hidden, dales_law"),
    (["--x", "hidden", "--hue", "hidden"],
     r"--hue 'hidden' is not a swept key other than --x; valid: tau_ms, dales_law"),
    (["--metric", "accuracy"], r"argument --metric: invalid choice: 'accuracy' \(choose from 'test_accuracy', .*"
                               r"'wall_seconds', 'peak_rss_mib'\)"),
], ids=["x", "hue", "hue-is-x", "metric"])
def test_sweep_report_bad_choice(flags, message, sweep3, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["sweep-report", str(sweep3), *flags])
    assert exit_.value.code == 2
    usage, error = capsys.readouterr().err.strip().splitlines()
    assert usage.startswith("usage: fastsnn")
    assert re.fullmatch(f"fastsnn( sweep-report)?: error: {message}", error), error


def test_sweep_bad_x_fails_before_running(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["sweep", *TINY, "--grid", "tau-ms=2,5", "--x", "hidden", "--out", str(tmp_path / "sweep")])
    assert re.search(r"error: --x 'hidden' is not a swept key; valid: tau_ms$", capsys.readouterr().err.strip())
    assert not (tmp_path / "sweep").exists()
