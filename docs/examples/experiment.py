"""The sound-localisation experiment from Python: what ``fastsnn train`` does, then what ``fastsnn sweep``
does, on small settings (about a minute on 2 cores).

    python docs/examples/experiment.py
"""

from fastsnn.experiment import ModelConfig, RunConfig, TrainConfig, report, sweep, train

# One run: a config (every field has the seed network's default), a run folder, the metrics
config = RunConfig(model=ModelConfig(hidden=64), train=TrainConfig(epochs=5))
run = train(config, out="runs/example-hidden64", overwrite=True)
print(f"test accuracy {100 * run.metrics['test_accuracy']:.1f}% after {run.metrics['epochs']} epochs; "
      f"files in {run.folder}")
model = run.model()  # the trained network, from checkpoint.pt

# A sweep: one run per (grid point, seed), one row each in results.csv; running it again skips finished rows
small = RunConfig(train=TrainConfig(epochs=2, train_samples=256, valid_samples=256, test_samples=256))
rows = sweep(small, {"tau_ms": [2.0, 5.0]}, seeds=[0, 1], out="runs/example-sweep", progress=False)
print(f"{len(rows)} runs done now")
print(report("runs/example-sweep"))  # summary.md's table (mean and std over seeds); its figures are drawn beside it
