"""The ``fastsnn`` command: ``train`` (the seed experiment by default), ``evaluate``, ``sweep`` and
``sweep-report``."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace

from fastsnn import __version__

from fastsnn.nn import DELAY_INITS, WEIGHT_INITS

from .config import (BACKENDS, DEVICES, NEURONS, PHASE_DELAYS, PHASE_OFFSETS, READOUTS, RESETS, SPIKES, SURROGATES,
                     ModelConfig, RunConfig, StimulusConfig, TrainConfig)
from .schedules import SCHEDULES


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` that gives each flag's default, except where there is none to give (None, a switch that is
    off) or its text already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == [] or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def _range(text: str) -> tuple[float, float]:
    """``"a,b"`` -> (a, b), for the --*-ms-range flags."""
    parts = text.split(",")
    try:
        low, high = (float(part) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected two numbers MIN,MAX (e.g. 1,5), got {text!r}") from None
    return low, high


def _threads(text: str) -> int | str:
    """``"auto"`` or an integer (the run checks it against this machine's CPUs)."""
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of threads or auto, got {text!r}") from None


def _train_flags(p: argparse.ArgumentParser) -> None:
    s, m, t = StimulusConfig(), ModelConfig(), TrainConfig()
    g = p.add_argument_group("stimulus")
    g.add_argument("--anf-per-ear", type=int, default=s.anf_per_ear, help="auditory-nerve fibres per ear")
    g.add_argument("--steps", type=int, default=s.steps, help="time steps per sample")
    g.add_argument("--dt-ms", type=float, default=s.dt_ms, help="time step (ms)")
    g.add_argument("--tone-hz", type=float, default=s.tone_hz, help="frequency of the tone (Hz)")
    g.add_argument("--rate-max-hz", type=float, default=s.rate_max_hz, help="peak Poisson rate of a fibre (Hz)")
    g.add_argument("--phase-delays", choices=PHASE_DELAYS, default=s.phase_delays,
                   help="seed: fibre i of an ear lags by linspace(0, pi/2, anf_per_ear)[i] (the seed's bank); "
                        "none: every fibre of an ear in phase, so the network has to learn the delays")
    g.add_argument("--phase-offset", choices=PHASE_OFFSETS, default=s.phase_offset,
                   help="one random phase offset per pass over a set (the seed), per batch, or fixed: drawn once per "
                        "set, so that every epoch trains on the same spikes")
    g.add_argument("--phase-jitter", type=float, default=s.phase_jitter, metavar="SIGMA",
                   help="std (radians) of Gaussian noise on each fibre's phase delay, redrawn with each phase offset, "
                        "in the training and validation sets")
    g.add_argument("--test-phase-jitter", type=float, default=None, metavar="SIGMA",
                   help="the test set's phase jitter (default: --phase-jitter)")
    g = p.add_argument_group("model")
    g.add_argument("--hidden", type=int, default=m.hidden, help="LIF hidden units")
    g.add_argument("--tau-ms", type=float, default=m.tau_ms, help="membrane time constant (ms)")
    g.add_argument("--readout-tau-ms", type=float, default=None, help="readout time constant (ms; default: --tau-ms)")
    g.add_argument("--learn-tau", action="store_true", help="learn one time constant per neuron")
    g.add_argument("--detach-reset", action="store_true", help="no gradient through the spike reset")
    g.add_argument("--neuron", choices=NEURONS, default=m.neuron,
                   help="hidden neuron: lif (the seed) or alif (adaptive threshold)")
    g.add_argument("--spike", choices=SPIKES, default=m.spike,
                   help="delayed (the seed: a spike from the previous step's membrane) or same_step")
    g.add_argument("--reset", choices=RESETS, default=m.reset,
                   help="zero (the seed), subtract, or subtract_next (same_step only; snnTorch's subtract)")
    g.add_argument("--surrogate", choices=SURROGATES, default=m.surrogate, help="surrogate gradient of the spike")
    g.add_argument("--tau-adapt-ms", type=float, default=m.tau_adapt_ms,
                   help="alif: time constant of the threshold adaptation (ms)")
    g.add_argument("--adapt", type=float, default=m.adapt, help="alif: threshold increase per unit of adaptation")
    g.add_argument("--weight-init", choices=WEIGHT_INITS, default=m.weight_init,
                   help="seed: weights U(+-1/sqrt(outputs)) (the seed's); kaiming: U(+-sqrt(6/inputs)), torch's "
                        "kaiming_uniform_(nonlinearity='relu') (the DCLS notebook's)")
    g.add_argument("--dales-law", action="store_true", help="sign-constrained weights (Dale's law)")
    g.add_argument("--ie-ratio", type=float, default=m.ie_ratio, help="fraction of inhibitory rows under Dale's law")
    g.add_argument("--dale-mask", choices=("contiguous", "random"), default=m.dale_mask,
                   help="inhibitory rows first (the seed) or a random subset")
    g.add_argument("--backend", choices=BACKENDS, default=m.backend,
                   help="time-loop implementation (auto: triton on CUDA, cpu kernels otherwise)")
    g.add_argument("--readout", choices=READOUTS, default=m.readout,
                   help="class score: the readout membrane's sum over time (the seed), mean or max over time, or "
                        "spiking: an output layer of the hidden neuron scored by spike count (training and evaluation)")
    g.add_argument("--spike-dropout", type=float, default=m.spike_dropout, metavar="P",
                   help="during training, drop each hidden spike with probability P (kept ones scaled by 1/(1-P))")
    g.add_argument("--segments", type=int, default=m.segments, metavar="M",
                   help="filter-and-fire: M dendritic segments per hidden unit, each with its own weights and "
                        "double-exponential filter (0: none, the seed)")
    g.add_argument("--rise-ms-range", type=_range, default=(m.rise_ms_min, m.rise_ms_max), metavar="MIN,MAX",
                   help="filter-and-fire: range of the segments' rise times (ms), drawn uniformly")
    g.add_argument("--decay-ms-range", type=_range, default=(m.decay_ms_min, m.decay_ms_max), metavar="MIN,MAX",
                   help="filter-and-fire: range of the segments' decay times (ms), drawn uniformly above 1.5 x rise")
    g.add_argument("--max-delay", type=int, default=m.max_delay,
                   help="learnable synaptic delays on the input projection, in [0, MAX_DELAY] steps (0: none)")
    g.add_argument("--readout-max-delay", type=int, default=m.readout_max_delay, metavar="MAX_DELAY",
                   help="learnable synaptic delays on the readout's projection, in [0, MAX_DELAY] steps (0: none)")
    g.add_argument("--delay-init", choices=DELAY_INITS, default=m.delay_init,
                   help="the delays' initial values: uniform in [0, MAX_DELAY], or centre: near MAX_DELAY // 2, as "
                        "dcls draws its positions")
    g = p.add_argument_group("training")
    g.add_argument("--epochs", type=int, default=t.epochs, help="maximum epochs (early stopping may end sooner)")
    g.add_argument("--lr", type=float, default=t.lr,
                   help="Adam learning rate (with --lr-schedule one_cycle its peak, cosine its start)")
    g.add_argument("--lr-schedule", choices=SCHEDULES, default=t.lr_schedule,
                   help="the weights' learning rate over --epochs: constant, one_cycle (torch's OneCycleLR: from "
                        "LR/25 up to LR over 30%% of the epochs, then down to LR/25/1e4, beta1 the other way) or "
                        "cosine (torch's CosineAnnealingLR: from LR down to 0)")
    g.add_argument("--batch-size", type=int, default=t.batch_size, help="samples per batch")
    g.add_argument("--train-batches", type=int, default=t.train_samples // t.batch_size,
                   help="training set size in batches (validation set: the same)")
    g.add_argument("--test-batches", type=int, default=t.test_samples // t.batch_size, help="test set size in batches")
    g.add_argument("--keep-final", action="store_true",
                   help="keep the final weights instead of the best validation epoch's (the seed's behaviour)")
    g.add_argument("--no-validation", action="store_true",
                   help="no validation set and no early stopping: train --epochs epochs, keep the final weights")
    g.add_argument("--loss-scale", type=float, default=None,
                   help="logits = scale x scores (default: 0.01 for the sum readout, the seed's; 1 for the others)")
    g.add_argument("--rate-target-hz", type=float, default=t.rate_target_hz,
                   help="firing-rate regulariser: hidden rates above this (Hz) are penalised")
    g.add_argument("--rate-weight", type=float, default=t.rate_weight,
                   help="firing-rate regulariser: weight of mean_n max(0, rate_n - target)^2 (Hz^-2; 0: off)")
    g.add_argument("--seed", type=int, default=t.seed, help="seed of every random stream of the run")
    g.add_argument("--device", choices=DEVICES, default=t.device, help="auto: cuda when there is a GPU, else cpu")
    g.add_argument("--threads", type=_threads, default="auto",
                   help="CPU threads: a number, or auto (the default): up to torch's count, fewer while other "
                        "processes keep cores busy (fastsnn/cpu/threads.py); results are the same either way")
    g.add_argument("--delay-lr", type=float, default=t.delay_lr, help="Adam learning rate of the delays (steps)")
    g.add_argument("--delay-lr-schedule", choices=SCHEDULES, default=t.delay_lr_schedule,
                   help="the delays' learning rate over --epochs, as --lr-schedule")
    g.add_argument("--sigma-start", type=float, default=t.sigma_start, metavar="SIG",
                   help="the delay kernels' width in the first epoch, as dcls's SIG: the Gaussian's standard "
                        "deviation is SIG + 0.27 steps (default: max_delay / 2)")
    g.add_argument("--sigma-end", type=float, default=t.sigma_end, metavar="SIG",
                   help="the delay kernels' width (dcls's SIG) once annealed")
    g.add_argument("--sigma-anneal-epochs", type=int, default=t.sigma_anneal_epochs,
                   help="epochs over which the delay kernels' width decays exponentially from --sigma-start to "
                        "--sigma-end")
    g.add_argument("--out", default=None, help="run folder (default: runs/<timestamp>)")
    g.add_argument("--quiet", action="store_true", help="no progress bar, print only the final metrics")


def _report_flags(p: argparse.ArgumentParser) -> None:
    from .sweep_summary import METRICS

    g = p.add_argument_group("figures")
    g.add_argument("--x", default=None, metavar="KEY",
                   help="swept key on the horizontal axis (default: the numeric key with the most values)")
    g.add_argument("--hue", default=None, metavar="KEY", help="swept key with one line / heatmap row per value "
                                                              "(default: the next); any other keys make panels")
    g.add_argument("--metric", default="test_accuracy", choices=METRICS, metavar="NAME",
                   help=f"what the figures show: {', '.join(METRICS)} (default: test_accuracy)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """Build a validated :class:`RunConfig` from parsed ``train`` flags (raises ValueError)."""
    stimulus = StimulusConfig(anf_per_ear=args.anf_per_ear, steps=args.steps, dt_ms=args.dt_ms, tone_hz=args.tone_hz,
                              rate_max_hz=args.rate_max_hz, phase_offset=args.phase_offset,
                              phase_jitter=args.phase_jitter, test_phase_jitter=args.test_phase_jitter,
                              phase_delays=args.phase_delays)
    model = ModelConfig(hidden=args.hidden, tau_ms=args.tau_ms, readout_tau_ms=args.readout_tau_ms,
                        learn_tau=args.learn_tau, detach_reset=args.detach_reset, neuron=args.neuron,
                        spike=args.spike, reset=args.reset, surrogate=args.surrogate,
                        tau_adapt_ms=args.tau_adapt_ms, adapt=args.adapt, dales_law=args.dales_law,
                        ie_ratio=args.ie_ratio, dale_mask=args.dale_mask, backend=args.backend,
                        readout=args.readout, spike_dropout=args.spike_dropout, segments=args.segments,
                        rise_ms_min=args.rise_ms_range[0], rise_ms_max=args.rise_ms_range[1],
                        decay_ms_min=args.decay_ms_range[0], decay_ms_max=args.decay_ms_range[1],
                        max_delay=args.max_delay, readout_max_delay=args.readout_max_delay,
                        delay_init=args.delay_init, weight_init=args.weight_init)
    for name in ("train_batches", "test_batches"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    train = replace(TrainConfig(), epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                    train_samples=args.train_batches * args.batch_size,
                    valid_samples=args.train_batches * args.batch_size,
                    test_samples=args.test_batches * args.batch_size, restore_best=not args.keep_final,
                    seed=args.seed, device=args.device, threads=None if args.threads == "auto" else args.threads,
                    validation=not args.no_validation,
                    loss_scale=args.loss_scale, rate_target_hz=args.rate_target_hz, rate_weight=args.rate_weight,
                    delay_lr=args.delay_lr, sigma_anneal_epochs=args.sigma_anneal_epochs, lr_schedule=args.lr_schedule,
                    delay_lr_schedule=args.delay_lr_schedule, sigma_start=args.sigma_start, sigma_end=args.sigma_end)
    return RunConfig(stimulus, model, train)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastsnn", description="Fast spiking neural network training.")
    p.add_argument("--version", action="version", version=f"fastsnn {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train the sound-localisation network (the seed experiment by default)",
                           formatter_class=_Help)
    _train_flags(train)
    g = train.add_argument_group("run folder")
    g.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    g.add_argument("--resume", metavar="RUN", default=None,
                   help="continue the killed run in folder RUN from its last finished epoch, with its own flags")
    ev = sub.add_parser("evaluate", help="re-evaluate a checkpoint on a fresh test set", formatter_class=_Help,
                        description="Evaluate a run's checkpoint on the test set of --seed and write "
                                    "evaluate-seed<SEED>.json and its figures into --out (default: the "
                                    "checkpoint's run folder); the metrics are also printed as JSON.")
    ev.add_argument("checkpoint", help="a run's checkpoint.pt")
    ev.add_argument("--seed", type=int, default=1,
                    help="seed of the test set: the run's own --seed redraws its test set, any other a fresh one")
    ev.add_argument("--device", choices=DEVICES, default="auto", help="auto: cuda when there is a GPU, else cpu")
    ev.add_argument("--backend", choices=BACKENDS, default=None, help="override the checkpoint's backend")
    ev.add_argument("--threads", type=_threads, default=None, metavar="N",
                    help="CPU threads: a number or auto (default: the run's); results are the same either way")
    ev.add_argument("--out", default=None, help="folder for the results (default: the checkpoint's folder)")
    sw = sub.add_parser("sweep", conflict_handler="resolve", formatter_class=_Help,
                        help="train and evaluate one model per (grid point, seed); resumable",
                        description="Train and evaluate one model per point of the grid's cartesian product and "
                                    "per seed, as `fastsnn train` would, one row each in DIR/results.csv; "
                                    "the train flags set the base configuration the grid overrides. Running the "
                                    "same command again skips the rows already there and retries failed ones.")
    _train_flags(sw)
    g = sw.add_argument_group("sweep")
    g.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="a config field and its values (repeatable), e.g. --grid hidden=8,16 "
                        "--grid dales_law=true,false; also the train flags train-batches, test-batches (in "
                        "batches), keep-final and no-validation")
    g.add_argument("--seed", type=int, default=TrainConfig().seed, help="the first seed")
    g.add_argument("--seeds", type=int, default=1, help="seeds per point: --seed, --seed + 1, ...")
    g.add_argument("--out", required=True, metavar="DIR", help="sweep folder: results.csv, runs/<id>/, figures")
    g.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local: in this process, or --workers processes; ray: one Ray task per run")
    g.add_argument("--workers", type=int, default=None,
                   help="local: CPU processes at a time (default 1: in this process); ray: CPUs of the local Ray it "
                        "starts")
    g.add_argument("--address", default=None,
                   help="Ray cluster address (default: a running local cluster, else a new one)")
    g.add_argument("--pack", type=int, default=None, metavar="N",
                   help="train up to N runs whose networks have the same shapes together as one stacked model "
                        "(a pack; runs of one seed share their stimulus), each writing its own run folder and row "
                        "as a solo run would (default: 32 on the CPU, 256 on a GPU; 1: every run alone)")
    g.add_argument("--dry-run", action="store_true", help="list the runs and which are done; train nothing")
    g.add_argument("--quiet", action="store_true", help="no progress bar over the runs")
    _report_flags(sw)
    rep = sub.add_parser("sweep-report", help="redraw a sweep's figures and summary from its results.csv")
    rep.add_argument("dir", help="the sweep folder")
    _report_flags(rep)
    return p


def _sweep(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .sweeps import local_packs, parse_grid, plan, report, seeds_of, sweep
    from .sweep_plots import layout

    try:
        base = config_from_args(args)
        grid, seeds = parse_grid(args.grid), seeds_of(base, args.seeds)
        # a bad --x / --hue fails now, not after the runs
        layout({key: list(map(str, vals)) for key, vals in grid.items() if len(vals) > 1}, args.x, args.hue)
        if args.dry_run:
            planned = plan(base, grid, seeds, args.out)
            units = local_packs(planned.todo, args.pack, args.workers or 1) if args.executor == "local" else []
            unit_of = {point.id: i for i, unit in enumerate(units) for point in unit}
            for point in planned.points:
                unit = units[unit_of[point.id]] if point.id in unit_of else None
                where = f"  (pack {unit_of[point.id] + 1}, {len(unit)} runs)" if unit and len(unit) > 1 else ""
                print(f"{'done' if point.id in planned.done else 'todo'}  {point.id}  {point.name}{where}")
            packed = [len(unit) for unit in units if len(unit) > 1]
            how = f" in {len(packed)} pack{'s' * (len(packed) != 1)} ({', '.join(map(str, packed))} runs)" if packed else ""
            print(f"{len(planned.points) // len(seeds)} points x {len(seeds)} seeds = {len(planned.points)} runs: "
                  f"{len(planned.done)} done, {len(planned.todo)} to run{how}")
            return 0
        rows = sweep(base, grid, seeds, args.out, args.executor, args.workers, args.address, progress=not args.quiet,
                     pack=args.pack)
    except (ValueError, ImportError, OSError) as err:  # OSError: a full disk; ConnectionError: no Ray cluster
        p.error(str(err))
    except KeyboardInterrupt:
        print(f"interrupted; run the same command again to resume (finished runs are in {args.out}/results.csv)",
              file=sys.stderr)
        return 130
    failed = [row for row in rows if row["status"] != "ok"]
    for row in failed:
        print(f"failed: {row['name']}: {row['error']}", file=sys.stderr)
    print(f"{len(rows) - len(failed)} runs done, {len(failed)} failed; results in {args.out}/results.csv")
    try:
        print(report(args.out, args.x, args.hue, args.metric), end="")
    except ValueError as err:
        print(err, file=sys.stderr)
    return 1 if failed else 0


def _stopped(metrics: dict) -> str:
    """" (stopped early, best epoch 57)" for a run that early stopping ended, else ""."""
    return f" (stopped early, best epoch {metrics['best_epoch']})" if metrics.get("stopped_early") else ""


def _train(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from pathlib import Path

    from .run import check_run, load_run_config, new_run_dir, train_run

    out = None
    try:
        if args.resume is not None:
            defaults = vars(p.parse_args(["train"]))
            given = [f"--{key.replace('_', '-')}" for key, value in vars(args).items()
                     if key not in ("resume", "quiet") and value != defaults[key]]
            if given:
                raise ValueError("--resume continues the run with the flags it was started with; "
                                 f"drop {', '.join(given)}")
            out = Path(args.resume)
            config = load_run_config(out)
        else:
            config = config_from_args(args)
            check_run(config)
            out = Path(args.out) if args.out else new_run_dir()
        metrics = train_run(config, out, progress=not args.quiet, overwrite=args.overwrite,
                            resume=args.resume is not None)
    except (ValueError, FloatingPointError, OSError) as err:
        p.error(str(err))
    except KeyboardInterrupt:
        print("\ninterrupted" + (f"; `fastsnn train --resume {out}` continues from the last finished epoch"
                                  if out is not None else ""), file=sys.stderr)
        return 130
    print(f"test accuracy {100 * metrics['test_accuracy']:.1f}%, error {metrics['test_abs_error_deg']:.1f} deg; "
          f"train accuracy {100 * metrics['train_accuracy']:.1f}%, error {metrics['train_abs_error_deg']:.1f} deg; "
          f"{metrics['epochs']} epochs{_stopped(metrics)} in {metrics['wall_seconds']:.1f} s on {metrics['device']} "
          f"({metrics['backend']}); results in {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.command == "train":
        return _train(p, args)
    elif args.command == "sweep":
        return _sweep(p, args)
    elif args.command == "sweep-report":
        from .sweeps import report

        try:
            print(report(args.dir, args.x, args.hue, args.metric), end="")
        except ValueError as err:
            p.error(str(err))
    else:
        from .run import evaluate_checkpoint, evaluation_files

        try:
            metrics = evaluate_checkpoint(args.checkpoint, args.seed, args.out, args.device, args.backend, args.threads)
        except (ValueError, OSError) as err:  # OSError: FileNotFoundError, a full disk
            p.error(str(err))
        json.dump(metrics, sys.stdout, indent=2)
        print()
        written = evaluation_files(args.checkpoint, args.seed, args.out)
        print(f"wrote {', '.join(path.name for path in written)} in {written[0].parent}", file=sys.stderr)
    return 0
