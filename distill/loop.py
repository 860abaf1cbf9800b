"""The training loop every kind of training runs: :func:`train_loop`.

AdamW (weight decay 0.01 except biases and LayerNorm), gradient clipping at 1.0, linear
warm-up then linear decay to zero, a tqdm bar with the loss and examples/s, checkpoints every
N steps that a restarted run resumes from (model, optimizer, scheduler, RNG states and step,
so a killed run ends bit-identical to an uninterrupted one), CUDA autocast when a GPU is
present, optional common random numbers (the dropout stream of step ``t`` starts from
``(seed, t)``), and a non-finite loss ends the run as *diverged* instead of crashing. What a
step computes is the caller's ``step_loss`` (:mod:`distill.train`: KD, fine-tuning).
"""

from __future__ import annotations

import inspect
import itertools
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .encode import batch_order
from .errors import TrainingError

StepLoss = Callable[[np.ndarray, random.Random], Mapping[str, torch.Tensor]]


# ----------------------------------------------------------------------------- the loop
@dataclass
class TrainConfig:
    """Settings of one training run (every kind)."""

    epochs: float = 1.0
    max_steps: int | None = None  # when set, overrides epochs
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 0
    device: str | None = None  # None: CUDA when present, else CPU
    mixed_precision: bool = True  # autocast (bf16, else fp16 + scaler); CUDA only
    group_by_length: bool = True
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int = 0  # steps; 0 = no checkpoints
    keep_checkpoints: int = 2
    resume: bool = True  # continue from the newest checkpoint in checkpoint_dir
    progress: bool = True
    desc: str = "train"
    log_every: int = 20
    reseed_every_step: bool = False  # common random numbers: the dropout stream of step t
    #                                  starts from (seed, t), so runs of models that differ
    #                                  (candidates of a search) see the same noise per step

    def total_steps(self, num_examples: int) -> int:
        if num_examples < 1:
            raise TrainingError("no training examples; check the data slice")
        if self.max_steps is not None:
            return int(self.max_steps)
        return max(1, math.ceil(self.epochs * math.ceil(num_examples / self.batch_size)))


@dataclass
class TrainResult:
    steps: int  # optimizer steps done (including those before a resume)
    total_steps: int
    diverged: bool = False
    diverged_step: int | None = None
    final_loss: float = float("nan")  # mean total loss over the last log window
    history: list[dict[str, float]] = field(default_factory=list)
    wall_seconds: float = 0.0  # of this process only
    resumed_from: int | None = None
    examples_per_second: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def model_inputs(model: nn.Module, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch entries ``model.forward`` accepts (MPNet takes no ``token_type_ids``)."""
    params = inspect.signature(model.forward).parameters
    names = ("input_ids", "attention_mask", "token_type_ids")
    return {k: batch[k] for k in names if k in params and k in batch}


def make_optimizer(modules: Sequence[nn.Module], lr: float,
                   weight_decay: float) -> torch.optim.AdamW:
    """AdamW; no decay on biases and LayerNorm parameters; shared parameters once."""
    seen: set[int] = set()
    decay, no_decay = [], []
    for module in modules:
        for mod in module.modules():
            for name, p in mod.named_parameters(recurse=False):
                if id(p) in seen or not p.requires_grad:
                    continue
                seen.add(id(p))
                plain = isinstance(mod, nn.LayerNorm) or name == "bias" or "LayerNorm" in name
                (no_decay if plain else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}], lr=lr)


def linear_schedule(optimizer: torch.optim.Optimizer, warmup: int,
                    total: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up over ``warmup`` steps, then linear decay to zero at ``total``."""
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total - step) / max(1, total - warmup))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("step-*.pt"))


