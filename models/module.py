"""The LightningModule: an audio-feature encoder whose differentiable final layer is a dynfx
processor."""

from __future__ import annotations

import math
import random
import time
import warnings
from collections import defaultdict
from typing import Callable, Optional

import auraloss
import lightning as L
from lightning.pytorch.callbacks import Timer
import numpy as np
import torch
from torch import Tensor, nn

from .encoders import uses_dry
from .metrics import gain_mae_db, param_errors, si_sdr
from .refine import REFINE_METHODS, refine_settings

__all__ = ["EffectEstimator", "RUN_CONFIG_KEY", "NonFiniteTrainingError"]

RUN_CONFIG_KEY = "dynfx_run_config"
TRAIN_INFO_KEY = "dynfx_train_info"  # wall time and examples seen in training


class NonFiniteTrainingError(RuntimeError):
    """Training produced non-finite losses or gradients too many steps in a row."""


def _numpy_state_to_plain(state: tuple) -> tuple:
    """NumPy's legacy RNG state with its key array as a tensor (checkpoints load with
    ``weights_only=True``, which refuses NumPy arrays)."""
    name, keys, pos, has_gauss, cached = state
    return name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)


def _numpy_state_from_plain(state: tuple) -> tuple:
    name, keys, pos, has_gauss, cached = state
    return name, keys.numpy().astype(np.uint32), pos, has_gauss, cached


def _cosine_decay(t: float) -> float:
    """The schedules' rate factor after the warm-up: from 1 at ``t = 0`` to 0.05 at ``t = 1``."""
    return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * t))


def _warmup_cosine(steps: int, warmup_frac: float) -> Callable[[int], float]:
    """The step schedule over ``steps`` steps: linear warm-up over ``warmup_frac`` of them,
    then :func:`_cosine_decay`."""
    warm = max(1, int(warmup_frac * steps))

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return _cosine_decay(min(1.0, (step - warm) / max(1, steps - warm)))

    return factor


