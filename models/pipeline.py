"""Train, evaluate and predict: the functions behind ``train.py`` and ``evaluate.py``."""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Optional

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from dynfx import functional as F

from . import configs  # noqa: F401 - registers the processor config group
from .checkpoint import (CheckpointError, atomic_checkpoint_io, check_finite_state,
                         check_targets, finite_or_none, load_state, newest_intact_checkpoint)
from .data.datamodule import EffectDataModule
from .module import RUN_CONFIG_KEY, TRAIN_INFO_KEY, EffectEstimator

__all__ = ["build", "train", "evaluate", "predict", "results_table"]

log = logging.getLogger(__name__)


def build(cfg: DictConfig) -> tuple[EffectEstimator, EffectDataModule]:
    """Processor, encoder, module and data from a composed config: the ``model`` group is the
    LightningModule (loss weights, optimizer, schedule, refinement); the input mode reaches it
    through the encoder."""
    processor = instantiate(cfg.processor)
    encoder = instantiate(cfg.encoder, num_outputs=processor.count_num_parameters())
    module = instantiate(cfg.model, encoder=encoder, processor=processor)
    module.run_config = OmegaConf.to_container(cfg, resolve=True)
    data = instantiate(cfg.data, num_params=processor.count_num_parameters())
    return module, data


def results_table(results: dict[str, float], processor) -> str:
    """Markdown table: one row per metric, columns model (the network alone), model+refine (when
    the test refined), mean baseline, no-op baseline."""
    refined = any(k.startswith("model+refine/") for k in results)
    cols = ["model", *(["model+refine"] if refined else []), "mean", "noop"]
    heads = ["model", *(["model+refine"] if refined else []), "mean baseline", "no-op baseline"]
    rows = ["| metric | " + " | ".join(heads) + " |", "|---" * (len(cols) + 1) + "|"]
    names = ["mrstft", "si_sdr", "gain_mae_db"]
    names += [f"mae/{n}" for n in processor.param_names]
    names += [f"log_err/{n}" for n, p in processor.params.items() if p.scale == "log"]
    names += [f"mae_norm/{n}" for n in processor.param_names]

    def cell(prefix, name):
        v = results.get(f"{prefix}/{name}")
        return "-" if v is None else f"{v:.4g}"

    for name in names:
        rows.append(f"| {name} | " + " | ".join(cell(c, name) for c in cols) + " |")
    return "\n".join(rows)


def _run_dir(cfg: DictConfig) -> Path:
    return Path(cfg.get("run_dir") or os.getcwd())