def _save_checkpoint(folder: Path, state: dict[str, Any], keep: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"step-{state['step']:08d}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    for old in _checkpoints(folder)[:-max(1, keep)]:
        old.unlink(missing_ok=True)


@dataclass
class _Loop:
    """Everything one run trains and checkpoints (see :func:`train_loop`)."""

    model: nn.Module
    extra: Sequence[nn.Module]
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    amp_dtype: torch.dtype | None
    rng: random.Random
    result: TrainResult
    identity: dict[str, Any]


def _setup(model: nn.Module, extra: Sequence[nn.Module], config: TrainConfig,
           device: torch.device, num_examples: int) -> _Loop:
    total = config.total_steps(num_examples)
    modules = [m.to(device) for m in (model, *extra)]
    optimizer = make_optimizer(modules, config.lr, config.weight_decay)
    scheduler = linear_schedule(optimizer, round(config.warmup_ratio * total), total)
    amp_dtype = None
    if device.type == "cuda" and config.mixed_precision:
        amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    identity = {"total_steps": total, "seed": config.seed, "batch_size": config.batch_size,
                "num_examples": num_examples}
    return _Loop(model, extra, optimizer, scheduler, scaler, amp_dtype,
                 random.Random(config.seed), TrainResult(steps=0, total_steps=total), identity)


def _resume(loop: _Loop, config: TrainConfig) -> None:
    """Restore the newest checkpoint of ``config.checkpoint_dir`` (or seed a fresh run)."""
    folder = Path(config.checkpoint_dir) if config.checkpoint_dir else None
    found = _checkpoints(folder) if folder and config.resume and folder.is_dir() else []
    if not found:
        torch.manual_seed(config.seed)
        return
    state = torch.load(found[-1], map_location="cpu", weights_only=True)
    if state["identity"] != loop.identity:
        raise TrainingError(f"checkpoint {found[-1]} belongs to a run with settings "
                            f"{state['identity']}, not {loop.identity}; use another "
                            "checkpoint_dir or resume=False")
    loop.model.load_state_dict(state["model"])
    for m, s in zip(loop.extra, state["extra"], strict=True):
        m.load_state_dict(s)
    loop.optimizer.load_state_dict(state["optimizer"])
    loop.scheduler.load_state_dict(state["scheduler"])
    loop.scaler.load_state_dict(state["scaler"])
    torch.set_rng_state(state["torch_rng"])
    if torch.cuda.is_available() and state.get("cuda_rng") is not None:
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    loop.rng.setstate(state["py_rng"])
    loop.result.history, loop.result.steps = state["history"], state["step"]
    loop.result.resumed_from = state["step"]


def _checkpoint(loop: _Loop, config: TrainConfig) -> None:
    """Write the loop's state after ``loop.result.steps`` steps (keeping the newest few)."""
    _save_checkpoint(Path(config.checkpoint_dir), {
        "step": loop.result.steps, "identity": loop.identity, "model": loop.model.state_dict(),
        "extra": [m.state_dict() for m in loop.extra],
        "optimizer": loop.optimizer.state_dict(), "scheduler": loop.scheduler.state_dict(),
        "scaler": loop.scaler.state_dict(), "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        "py_rng": loop.rng.getstate(), "history": loop.result.history}, config.keep_checkpoints)


def _step(loop: _Loop, step_loss: StepLoss, indices: np.ndarray, device: torch.device,
          max_grad_norm: float) -> dict[str, float] | None:
    """One optimizer step on ``indices``; the loss terms, or None when it diverged."""
    with torch.autocast(device.type, dtype=loop.amp_dtype or torch.float32,
                        enabled=loop.amp_dtype is not None):
        terms = step_loss(indices, loop.rng)
    loss = terms["total"]
    if not torch.isfinite(loss.detach()):
        return None
    loop.scaler.scale(loss).backward()
    loop.scaler.unscale_(loop.optimizer)
    params = [p for g in loop.optimizer.param_groups for p in g["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    if not torch.isfinite(norm) and loop.amp_dtype != torch.float16:
        return None
    loop.scaler.step(loop.optimizer)
    loop.scaler.update()
    loop.scheduler.step()
    loop.optimizer.zero_grad(set_to_none=True)
    return {k: float(v.detach()) for k, v in terms.items()}


def _batches(lengths: np.ndarray, config: TrainConfig) -> Iterator[tuple[int, np.ndarray]]:
    """``(step, indices)`` of every step of the schedule, epoch after epoch."""
    per_epoch = math.ceil(len(lengths) / config.batch_size)
    epoch = -1
    order: list[np.ndarray] = []
    for step in itertools.count():
        e, pos = divmod(step, per_epoch)
        if e != epoch:
            epoch, order = e, batch_order(lengths, config.batch_size, config.seed, e,
                                          config.group_by_length)
        yield step, order[pos]


def train_loop(model: nn.Module, step_loss: StepLoss, lengths: np.ndarray, config: TrainConfig,
               *, extra_modules: Sequence[nn.Module] = (),
               on_step: Callable[[int, dict[str, float]], None] | None = None) -> TrainResult:
    """Run ``config``'s schedule; ``step_loss(batch_indices, rng)`` returns a dict of loss
    terms with ``"total"`` (``rng`` is the run's checkpointed ``random.Random``)."""
    device = resolve_device(config.device)
    loop = _setup(model, extra_modules, config, device, len(lengths))
    _resume(loop, config)
    result, total = loop.result, loop.result.total_steps
    for m in (model, *extra_modules):
        m.train()
    bar = tqdm(total=total, initial=result.steps, desc=config.desc, unit="step",
               disable=not config.progress, dynamic_ncols=True)
    start, seen, window = time.perf_counter(), 0, []
    for step, indices in itertools.islice(_batches(lengths, config), result.steps, total):
        if config.reseed_every_step:
            torch.manual_seed(config.seed * 1_000_003 + step)
        terms = _step(loop, step_loss, indices, device, config.max_grad_norm)
        if terms is None:
            result.diverged, result.diverged_step = True, step
            break
        result.steps, seen = step + 1, seen + len(indices)
        window.append(terms)
        if result.steps % config.log_every == 0 or result.steps == total:
            mean = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
            result.history.append({"step": result.steps,
                                   "lr": loop.scheduler.get_last_lr()[0], **mean})
            window = []
            rate = seen / max(1e-9, time.perf_counter() - start)
            bar.set_postfix(loss=f"{mean['total']:.4g}", ex_s=f"{rate:.0f}")
        bar.update(1)
        if config.checkpoint_dir and config.checkpoint_every and (
                result.steps % config.checkpoint_every == 0 or result.steps == total):
            _checkpoint(loop, config)
        if on_step is not None:
            on_step(result.steps, terms)
    bar.close()
    result.wall_seconds = time.perf_counter() - start
    result.examples_per_second = seen / max(1e-9, result.wall_seconds)
    if result.history:
        result.final_loss = result.history[-1]["total"]
    if result.diverged:
        tqdm.write(f"[{config.desc}] diverged at step {result.diverged_step}: non-finite loss "
                   "or gradient; lower the learning rate or check the inputs")
    for m in (model, *extra_modules):
        m.eval()
    return result