class EffectEstimator(L.LightningModule):
    """Estimate a processor's settings from audio.

    ``encoder(wet, dry)`` predicts ``norm_params``; the processor renders ``processor(dry, pred)``.
    Loss = ``w_stft * MR-STFT(pred audio, wet) + w_param * L1(pred, true, normalised)
    + w_gain * L1(gain curves, dB)``; every term is logged under ``train/`` and ``val/``.
    Only terms with a non-zero weight are computed (the MR-STFT term is the costly one on a CPU).

    ``gain_from_epoch`` > 0 leaves the gain term out of training before that epoch, and
    ``stft_from_epoch`` the MR-STFT term (validation always includes both, so ``val/loss`` stays
    comparable across epochs).

    With ``w_unident < 1`` the parameter term weights each setting of each example by whether the
    audio determines it (the benchmark's identifiability test, one direction: one extra render
    per setting): identifiable settings count fully, the others ``w_unident``, so settings the
    audio does not determine do not pull the others toward the mean.

    Args:
        encoder: an ``nn.Module`` (wet, dry) -> (B, P) in [0, 1].
        processor: a dynfx processor (the differentiable final layer).
        input_mode: ``"wet"`` or ``"dry_wet"`` (what the encoder sees); by default the
            encoder's own ``input_mode`` (a different value is an error).
        optimizer: a partial ``torch.optim`` constructor (Hydra ``_partial_``).
        scheduler: ``None`` (constant rate), ``"cosine"`` (linear warm-up over
            ``warmup_frac`` of the run's steps, then cosine decay to 5 % of the rate) or
            ``"cosine_time"`` (the same shape over the run's *time* budget,
            ``trainer.max_time``, or its steps where those run out first: a run capped by time
            anneals fully on any hardware; the number of steps, and so the result, depends on
            the machine's speed).
        refine_steps, refine_lr, refine_method: test/predict-time refinement (dry_wet;
            :func:`models.refine.refine_settings`: ``auto`` by default, Gauss-Newton for
            single-band processors and Adam at ``refine_lr`` for multi-band ones); the test reports the network alone (``model``) and refined
            (``model+refine``).
        trainable: train only this part of the encoder (a parameter-name prefix, e.g.
            ``"feedback"`` to train a feedback stage on a trained first stage); ``None``: all.
        stft_crop: in training, the MR-STFT term on one random crop of this many samples
            (the same for the batch; validation and test use the whole clip); 0: whole clips.
        feedback_from_epoch: with a feedback stage in the encoder, train in two phases in one
            run: the first stage alone before this epoch (the feedback stage left out), then
            the feedback stage on the frozen first stage, each phase with its own warm-up and
            cosine decay (``scheduler="cosine"``); 0: both stages together throughout.

    An encoder with several stages (``stage_preds`` after its forward, e.g. the
    ``FrameEncoder``'s feedback stage) has the parameter term on every trained stage's
    estimate (averaged); the other terms use the final estimate.
    """

    def __init__(self, encoder: nn.Module, processor: nn.Module, input_mode: Optional[str] = None,
                 w_stft: float = 1.0, w_param: float = 1.0, w_gain: float = 0.0,
                 optimizer: Optional[Callable] = None, stft: Optional[dict] = None,
                 refine_steps: int = 0, refine_lr: float = 0.05,
                 refine_method: str = "auto", w_unident: float = 1.0,
                 scheduler: Optional[str] = None, warmup_frac: float = 0.03,
                 max_nonfinite_steps: int = 5, gain_from_epoch: int = 0,
                 stft_from_epoch: int = 0, trainable: Optional[str] = None,
                 feedback_from_epoch: int = 0, stft_crop: int = 0):
        super().__init__()
        if int(stft_crop) < 0:
            raise ValueError(f"stft_crop must be >= 0, got {stft_crop}")
        self.stft_crop = int(stft_crop)
        self.feedback_from_epoch = int(feedback_from_epoch)
        if self.feedback_from_epoch and getattr(encoder, "feedback", None) is None:
            raise ValueError("feedback_from_epoch needs an encoder with a feedback stage "
                             "(encoder.feedback=true)")
        if self.feedback_from_epoch and trainable:
            raise ValueError("feedback_from_epoch and trainable exclude each other")
        self.gain_from_epoch = int(gain_from_epoch)
        self.stft_from_epoch = int(stft_from_epoch)
        if int(max_nonfinite_steps) < 1:
            raise ValueError(f"max_nonfinite_steps must be >= 1, got {max_nonfinite_steps}")
        self.max_nonfinite_steps = int(max_nonfinite_steps)
        self.nonfinite_total = 0  # skipped steps (non-finite loss or gradients), whole run
        self._nonfinite_run = 0  # ... in a row
        if scheduler not in (None, "none", "cosine", "cosine_time"):
            raise ValueError("scheduler must be null, 'cosine' or 'cosine_time', "
                             f"got {scheduler!r}")
        if not 0.0 <= w_unident <= 1.0:
            raise ValueError(f"w_unident must be in [0, 1], got {w_unident}")
        self.w_unident = float(w_unident)
        self.scheduler = None if scheduler in (None, "none") else scheduler
        self.warmup_frac = float(warmup_frac)
        self.train_seconds = 0.0  # wall time spent in training epochs (kept in checkpoints)
        self.train_examples = 0
        self._epoch_t0: Optional[float] = None
        self.encoder = encoder
        self.processor = processor
        if hasattr(encoder, "attach_processor"):
            encoder.attach_processor(processor)  # encoders that render (error feedback)
        self.trainable = trainable
        if trainable:
            names = [n for n, _ in encoder.named_parameters()]
            if not any(n.startswith(trainable + ".") for n in names):
                raise ValueError(f"trainable={trainable!r} names no part of the encoder (its "
                                 f"parts: {sorted({n.split('.')[0] for n in names})})")
            for n, p in encoder.named_parameters():
                p.requires_grad_(n.startswith(trainable + "."))
        own = getattr(encoder, "input_mode", None)
        if input_mode is not None and own is not None and input_mode != own:
            raise ValueError(f"input_mode={input_mode!r} but the encoder was built for {own!r}")
        self.input_mode = input_mode or own or "dry_wet"
        self.uses_dry = uses_dry(self.input_mode)  # the network sees the dry audio too
        self.keep_test_examples = 0  # test examples whose audio test_outputs() keeps
        if refine_method not in REFINE_METHODS:
            raise ValueError(f"model.refine_method must be one of {REFINE_METHODS}, got "
                             f"{refine_method!r}")
        self.refine_steps, self.refine_lr = refine_steps, refine_lr
        self.refine_method = refine_method
        self.weights = {"stft": w_stft, "param": w_param, "gain": w_gain}
        if any(w < 0 for w in self.weights.values()) or not any(self.weights.values()):
            raise ValueError(f"loss weights must be >= 0 and not all 0, got w_stft={w_stft}, "
                             f"w_param={w_param}, w_gain={w_gain}")
        self.optimizer_factory = optimizer or (lambda p: torch.optim.Adam(p, lr=1e-3))
        self.mrstft = auraloss.freq.MultiResolutionSTFTLoss(**(stft or {}))
        self.test_sums: dict[str, float] = defaultdict(float)
        self.test_count = 0

    # -- model ---------------------------------------------------------------------------------
    def forward(self, wet: Tensor, dry: Optional[Tensor] = None) -> Tensor:
        return self.encoder(wet, dry if self.uses_dry else None)

    def estimate(self, wet: Tensor, dry: Optional[Tensor] = None) -> Tensor:
        """The encoder's estimate, refined by analysis-by-synthesis when ``refine_steps > 0`` and
        the dry audio is known (see :meth:`refine`)."""
        with torch.no_grad():
            pred = self(wet, dry)
        if self.refine_steps > 0 and dry is not None and self.uses_dry:
            pred = self.refine(dry, wet, pred)
        return pred

    def refine(self, dry: Tensor, wet: Tensor, init: Tensor) -> Tensor:
        """Analysis by synthesis through the processor, from ``init``: ``refine_steps`` steps of
        ``refine_method`` (see :func:`models.refine.refine_settings`): with dry and wet known,
        the applied gain is observable sample by sample."""
        return refine_settings(self.processor, dry, wet, init, self.refine_steps,
                               self.refine_lr, method=self.refine_method)[0]

    @torch.no_grad()
    def render_target(self, dry: Tensor, norm: Tensor) -> tuple[Tensor, Tensor]:
        """The processor's output and gain at ``norm`` (targets, baselines, refined settings)."""
        return self.processor(dry, norm_params=norm, return_gain=True, validate=False)

    @torch.no_grad()
    def make_target(self, dry: Tensor, norm: Tensor) -> tuple[Tensor, Tensor]:
        """The wet target at the true settings: the processor's own ``render_target`` when it
        has one (a third-party plugin, ``models.plugins``: the plugin's real output), else
        :meth:`render_target`."""
        custom = getattr(self.processor, "render_target", None)
        return custom(dry, norm) if custom is not None else self.render_target(dry, norm)

    def _param_weights(self, dry: Tensor, true: Tensor) -> Optional[Tensor]:
        if self.w_unident >= 1.0:
            return None
        from .benchmark import identifiable

        ident = identifiable(self.processor, dry, true, both=False).to(true.device)
        return torch.where(ident, 1.0, self.w_unident).to(true.dtype)

    def _step(self, batch: dict, stage: str, all_terms: bool = False):
        dry, true = batch["dry"], batch["norm_params"]
        wet, gain_true = self.make_target(dry, true)
        pred = self(wet, dry)
        weights = dict(self.weights)
        if stage == "train" and self.current_epoch < self.gain_from_epoch:
            weights["gain"] = 0.0  # the cheap parameter term alone for the first epochs
        if stage == "train" and self.current_epoch < self.stft_from_epoch:
            weights["stft"] = 0.0
        need_audio = all_terms or weights["stft"] or weights["gain"]
        y = gain_pred = None
        if need_audio:
            y, gain_pred = self.processor(dry, norm_params=pred, return_gain=True,
                                          validate=False)
        terms = {}
        if all_terms or weights["param"]:
            pw = self._param_weights(dry, true) if stage != "test" else None
            stages = [p for p in getattr(self.encoder, "stage_preds", [])[:-1]
                      if p.requires_grad] if stage == "train" else []
            per_stage = []
            for p in [*stages, pred]:
                err = (p - true).abs()
                per_stage.append(err.mean() if pw is None else (err * pw).sum() / (
                    pw.sum().clamp_min(1e-6)))
            terms["param"] = sum(per_stage) / len(per_stage)
            if len(getattr(self.encoder, "stage_preds", [])) > 1:
                first = (self.encoder.stage_preds[0] - true).abs().mean()
                self.log(f"{stage}/param_first", first, batch_size=dry.shape[0],
                         sync_dist=stage != "train")
        if all_terms or weights["stft"]:
            y_s, wet_s = y, wet
            if stage == "train" and 0 < self.stft_crop < y.shape[-1]:
                start = int(torch.randint(0, y.shape[-1] - self.stft_crop + 1, (1,)))
                y_s = y[..., start : start + self.stft_crop]
                wet_s = wet[..., start : start + self.stft_crop]
            terms["stft"] = self.mrstft(y_s, wet_s)
        if all_terms or weights["gain"]:
            terms["gain"] = gain_mae_db(gain_pred, gain_true).mean() / 10.0
        loss = sum(weights[k] * v for k, v in terms.items() if weights[k])
        if not isinstance(loss, Tensor):  # every weight 0: nothing to learn from
            raise ValueError("every loss weight (w_stft, w_param, w_gain) is 0")
        batch_size = dry.shape[0]
        sync = stage != "train"  # validation/test values averaged over every DDP process
        self.log(f"{stage}/loss", loss, prog_bar=True, batch_size=batch_size, sync_dist=sync)
        for k, v in terms.items():
            self.log(f"{stage}/{k}", v, batch_size=batch_size, sync_dist=sync)
        return loss, {"dry": dry, "wet": wet, "true": true, "pred": pred, "y": y,
                      "gain_true": gain_true, "gain_pred": gain_pred}

    def training_step(self, batch, batch_idx):
        self.train_examples += int(batch["dry"].shape[0])
        loss = self._step(batch, "train")[0]
        if not bool(torch.isfinite(loss)):
            self._skip_step(f"the training loss is {float(loss)}")
            return None  # Lightning skips backward and the optimizer step
        self._nonfinite_run = 0
        return loss

    def _skip_step(self, why: str) -> None:
        self.nonfinite_total += 1
        self._nonfinite_run += 1
        if self._nonfinite_run >= self.max_nonfinite_steps:
            raise NonFiniteTrainingError(
                f"training stopped at step {self.global_step}: {why}, {self._nonfinite_run} "
                f"steps in a row ({self.nonfinite_total} skipped in this run). The last "
                "checkpoint with finite weights is kept; lower model.optimizer.lr or check the "
                "data (model.max_nonfinite_steps sets the limit)")
        warnings.warn(f"step {self.global_step} skipped: {why} ({self.nonfinite_total} skipped "
                      "so far)", stacklevel=2)

    def on_before_optimizer_step(self, optimizer) -> None:
        grads = [p.grad for p in self.encoder.parameters() if p.grad is not None]
        if grads and not all(bool(torch.isfinite(g).all()) for g in grads):
            for p in self.encoder.parameters():
                p.grad = None  # Adam skips parameters without gradients: nothing moves
            self._skip_step("a gradient is not finite")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def _feedback_phase(self, training: bool) -> None:
        """Two-phase training (``feedback_from_epoch``): which stages run and learn now."""
        if not self.feedback_from_epoch:
            return
        second = not (training and self._first_phase)
        self.encoder.feedback_enabled = second
        for p in self.encoder.first_stage_parameters():
            p.requires_grad_(not second)

    @property
    def _first_phase(self) -> bool:
        """In the first phase of a two-phase run (``feedback_from_epoch``)."""
        return bool(self.feedback_from_epoch) and self.current_epoch < self.feedback_from_epoch

    @property
    def checkpoint_selectable(self) -> bool:
        """Whether this epoch's weights may be chosen as the run's best: not in the first phase
        of a two-phase run, whose network is not the final one."""
        return not self._first_phase

    def on_validation_epoch_start(self) -> None:
        if self._first_phase:
            self.encoder.feedback_enabled = False  # still an identity: skip its cost

    def on_train_epoch_start(self) -> None:
        self._feedback_phase(training=True)
        dm = getattr(self.trainer, "datamodule", None)
        if dm is not None and hasattr(dm, "set_epoch"):
            dm.set_epoch(self.current_epoch)  # new crops and settings every epoch
        self._epoch_t0 = time.perf_counter()

    def on_train_epoch_end(self) -> None:
        if self._epoch_t0 is not None:
            self.train_seconds += time.perf_counter() - self._epoch_t0
            self._epoch_t0 = None

    # -- test: the model and two baselines on the same examples --------------------------------
    def on_test_epoch_start(self) -> None:
        if getattr(self.encoder, "feedback", None) is not None:
            self.encoder.feedback_enabled = True  # the whole network
        self.test_sums = defaultdict(float)
        self.test_count = 0
        self._test_rows: list[tuple[Tensor, Tensor]] = []  # (indices, (n, metrics)) per batch
        self._test_keys: Optional[list[str]] = None
        self._test_outputs: list[dict[str, Tensor]] = []

    def _audio_metrics(self, prefix: str, y: Tensor, wet: Tensor) -> dict[str, Tensor]:
        per_item = torch.stack([self.mrstft(y[i : i + 1], wet[i : i + 1]) for i in range(len(y))])
        return {f"{prefix}/mrstft": per_item, f"{prefix}/si_sdr": si_sdr(y, wet)}

    def test_step(self, batch, batch_idx):
        _, out = self._step(batch, "test", all_terms=True)
        dry, wet, true = out["dry"], out["wet"], out["true"]
        rows = [("model", out["pred"], out["y"], out["gain_pred"])]
        if self.refine_steps > 0 and self.uses_dry:
            refined = self.refine(dry, wet, out["pred"])
            rows.append(("model+refine", refined, *self.render_target(dry, refined)))
        final = rows[-1]  # the estimate predict would give: refined when refinement is on
        metrics: dict[str, Tensor] = {}
        mean_norm = torch.full_like(true, 0.5)
        rows.append(("mean", mean_norm, *self.render_target(dry, mean_norm)))
        for prefix, pred, y, gain in rows:
            metrics.update(self._audio_metrics(prefix, y, wet))
            metrics[f"{prefix}/gain_mae_db"] = gain_mae_db(gain, out["gain_true"])
            for k, v in param_errors(self.processor, pred.detach().double(),
                                     true.double()).items():
                metrics[f"{prefix}/{k}"] = v
        metrics.update(self._audio_metrics("noop", dry, wet))
        metrics["noop/gain_mae_db"] = gain_mae_db(torch.zeros_like(out["gain_true"]),
                                                  out["gain_true"])
        if self._test_keys is None:
            self._test_keys = sorted(metrics)
        values = torch.stack([metrics[k].detach().double().reshape(-1)
                              for k in self._test_keys], dim=1)
        index = batch.get("index")
        if index is None:  # a dataset without indices: count positions (single process only)
            start = sum(len(i) for i, _ in self._test_rows)
            index = torch.arange(start, start + len(values))
        index = index.reshape(-1).to(torch.int64)
        self._test_rows.append((index, values))
        self._keep_outputs(index, out, final)

    def _keep_outputs(self, index: Tensor, out: dict, final: tuple) -> None:
        """What the evaluation report shows, kept from the test itself (nothing re-rendered):
        the true and estimated settings of every example, and the audio and gain curves of the
        first ``keep_test_examples`` (by example index)."""
        _, pred, y, gain_pred = final
        kept = {"index": index.cpu(), "true": out["true"].detach().cpu(),
                "pred": pred.detach().cpu()}
        audio = (index < self.keep_test_examples).cpu()
        if bool(audio.any()):
            for key, value in (("dry", out["dry"]), ("wet", out["wet"]), ("y", y),
                               ("gain_true", out["gain_true"]), ("gain_pred", gain_pred)):
                kept[key] = value.detach().cpu()[audio]
            kept["audio_index"] = kept["index"][audio]
        self._test_outputs.append(kept)

    def test_outputs(self) -> dict[str, Tensor]:
        """The kept test outputs (after ``trainer.test`` on one process), sorted by example
        index: ``index``, ``true`` and ``pred`` (normalised settings; ``pred`` refined when
        refinement is on) for every example; ``dry``, ``wet`` (target), ``y`` (rendered at
        ``pred``), ``gain_true`` and ``gain_pred`` for the first ``keep_test_examples``."""
        rows = getattr(self, "_test_outputs", [])
        if not rows:
            raise RuntimeError("test_outputs() needs a finished trainer.test run")
        out: dict[str, Tensor] = {}
        order = torch.argsort(torch.cat([r["index"] for r in rows]))
        for key in ("index", "true", "pred"):
            out[key] = torch.cat([r[key] for r in rows])[order]
        with_audio = [r for r in rows if "audio_index" in r]
        if with_audio:
            order = torch.argsort(torch.cat([r["audio_index"] for r in with_audio]))
            for key in ("dry", "wet", "y", "gain_true", "gain_pred"):
                out[key] = torch.cat([r[key] for r in with_audio])[order]
        return out

    def on_test_epoch_end(self) -> None:
        """Mean of every metric over the test examples, each counted once: under DDP the
        sampler pads the ranks with duplicates, so the rows of every rank are gathered and
        de-duplicated by example index."""
        if not self._test_rows:
            return
        index = torch.cat([i for i, _ in self._test_rows]).to(self.device)
        values = torch.cat([v for _, v in self._test_rows]).to(self.device)
        if self.trainer.world_size > 1:
            index = self.all_gather(index).reshape(-1)
            values = self.all_gather(values).reshape(-1, values.shape[-1])
        index, values = index.cpu(), values.cpu()
        _, first = np.unique(index.numpy(), return_index=True)
        values = values[torch.from_numpy(first)]
        self.test_sums = defaultdict(float, zip(self._test_keys,
                                                values.sum(dim=0).tolist()))
        self.test_count = int(values.shape[0])

    def test_results(self) -> dict[str, float]:
        """Mean of every test metric over the test set (after ``trainer.test``)."""
        return {k: v / max(self.test_count, 1) for k, v in sorted(self.test_sums.items())}

    # -- checkpoints: the run's config (for evaluate.py) and the RNG states (for exact resumes) --
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        if getattr(self, "run_config", None) is not None:
            checkpoint[RUN_CONFIG_KEY] = self.run_config
        running = 0.0 if self._epoch_t0 is None else time.perf_counter() - self._epoch_t0
        checkpoint[TRAIN_INFO_KEY] = {"train_seconds": self.train_seconds + running,
                                      "train_examples": self.train_examples}
        checkpoint["rng_states"] = {
            "torch": torch.get_rng_state(),
            "numpy": _numpy_state_to_plain(np.random.get_state()),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        info = checkpoint.get(TRAIN_INFO_KEY) or {}
        self.train_seconds = float(info.get("train_seconds", 0.0))
        self.train_examples = int(info.get("train_examples", 0))
        states = checkpoint.get("rng_states")
        if not states:
            return
        torch.set_rng_state(states["torch"])
        np.random.set_state(_numpy_state_from_plain(states["numpy"]))
        random.setstate(states["python"])
        if states.get("cuda") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(states["cuda"])

    def configure_optimizers(self):
        if self.feedback_from_epoch:
            return self._two_phase_optimizer()
        opt = self.optimizer_factory([p for p in self.encoder.parameters() if p.requires_grad])
        if self.scheduler is None:
            return opt
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if self.scheduler == "cosine_time":
            factor = self._time_factor(total)
        else:
            factor = _warmup_cosine(total, self.warmup_frac)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _two_phase_optimizer(self):
        """``feedback_from_epoch``: one parameter group per stage, each with the schedule over
        its own phase (0 outside it: Adam also skips parameters without gradients)."""
        if self.scheduler not in (None, "cosine"):
            raise ValueError("feedback_from_epoch works with scheduler=cosine or null, got "
                             f"{self.scheduler!r}")
        first = list(self.encoder.first_stage_parameters())
        second = list(self.encoder.feedback.parameters())
        opt = self.optimizer_factory([{"params": first}, {"params": second}])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        epochs = self.trainer.max_epochs
        if epochs is None or epochs <= self.feedback_from_epoch:
            raise ValueError(f"feedback_from_epoch={self.feedback_from_epoch} needs "
                             f"trainer.max_epochs above it, got {epochs}")
        switch = round(total * self.feedback_from_epoch / epochs)

        def phase(lo: int, hi: int) -> Callable[[int], float]:
            inner = _warmup_cosine(hi - lo, self.warmup_frac)

            def factor(step: int) -> float:
                if not lo <= step < hi:
                    return 0.0
                return 1.0 if self.scheduler is None else inner(step - lo)

            return factor

        sched = torch.optim.lr_scheduler.LambdaLR(opt, [phase(0, switch), phase(switch, total)])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def _time_factor(self, total: int) -> Callable[[int], float]:
        """The ``cosine_time`` rate factor: warm-up then cosine decay over the run's progress,
        the larger of its share of steps done and its share of ``trainer.max_time`` spent
        (Lightning's ``Timer``, which also restores the elapsed time when a run resumes)."""
        timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
        if timer is None:
            raise ValueError("scheduler=cosine_time needs a time budget: set trainer.max_time")
        wf = min(max(self.warmup_frac, 0.0), 0.5)

        def factor(step: int) -> float:
            done = timer.time_elapsed("train")
            left = timer.time_remaining("train")
            by_time = done / (done + left) if left is not None and done + left > 0 else 0.0
            p = min(1.0, max(step / total, by_time))
            if p < wf:
                return max(p / wf, 1.0 / max(1, total))
            return _cosine_decay((p - wf) / (1.0 - wf))

        return factor