def _resolve_ckpt(ckpt_path: Optional[str], run_dir: Path) -> Optional[str]:
    if ckpt_path in (None, "", "null"):
        return None
    if ckpt_path == "last":
        folder = run_dir / "checkpoints"
        if not folder.is_dir() or not any(folder.glob("*.ckpt")):
            raise FileNotFoundError(f"ckpt_path=last: no checkpoint in {folder}; resume needs "
                                    "the run's folder (pass hydra.run.dir=<that run's folder>)")
        path, fell_back = newest_intact_checkpoint(folder)
        if fell_back:
            warnings.warn(f"ckpt_path=last: {folder / 'last.ckpt'} is missing or damaged; "
                          f"resuming from {path}, the newest intact checkpoint of the run",
                          stacklevel=2)
        return str(path)
    if not Path(ckpt_path).exists():
        raise FileNotFoundError(f"checkpoint {ckpt_path} not found")
    return ckpt_path


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test the best checkpoint, write metrics.json and print the results table."""
    L.seed_everything(cfg.seed, workers=True)
    run_dir = _run_dir(cfg)
    module, data = build(cfg)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values()]
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                     default_root_dir=str(run_dir),
                                     plugins=[atomic_checkpoint_io()])
    ckpt = _resolve_ckpt(cfg.get("ckpt_path"), run_dir)
    if cfg.model.get("trainable") and not (cfg.get("init_from") or ckpt):
        raise ValueError(f"model.trainable={cfg.model.trainable} trains one part of a trained "
                         "network: give init_from=<its checkpoint>")
    if cfg.get("init_from"):
        if ckpt:
            raise ValueError("init_from (start from a checkpoint's weights) and ckpt_path "
                             "(resume a run) exclude each other; pass one")
        init_weights(module, cfg.init_from)
    trainer.fit(module, datamodule=data, ckpt_path=ckpt)
    best = getattr(trainer.checkpoint_callback, "best_model_path", "") or None
    if trainer.fast_dev_run or not best or not Path(best).exists():
        best = None
    trainer.test(module, datamodule=data, ckpt_path=best, verbose=False)
    results = module.test_results()
    results["skipped_steps"] = float(module.nonfinite_total)
    table = results_table(results, module.processor)
    if not trainer.is_global_zero:  # DDP: rank 0 writes the files and prints the table
        return results
    (run_dir / "metrics.json").write_text(json.dumps(finite_or_none(results), indent=2,
                                                     allow_nan=False))
    (run_dir / "results.md").write_text(table + "\n")
    print(f"\nTest results ({module.test_count} examples, checkpoint: {best or 'final weights'})")
    print(table)
    print(f"\nrun folder: {run_dir}")
    return results


def _carry_train_info(module: EffectEstimator, state: dict) -> None:
    """The training time and examples a checkpoint records, onto ``module``."""
    info = state.get(TRAIN_INFO_KEY) or {}
    module.train_seconds = float(info.get("train_seconds", 0.0))
    module.train_examples = int(info.get("train_examples", 0))


NEW_STAGE_PREFIXES = ("encoder.feedback.",)  # parts init_from may find missing


def init_weights(module: EffectEstimator, ckpt_path: str) -> None:
    """Fine-tuning: load the network weights of another run's checkpoint into ``module``
    before training (fresh optimizer, schedule and epoch count, unlike a resume). The
    checkpoint must hold the same processor and encoder; its training time and examples are
    carried over, so the new checkpoints count the whole training."""
    state = load_state(ckpt_path)
    check_finite_state(state["state_dict"], source=f"checkpoint {ckpt_path}")
    try:
        own = module.state_dict()
        new_parts = [k for k in own if k not in state["state_dict"]
                     and k.startswith(NEW_STAGE_PREFIXES)]
        if new_parts:  # a stage added on top of a trained network starts from its own init
            state["state_dict"] = {**{k: own[k] for k in new_parts}, **state["state_dict"]}
            log.info("init_from: %d tensors of new stages (%s) keep their initial values",
                     len(new_parts), ", ".join(NEW_STAGE_PREFIXES))
        module.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        lines = [ln.strip() for ln in str(exc).strip().splitlines()]
        detail = (lines[1] if len(lines) > 1 else lines[0])[:300]
        saved = (state.get(RUN_CONFIG_KEY) or {}).get("encoder")
        raise CheckpointError(f"init_from={ckpt_path}: its weights do not fit this run's "
                              f"processor/encoder ({detail}); the checkpoint's encoder config: "
                              f"{saved}") from None
    _carry_train_info(module, state)
    log.info("initialised from %s (%.1f min of training)", ckpt_path, module.train_seconds / 60)


def upgrade_run_config(config: dict) -> dict:
    """A run config saved before the ``model`` group existed (a ``loss`` group for the module
    and a top-level ``optimizer``) in today's layout; other configs are returned unchanged."""
    if "model" in config or "loss" not in config:
        return config
    config = dict(config)
    model = dict(config.pop("loss"))
    optimizer = config.pop("optimizer", None)
    if optimizer is not None:
        model["optimizer"] = optimizer
    config["model"] = model
    return config


