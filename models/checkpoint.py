"""Loading checkpoints safely: tensors and plain data only, an allowlist for the saved config's
``_target_`` entries, and one clear error for a missing, corrupt or non-finite checkpoint."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable

import torch

__all__ = ["CheckpointError", "load_state", "check_targets", "ALLOWED_TARGET_PREFIXES",
           "check_finite_state", "finite_or_none", "atomic_torch_save", "atomic_checkpoint_io",
           "newest_intact_checkpoint", "FiniteModelCheckpoint"]

# what a checkpoint's saved config may name as a target: the project's packages, the optimizers
# and what the shipped configs use (an entry ending in "." is a prefix, any other an exact name)
ALLOWED_TARGET_PREFIXES = ("dynfx.", "models.", "torch.optim.", "lightning.Trainer",
                           "lightning.pytorch.callbacks.", "lightning.pytorch.loggers.")


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: missing, unreadable, unsafe or non-finite."""


def load_state(path: str | Path) -> dict:
    """``torch.load`` with ``weights_only=True`` (nothing in the file can run code), on the CPU.

    Raises :class:`CheckpointError` with one line naming the file when it is missing, truncated
    or corrupt, or holds objects other than tensors and plain data."""
    path = Path(path)
    if path.is_dir():
        hint = path / "checkpoints" / "last.ckpt"
        raise CheckpointError(f"checkpoint {path} is a folder; pass a .ckpt file"
                              + (f" such as {hint}" if hint.exists() else
                                 " (this folder has no checkpoints/last.ckpt)"))
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): an interrupted save?")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise CheckpointError(
                f"checkpoint {path} holds objects that only pickle can rebuild; refused "
                f"(checkpoints are loaded with weights_only=True): {msg}") from None
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt ({type(exc).__name__}: "
                              f"{msg})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise CheckpointError(f"checkpoint {path} has no state_dict (not a training checkpoint)")
    return state


def _targets(node: Any, where: str = "") -> Iterable[tuple[str, Any]]:
    if isinstance(node, dict):
        for k, v in node.items():
            here = f"{where}.{k}" if where else str(k)
            if k == "_target_":
                yield here, v
            else:
                yield from _targets(v, here)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from _targets(v, f"{where}[{i}]")


def check_targets(config: Any, allowed: tuple[str, ...] = ALLOWED_TARGET_PREFIXES,
                  source: str = "the checkpoint's config") -> None:
    """Raise :class:`CheckpointError` before anything is built when a ``_target_`` anywhere in
    ``config`` (a plain dict/list tree) is not under one of the ``allowed`` prefixes."""
    for where, target in _targets(config):
        ok = isinstance(target, str) and any(
            target.startswith(a) if a.endswith(".") else target == a for a in allowed)
        if not ok:
            raise CheckpointError(
                f"{source} asks to instantiate {target!r} at {where}; only targets under "
                f"{', '.join(allowed)} may be built from a checkpoint")


def check_finite_state(state_dict: dict, source: str = "checkpoint") -> None:
    """Raise :class:`CheckpointError` when a floating tensor of ``state_dict`` is not finite."""
    for name, t in state_dict.items():
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(
                torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise CheckpointError(f"{source}: weight {name} has {bad} non-finite values (NaN or "
                                  f"Inf); the run diverged, use an earlier checkpoint")


def finite_or_none(value: Any) -> Any:
    """NaN/Inf floats as ``None`` (recursively), so that JSON written from it is valid."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


# --------------------------------------------------------------------------------------------
# durable, finite saves
# --------------------------------------------------------------------------------------------
def atomic_torch_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the target's folder, flushed and fsynced, then
    renamed over the target (and the folder fsynced): a kill or a full disk during the save
    leaves the old file intact, and no temporary file behind."""
    import os

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:  # some filesystems cannot fsync a folder; the rename is still atomic
        pass


def _checkpoint_io_class():
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    class AtomicCheckpointIO(TorchCheckpointIO):
        """Lightning checkpoint IO that writes atomically (see :func:`atomic_torch_save`) and
        never writes a checkpoint whose weights are not finite (a warning says so)."""

        def save_checkpoint(self, checkpoint, path, storage_options=None):
            import warnings

            if storage_options is not None:
                raise TypeError("AtomicCheckpointIO takes no storage_options")
            try:
                check_finite_state(checkpoint.get("state_dict", {}), source=str(path))
            except CheckpointError as exc:
                warnings.warn(f"not saving {path}: {exc}", stacklevel=2)
                return
            atomic_torch_save(checkpoint, path)

    return AtomicCheckpointIO


def atomic_checkpoint_io():
    """An instance of the atomic, finite-only Lightning ``CheckpointIO`` plugin."""
    return _checkpoint_io_class()()


def newest_intact_checkpoint(folder: str | Path, prefer: str = "last.ckpt") -> tuple[Path, bool]:
    """``folder/prefer`` when it loads; otherwise the newest ``*.ckpt`` in ``folder`` that loads
    (second value True: a fallback was taken). :class:`CheckpointError` when none loads."""
    folder = Path(folder)
    first = folder / prefer
    candidates = [first] + sorted((p for p in folder.glob("*.ckpt") if p != first),
                                  key=lambda p: p.stat().st_mtime, reverse=True)
    problems = []
    for i, p in enumerate(candidates):
        if not p.exists():
            continue
        try:
            state = load_state(p)
            check_finite_state(state["state_dict"], source=str(p))
            return p, i > 0
        except CheckpointError as exc:
            problems.append(str(exc))
    raise CheckpointError(f"no intact checkpoint in {folder}" + (
        f" ({'; '.join(problems)})" if problems else " (the folder has no .ckpt file)"))


try:  # the training framework's checkpoint callback (needs lightning, like the rest of models/)
    from lightning.pytorch.callbacks import ModelCheckpoint as _ModelCheckpoint
except ImportError:  # pragma: no cover
    _ModelCheckpoint = object


class FiniteModelCheckpoint(_ModelCheckpoint):
    """``ModelCheckpoint`` that never takes a non-finite monitored value (a diverged run's NaN
    validation loss) as a best model, nor an epoch whose module says it is not the whole network
    yet (``checkpoint_selectable`` False: the first phase of a two-phase run), and that keeps
    ``last.ckpt`` at the latest epoch."""

    def check_monitor_top_k(self, trainer, current=None) -> bool:
        if current is not None and not bool(torch.isfinite(torch.as_tensor(current)).all()):
            return False
        if not getattr(trainer.lightning_module, "checkpoint_selectable", True):
            return False
        return super().check_monitor_top_k(trainer, current)

    def on_validation_end(self, trainer, pl_module) -> None:
        """Also write ``last.ckpt`` after an epoch that is not a new best: Lightning saves it
        only together with a top-k checkpoint, so a resume (``ckpt_path=last``) would go back
        to the best epoch and a time-capped run would lose its final weights."""
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._keep_last(trainer)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._keep_last(trainer)

    def _keep_last(self, trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def user_message(exc: BaseException) -> str:
    """The one line to show a user for ``exc``: the original error's message when Hydra wrapped
    it (``InstantiationException``) while building an object from the config."""
    root = exc
    while type(root).__name__ == "InstantiationException" and root.__cause__ is not None:
        root = root.__cause__
    text = " ".join(str(root).split())
    return text or type(root).__name__
