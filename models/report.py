"""Evaluation report: metrics files, plots and audio examples."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Sequence

import torch

from .checkpoint import finite_or_none
from .data.io import save_audio

__all__ = ["write_report", "wandb_runs"]


def write_report(module, outputs: dict, results: dict, table: str, out_dir: Path,
                 loggers: Sequence = ()) -> None:
    """metrics.json/.csv, results.md, params_true_vs_pred.png, curves.png and WAV examples in
    ``out_dir``, drawn from the test's own outputs (``module.test_outputs()``: the settings of
    every example, the audio and gain curves of the first few); the metrics, plots and audio
    also go to every wandb logger in ``loggers``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(finite_or_none(results), indent=2,
                                                     allow_nan=False))
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["metric", "value"])
        for k, v in results.items():
            writer.writerow([k, v])
    (out_dir / "results.md").write_text(table + "\n")

    proc = module.processor
    true, pred = outputs["true"], outputs["pred"]
    t_dsp, p_dsp = proc.denormalize(true), proc.denormalize(pred)

    # true vs predicted, per parameter
    names = list(proc.param_names)
    cols = min(4, len(names))
    rows = (len(names) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        spec = proc.params[name]
        ax.scatter(t_dsp[name].numpy(), p_dsp[name].numpy(), s=8, alpha=0.6)
        ax.plot([spec.min_val, spec.max_val], [spec.min_val, spec.max_val], "k--", lw=0.8)
        if spec.scale == "log":
            ax.set_xscale("log")
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "params_true_vs_pred.png", dpi=110)
    plt.close(fig)

    # static curve and gain over time for a few examples
    fs = proc.sample_rate
    levels = torch.linspace(-80, 0, 161, dtype=torch.float32)
    n = len(outputs.get("dry", ()))
    if n == 0:
        _log_media(loggers, results, out_dir, 0, fs)
        return
    dry, wet, y = outputs["dry"], outputs["wet"], outputs["y"]
    gain_true, gain_pred = outputs["gain_true"], outputs["gain_pred"]
    fig, axes = plt.subplots(n, 2, figsize=(10, 2.6 * n), squeeze=False)
    for i in range(n):
        for norm, style, label in ((true[i : i + 1], "k-", "true"), (pred[i : i + 1], "r--", "pred")):
            amp = (10 ** (levels / 20)).reshape(-1, 1, 1).expand(-1, 1, int(0.2 * fs)).clone()
            with torch.no_grad():
                _, g = proc(amp, norm_params=norm.expand(len(levels), -1), return_gain=True,
                            validate=False)
            curve = g.reshape(len(levels), -1, g.shape[-1])[:, 0, -1]  # settled gain (band 0)
            axes[i, 0].plot(levels.numpy(), (levels + curve).numpy(), style, label=label)
        axes[i, 0].set_xlabel("input level (dB)")
        axes[i, 0].set_ylabel("output level (dB)")
        axes[i, 0].legend(fontsize=8)
        t = torch.arange(gain_true.shape[-1]) / fs
        gt = gain_true[i] if gain_true.dim() == 2 else gain_true[i, 0]
        gp = gain_pred[i] if gain_pred.dim() == 2 else gain_pred[i, 0]
        axes[i, 1].plot(t.numpy(), gt.clamp_min(-60).numpy(), "k-", lw=0.8, label="true")
        axes[i, 1].plot(t.numpy(), gp.clamp_min(-60).numpy(), "r--", lw=0.8, label="pred")
        axes[i, 1].set_xlabel("time (s)")
        axes[i, 1].set_ylabel("gain (dB)")
        axes[i, 1].legend(fontsize=8)
        save_audio(out_dir / f"example{i}_dry.wav", dry[i], int(fs))
        save_audio(out_dir / f"example{i}_target.wav", wet[i], int(fs))
        save_audio(out_dir / f"example{i}_prediction.wav", y[i], int(fs))
    fig.tight_layout()
    fig.savefig(out_dir / "curves.png", dpi=110)
    plt.close(fig)
    _log_media(loggers, results, out_dir, n, fs)


def wandb_runs(loggers: Sequence) -> list:
    """The wandb runs of the wandb loggers among ``loggers``."""
    from lightning.pytorch.loggers import WandbLogger

    return [lg.experiment for lg in loggers if isinstance(lg, WandbLogger)]


def _log_media(loggers: Sequence, results: dict, out_dir: Path, n: int, fs: float) -> None:
    """The metrics table, the plots and the audio examples to every wandb logger."""
    runs = wandb_runs(loggers)
    if not runs:
        return
    import wandb

    media = {"test/metrics": wandb.Table(columns=["metric", "value"],
                                         data=[[k, v] for k, v in results.items()]),
             "test/params_true_vs_pred": wandb.Image(str(out_dir / "params_true_vs_pred.png"))}
    if n:
        media["test/curves"] = wandb.Image(str(out_dir / "curves.png"))
    for i in range(n):
        for kind in ("dry", "target", "prediction"):
            media[f"test/example{i}_{kind}"] = wandb.Audio(
                str(out_dir / f"example{i}_{kind}.wav"), sample_rate=int(fs))
    for run in runs:
        run.log(media)