def load_checkpoint(ckpt_path: str) -> tuple[EffectEstimator, DictConfig]:
    """Rebuild the module from the config saved in its own checkpoint and load the weights.

    Safe with files from elsewhere: the file is read with ``weights_only=True`` (no pickled
    code runs), every ``_target_`` of the saved config must be under the allowlist of
    :mod:`models.checkpoint` (checked before anything is built), and non-finite weights are
    refused. Every failure is a :class:`~models.checkpoint.CheckpointError` naming the file."""
    state = load_state(ckpt_path)
    if RUN_CONFIG_KEY not in state or not isinstance(state[RUN_CONFIG_KEY], dict):
        raise CheckpointError(f"{ckpt_path} has no saved run config (not written by train.py?)")
    check_targets(state[RUN_CONFIG_KEY], source=f"checkpoint {ckpt_path}: the saved config")
    check_finite_state(state["state_dict"], source=f"checkpoint {ckpt_path}")
    cfg = OmegaConf.create(upgrade_run_config(state[RUN_CONFIG_KEY]))
    module, _ = build(cfg)
    _carry_train_info(module, state)
    try:
        module.load_state_dict(state["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"checkpoint {ckpt_path}: its weights do not match its saved "
                              f"processor/encoder config ({first})") from None
    module.eval()
    return module, cfg


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Test a checkpoint on the fixed test set; write metrics.json/.csv, a table, plots, audio.

    The Trainer and the loggers come from the ``trainer`` and ``logger`` config groups (one
    device: the report needs every test example in one process); the report is drawn from
    the test's own outputs (:meth:`EffectEstimator.test_outputs`), nothing is rendered twice."""
    from .report import wandb_runs, write_report

    if not cfg.get("ckpt_path"):
        raise ValueError("evaluate.py needs ckpt_path=/path/to/checkpoint.ckpt")
    module, run_cfg = load_checkpoint(cfg.ckpt_path)
    out_dir = _run_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = instantiate(run_cfg.data, num_params=module.processor.count_num_parameters())
    loggers = [instantiate(lg) for lg in (cfg.get("logger") or {}).values()]
    trainer: L.Trainer = instantiate(cfg.trainer, logger=loggers or False,
                                     enable_checkpointing=False, default_root_dir=str(out_dir))
    if trainer.world_size > 1:
        raise ValueError("evaluate runs on one device (the report needs every test example in "
                         f"one process); got {trainer.world_size} processes from the trainer "
                         "config: pass trainer.devices=1")
    module.keep_test_examples = int(cfg.get("num_examples", 4))
    trainer.test(module, datamodule=data, verbose=False)
    results = module.test_results()
    table = results_table(results, module.processor)
    write_report(module, module.test_outputs(), results, table, out_dir, loggers=loggers)
    for lg in loggers:
        lg.finalize("success")
    for run in wandb_runs(loggers):
        run.finish()  # closes the run (its offline files complete on disk)
    print(table)
    print(f"\nwrote metrics.json, metrics.csv, results.md, plots and audio to {out_dir}")
    return results


MIN_PREDICT_SECONDS = 0.25  # shorter recordings carry too little to estimate attack/release
SILENCE_DBFS = -60.0


def _check_output(path: Path) -> Path:
    """Create ``path``'s folder, or raise a clear error, before any computation."""
    if path.exists() and path.is_dir():
        raise ValueError(f"output={path} is a folder; give a file name such as {path}/result.json")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"cannot create the folder of output={path}: {exc.strerror}") from None
    if not os.access(path.parent, os.W_OK):
        raise ValueError(f"output={path}: the folder {path.parent} is not writable")
    return path


def _rms_db(x: torch.Tensor) -> float:
    return float(F.power_to_db(x.double().square().mean(), 1e-30))


def predict(cfg: DictConfig) -> dict[str, float]:
    """Estimate the settings of a user's recording (``wet=FILE``, optionally ``dry=FILE``).

    Recordings shorter than 0.25 s (or than the encoder needs) are a clear error stating the
    minimum. A silent wet recording, or (with ``dry``) a wet equal to the dry one, still gets
    settings, but the output says that they are not determined (``"warning"``)."""
    from .data.io import load_audio

    if not cfg.get("ckpt_path") or not cfg.get("wet"):
        raise ValueError("predict needs ckpt_path=... and wet=FILE (and dry=FILE in dry_wet mode)")
    out = _check_output(Path(cfg.get("output") or (_run_dir(cfg) / "prediction.json")))
    module, run_cfg = load_checkpoint(cfg.ckpt_path)
    fs, channels = run_cfg.data.sample_rate, run_cfg.data.channels
    wet = load_audio(cfg.wet, fs, channels)[None]
    dry = None
    if module.uses_dry:
        if not cfg.get("dry"):
            raise ValueError("this checkpoint was trained with input_mode=dry_wet: pass dry=FILE")
        dry = load_audio(cfg.dry, fs, channels)[None]
        n = min(dry.shape[-1], wet.shape[-1])
        dry, wet = dry[..., :n], wet[..., :n]
    minimum = max(int(MIN_PREDICT_SECONDS * fs), int(getattr(module.encoder, "min_samples", 0)))
    if wet.shape[-1] < minimum:
        raise ValueError(f"{cfg.wet}: {wet.shape[-1] / fs * 1000:.0f} ms at {fs} Hz is too short; "
                         f"this model needs at least {minimum} samples ({minimum / fs:.2f} s)")
    warning = None
    if _rms_db(wet) < SILENCE_DBFS:
        warning = (f"the wet recording is silent (RMS below {SILENCE_DBFS:g} dBFS): the settings "
                   "are not determined")
    elif dry is not None and float((wet - dry).abs().max()) <= 1e-3 * float(dry.abs().max()):
        warning = ("the wet recording equals the dry one (no gain change): the settings are "
                   "not determined")
    norm = module.estimate(wet, dry)
    settings = {k: float(v[0]) for k, v in module.processor.denormalize(norm).items()}
    result = dict(settings)
    if warning:
        result["warning"] = warning
    out.write_text(json.dumps(finite_or_none(result), indent=2, allow_nan=False))
    print(f"Estimated {type(module.processor).__name__} settings for {cfg.wet}:")
    for k, v in settings.items():
        print(f"  {k:>20s} = {v:.4g}")
    if warning:
        print(f"WARNING: {warning}")
    print(f"\nwrote {out}")
    return result
