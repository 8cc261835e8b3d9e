"""The training loop: build, train, validate with the WSOL metrics, checkpoint, resume.

``run_training(cfg)`` is the one entry point (the CLI and the demo call it). It runs in a single process
(CPU or one GPU) or as one rank of a ``torchrun`` job (DistributedDataParallel, gloo on CPU, nccl on GPU).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..data import ShardSampler
from ..files import atomic_copy
from .checkpoint import (
    atomic_write_bytes,
    data_config_metadata,
    latest_resume_point,
    load_resume_point,
    save_resume_point,
    save_weights,
)
from .config import RUNTIME_KEYS, ConfigError, TrainConfig, config_to_dict, load_config, save_config
from .cutmix import apply_cutmix, build_cutmix, cutmix_loss
from .distributed import (
    DistInfo,
    GlobalBatchSampler,
    SeededDataset,
    get_rng_state,
    init_distributed,
    seed_everything,
    set_rng_state,
)
from .lock import lock_output_dir
from .optim import build_optimizer, head_param_names, lr_factor, momentum_at, set_lr, set_momentum
from .preflight import preflight, resolve_device
from .run_layout import RunLayout
from .state import STATE_VERSION, TrainSession, TrainState

__all__ = ['STATE_VERSION', 'TrainSession', 'TrainState', 'run_training', 'train_mean_std']
# Scalar metrics written to the log and the summary (WSOLEvaluator.compute() also returns curves).
METRIC_KEYS = ('top1_clas', 'gt_known_loc', 'top1_loc', 'max_box_acc', 'max_box_acc_v2', 'best_threshold')


def _log(info: DistInfo, *args: Any) -> None:
    if info.is_main:
        print(*args, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------------
# model and data


def _load_initial_checkpoint(model: nn.Module, path: str, info: DistInfo) -> set[str]:
    """Load every tensor of ``path`` (a weights file or a run folder's best weights) whose key and shape
    match; return the parameters it did not supply. Read by the model loader's ``read_checkpoint``."""
    from ..hub.loader import read_checkpoint

    source, _ = read_checkpoint(path)
    own = model.state_dict()
    keep = {k: v for k, v in source.items() if k in own and own[k].shape == v.shape}
    if not keep:
        raise ConfigError(f'initial_checkpoint {path} shares no tensor (same key and shape) with the model')
    model.load_state_dict(keep, strict=False)
    dropped = sorted(set(source) - set(keep))
    fresh = {n for n, _ in model.named_parameters() if n not in keep}
    _log(
        info,
        f'initial_checkpoint: loaded {len(keep)} tensors from {path}; dropped {len(dropped)} '
        f'({", ".join(dropped[:4])}{", ..." if len(dropped) > 4 else ""}); {len(fresh)} new parameters',
    )
    return fresh


def build_model(cfg: TrainConfig, num_classes: int | None, info: DistInfo) -> tuple[nn.Module, set[str]]:
    """The timm model of the recipe, with its starting weights and ADL; returns it and its new parameters."""
    import timm

    from ..adl import ADL

    kwargs = dict(cfg.model_kwargs)
    if num_classes is not None:
        kwargs['num_classes'] = num_classes
    if cfg.pretrained and cfg.pretrained_file:
        kwargs['pretrained_cfg_overlay'] = dict(file=cfg.pretrained_file)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank and every run
    try:
        model = timm.create_model(cfg.model, pretrained=cfg.pretrained, **kwargs)
    except TypeError as err:
        raise ConfigError(f'model {cfg.model!r} rejected model_kwargs {cfg.model_kwargs}: {err}') from None
    except (OSError, RuntimeError, ValueError) as err:
        if not cfg.pretrained:
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(
            f'cannot load the pretrained weights of {cfg.model!r} ({first}); '
            'give a local file with pretrained_file=PATH or set pretrained=false'
        ) from None
    new_params: set[str] = set()
    if cfg.initial_checkpoint:
        new_params = _load_initial_checkpoint(model, cfg.initial_checkpoint, info)
    has_adl = any(isinstance(m, ADL) for m in model.modules())
    if cfg.adl is not None:
        if has_adl:
            if cfg.adl.after is not None:
                raise ConfigError(
                    f'model {cfg.model!r} already holds ADL layers: drop adl.after (or train its baseline '
                    'with adl.after); the other adl.* settings still apply to its layers'
                )
            for m in model.modules():
                if isinstance(m, ADL):
                    m.drop_rate, m.gamma, m.per_sample = cfg.adl.drop_rate, cfg.adl.gamma, cfg.adl.per_sample
                    m.use_drop, m.use_importance = cfg.adl.use_drop, cfg.adl.use_importance
        else:
            if not cfg.adl.after:
                raise ConfigError(f'model {cfg.model!r} has no ADL layers: give adl.after (insertion points)')
            from ..surgery import insert

            try:
                model = insert(
                    model,
                    after=cfg.adl.after,
                    drop_rate=cfg.adl.drop_rate,
                    gamma=cfg.adl.gamma,
                    per_sample=cfg.adl.per_sample,
                    use_drop=cfg.adl.use_drop,
                    use_importance=cfg.adl.use_importance,
                )
            except ValueError as err:  # an unknown point: the message lists the closest valid ones
                raise ConfigError(f'adl.after: {err}') from None
    return model, new_params


def train_mean_std(cfg: TrainConfig, model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The normalisation a recipe trains with: its ``data.mean`` / ``data.std``, each null one the model's
    pretrained_cfg value (one function, so evaluation code cannot resolve it differently)."""
    from ..data.transforms import model_mean_std

    mean, std = model_mean_std(model)
    return tuple(cfg.data.mean or mean), tuple(cfg.data.std or std)


def _train_transform(cfg: TrainConfig, mean, std):
    from timm.data.transforms import MaybeToTensor
    from torchvision import transforms as T

    from ..data.transforms import TRAIN_RESIZE_RATIO

    size = cfg.img_size
    ops: list = []
    if cfg.aug.crop == 'random_crop':
        ops += [T.Resize((round(size * TRAIN_RESIZE_RATIO),) * 2), T.RandomCrop(size)]
    else:
        ops += [T.Resize((size, size))]
    if cfg.aug.hflip:
        ops.append(T.RandomHorizontalFlip())
    ops += [MaybeToTensor(), T.Normalize(mean=torch.tensor(mean), std=torch.tensor(std))]
    if cfg.aug.hide_patch:  # Hide-and-Seek after Normalize: hidden pixels at the mean (0); train only
        from ..data.hide_and_seek import HideAndSeek, scaled_patch_size

        ops.append(HideAndSeek(scaled_patch_size(cfg.aug.hide_patch, size), cfg.aug.hide_prob))
    return T.Compose(ops)


def build_datasets(cfg: TrainConfig, mean, std):
    from ..data import create_wsol_dataset

    common = dict(img_size=cfg.img_size, mean=mean, std=std, metadata_root=cfg.data.metadata_root or None)
    try:
        train = create_wsol_dataset(
            cfg.data.name, cfg.data.root, cfg.data.train_split, is_training=True, **common
        )
        val = None
        if cfg.data.val_split:
            val = create_wsol_dataset(
                cfg.data.name, cfg.data.root, cfg.data.val_split, is_training=False, **common
            )
    except (OSError, ValueError) as err:  # malformed or missing annotation files: the data module's message
        raise ConfigError(f'data: {err}') from None
    train.transform = _train_transform(cfg, mean, std)
    return train, val


# ---------------------------------------------------------------------------------------------------------
# validation


def validate(model: nn.Module, loader: DataLoader, cfg: TrainConfig, device: torch.device, amp_dtype) -> dict:
    """WSOL metrics of ``model`` on ``loader`` (percent), through the one evaluation loop.

    Under torchrun each rank scores its own shard of the split and the counts are summed: every rank
    gets the whole split's numbers, the ones a single process would get.
    """
    from ..evaluation import evaluate

    result = evaluate(
        model,
        loader,
        cam_method=cfg.cam_method,
        cam_threshold=cfg.cam_threshold,
        device=device,
        amp_dtype=amp_dtype,
        channels_last=cfg.channels_last,
    )
    return {k: float(v) for k, v in result.summary().items() if k in METRIC_KEYS}


# ---------------------------------------------------------------------------------------------------------
# state


def _gather_rng(info: DistInfo) -> list[dict]:
    state = get_rng_state()
    if not info.enabled:
        return [state]
    out: list = [None] * info.world_size
    dist.all_gather_object(out, state)
    return out


def _check_resume_config(cfg: TrainConfig, saved_path: Path) -> None:
    import yaml

    saved = yaml.safe_load(saved_path.read_text()) if saved_path.is_file() else None
    if saved is None:
        return
    with contextlib.suppress(ConfigError):  # keys added since the run was saved: their defaults, not a change
        saved = config_to_dict(load_config(saved))
    now = config_to_dict(cfg)
    diffs = []

    def walk(a, b, prefix=''):
        for key in sorted(set(a) | set(b)):
            name = prefix + key
            va, vb = a.get(key), b.get(key)
            if isinstance(va, dict) and isinstance(vb, dict) and key not in ('model_kwargs',):
                walk(va, vb, name + '.')
            elif va != vb and name not in RUNTIME_KEYS:
                diffs.append(f'{name}: {va!r} -> {vb!r}')

    walk(saved, now)
    if diffs:
        raise ConfigError(
            f'--resume with a config that differs from the saved run in {cfg.output_dir}: ' + '; '.join(diffs)
        )


def _summary_table(history: list[dict], select_metric: str, best_epoch: int | None) -> str:
    cols = ['epoch', 'train_loss', 'lr', *[k for k in METRIC_KEYS if any(k in h for h in history)]]
    rows = []
    for h in history:
        row = []
        for c in cols:
            v = h.get(c)
            row.append('' if v is None else (f'{v:.4g}' if isinstance(v, float) else str(v)))
        if h['epoch'] == best_epoch:
            row[0] += ' *'
        rows.append(row)
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(cols)]
    lines = ['  '.join(c.rjust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ['  '.join(v.rjust(w) for v, w in zip(r, widths, strict=True)) for r in rows]
    if best_epoch is not None:
        lines.append(f'* best epoch by {select_metric}')
    return '\n'.join(lines)


# ---------------------------------------------------------------------------------------------------------
# entry point


def run_training(
    cfg: TrainConfig | dict | str | os.PathLike, *, resume: bool = False, progress: bool = True
) -> dict:
    """Train the recipe ``cfg``; return its metrics and output paths.

    Args:
        cfg: a ``TrainConfig`` (or anything ``load_config`` reads).
        resume: continue the run saved in ``cfg.output_dir`` from its newest checkpoint (bit-exact on CPU);
            starts afresh if there is none. Without it, an output directory holding a run is an error.
        progress: show a tqdm bar per epoch (on a TTY).

    Returns a dict: ``final`` (metrics of the last validation), ``best`` (metrics of the selected epoch),
    ``best_epoch``, ``select_metric``, ``checkpoints`` (``{'best': path, 'last': path}``), ``output_dir``,
    ``config``, ``log``, ``epochs``, ``steps``, ``train_seconds`` (training loop time, validation excluded),
    ``val_seconds``.

    A run keeps its state in its own objects (``TrainState``, ``TrainSession``) and seeds every generator
    it draws from, so runs one after another in one process give the weights separate processes give.
    It leaves the process as it found it: the caller's generator states, no output-folder lock, no
    process group it created, no compiled graphs.
    """
    if not isinstance(cfg, TrainConfig):
        cfg = load_config(cfg)
    device = resolve_device(cfg.device)
    preflight(cfg)
    had_group = dist.is_available() and dist.is_initialized()
    info = init_distributed(device.type)
    if info.enabled and device.type == 'cuda':
        device = torch.device('cuda', info.local_rank)
    caller_rng = get_rng_state()
    lock = None
    try:
        # Before any work: a second run on the same output_dir stops here, naming the first.
        lock = lock_output_dir(
            cfg.output_dir, is_main=info.is_main, distributed=info.enabled, warn=lambda m: _log(info, m)
        )
        return _run(cfg, device, info, resume=resume, progress=progress)
    finally:
        if lock is not None:
            lock.release()
        _leave_process_clean(cfg, info, had_group, caller_rng)


def _leave_process_clean(cfg: TrainConfig, info: DistInfo, had_group: bool, caller_rng: dict) -> None:
    """Undo what a run changed in the process, so the next run (or the caller) starts from the same place."""
    set_rng_state(caller_rng)
    if cfg.compile:  # dynamo's per-code caches would count the next run's model as a recompile
        torch._dynamo.reset()
    if info.enabled and not had_group and dist.is_initialized():
        dist.destroy_process_group()


def _run(cfg: TrainConfig, device: torch.device, info: DistInfo, *, resume: bool, progress: bool) -> dict:
    """Build, restore or start, train every epoch left, report."""
    layout = RunLayout(Path(cfg.output_dir))
    point = _find_resume_point(cfg, layout, resume)
    _check_batch_split(cfg, info)
    session = _build_session(cfg, device, info, layout)
    state = _start_state(session, resumed=point is not None)
    session.train_model = _wrap_for_training(session)
    while state.epoch < cfg.epochs:
        _run_epoch(session, state, progress)
    return _finish(session, state)


# ---------------------------------------------------------------------------------------------------------
# building the session


def _check_batch_split(cfg: TrainConfig, info: DistInfo) -> None:
    """The global batch splits evenly over the processes (and, with CutMix, into even per-process batches)."""
    if info.enabled and info.world_size > 1 and cfg.batch_size % info.world_size:
        raise ConfigError(f'batch_size {cfg.batch_size} is not divisible by the {info.world_size} processes')
    if cfg.aug.cutmix_alpha > 0 and (cfg.batch_size // info.world_size) % 2:
        raise ConfigError(
            f'aug.cutmix_alpha needs an even batch per process: batch_size {cfg.batch_size} over '
            f'{info.world_size} processes is {cfg.batch_size // info.world_size}'
        )


def _find_resume_point(cfg: TrainConfig, layout: RunLayout, resume: bool) -> tuple[Path, Path] | None:
    """The newest resume point of the output folder; an error when there is one and ``resume`` is off."""
    point = latest_resume_point(layout.resume)
    if point is not None and not resume:
        raise ConfigError(
            f'output_dir {layout.root} already holds a run: pass --resume to continue it, or choose another '
            'output_dir'
        )
    if point is not None:
        _check_resume_config(cfg, layout.config)
    return point


def _precision(cfg: TrainConfig, device: torch.device, info: DistInfo) -> tuple[torch.dtype | None, bool]:
    """The autocast dtype and channels_last the steps run with.

    A GPU recipe (device: auto) run without a GPU drops its GPU settings; device: cpu keeps bf16 autocast
    and channels_last, so those paths can be exercised on a CPU (fp16 on CPU is refused by the config).
    """
    gpu_settings = device.type == 'cuda' or cfg.device == 'cpu'
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(cfg.amp) if gpu_settings else None
    if not gpu_settings and (cfg.amp != 'none' or cfg.channels_last):
        _log(info, f'note: running on {device}: amp={cfg.amp} and channels_last={cfg.channels_last} are off')
    return amp_dtype, cfg.channels_last and gpu_settings


def _model_and_data(cfg: TrainConfig, info: DistInfo):
    """Model first (its pretrained cfg gives the normalisation), then the data, then the class count.

    Returns the model, its new parameter names, the train and val data sets and the data metadata every
    weights file records (evaluation reads it instead of guessing from the model name).
    """
    model, new_params = build_model(cfg, cfg.num_classes, info)
    mean, std = train_mean_std(cfg, model)
    data_meta = data_config_metadata(mean, std, cfg.img_size)
    train_ds, val_ds = build_datasets(cfg, mean, std)
    if cfg.num_classes is None and train_ds.num_classes != model.num_classes:
        torch.manual_seed(cfg.seed)
        model.reset_classifier(train_ds.num_classes)
        fresh = {id(p) for p in model.get_classifier().parameters()}
        new_params |= {n for n, p in model.named_parameters() if id(p) in fresh}
    if len(train_ds) < cfg.batch_size:
        raise ConfigError(f'batch_size {cfg.batch_size} exceeds the {len(train_ds)} training images')
    return model, new_params, train_ds, val_ds, data_meta


def _loaders(cfg: TrainConfig, info: DistInfo, train_ds, val_ds, pin_memory: bool):
    """The resumable training batch sampler, the training loader and the validation loader (or None)."""
    from ..data import wsol_collate

    sampler = GlobalBatchSampler(
        len(train_ds), cfg.batch_size, rank=info.rank, world_size=info.world_size, seed=cfg.seed
    )
    loader_kw = dict(num_workers=cfg.num_workers, pin_memory=pin_memory, collate_fn=wsol_collate)
    if cfg.num_workers > 0:
        loader_kw['persistent_workers'] = False
    # Private generators: creating a loader iterator must not consume the global generator ADL draws from.
    train_loader = DataLoader(
        SeededDataset(train_ds, cfg.seed), batch_sampler=sampler, generator=torch.Generator(), **loader_kw
    )
    val_loader = None
    if val_ds is not None:  # every rank validates its shard (no image twice: ShardSampler)
        val_loader = DataLoader(
            val_ds, batch_size=max(1, cfg.batch_size // info.world_size),
            sampler=ShardSampler(val_ds, info.world_size, info.rank), generator=torch.Generator(), **loader_kw,
        )  # fmt: skip
    return sampler, train_loader, val_loader


def _build_session(cfg: TrainConfig, device: torch.device, info: DistInfo, layout: RunLayout) -> TrainSession:
    """Everything the run builds from its recipe, in the order that fixes the initial weights."""
    use_cuda = device.type == 'cuda'
    amp_dtype, channels_last = _precision(cfg, device, info)
    model, new_params, train_ds, val_ds, data_meta = _model_and_data(cfg, info)
    head = head_param_names(model, cfg.optim.head or (), new_params)
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer, peaks = build_optimizer(model, cfg.optim, head)
    scaler = torch.amp.GradScaler('cuda', enabled=cfg.amp == 'fp16' and use_cuda)
    sampler, train_loader, val_loader = _loaders(cfg, info, train_ds, val_ds, pin_memory=use_cuda)
    return TrainSession(
        cfg=cfg, info=info, device=device, layout=layout, model=model, train_model=model,
        optimizer=optimizer, peaks=peaks, scaler=scaler, sampler=sampler, train_loader=train_loader,
        val_loader=val_loader, data_meta=data_meta, amp_dtype=amp_dtype, channels_last=channels_last,
        cutmix=build_cutmix(cfg.aug, model.num_classes),
    )  # fmt: skip


def _wrap_for_training(session: TrainSession) -> nn.Module:
    """The module the steps call: DDP under torchrun, compiled when the recipe asks."""
    train_model: nn.Module = session.model
    if session.info.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        device = session.device
        train_model = DDP(train_model, device_ids=[device.index] if device.type == 'cuda' else None)
    if session.cfg.compile:
        train_model = torch.compile(train_model)
    return train_model


# ---------------------------------------------------------------------------------------------------------
# state: start, resume, save


def _start_state(session: TrainSession, *, resumed: bool) -> TrainState:
    """Seed the training generators, then either restore the resume point or start a fresh run folder."""
    cfg, info = session.cfg, session.info
    seed_everything(cfg.seed + info.rank)
    if resumed:
        return _restore(session)
    if info.is_main:
        session.layout.root.mkdir(parents=True, exist_ok=True)
        save_config(cfg, session.layout.config)
    return TrainState(world_size=info.world_size)


def _restore(session: TrainSession) -> TrainState:
    """Load the newest intact resume point into the session's objects and the generators; return its state."""
    cfg, info = session.cfg, session.info
    loaded = load_resume_point(session.layout.resume)  # falls back to the previous pair if a file is damaged
    for line in loaded.skipped:
        _log(info, f'warning: {line}')
    saved = loaded.state
    state = TrainState.from_payload(saved, str(loaded.state_path), world_size=info.world_size)
    session.model.load_state_dict(loaded.weights)
    session.optimizer.load_state_dict(saved['optimizer'])
    if saved.get('scaler'):
        session.scaler.load_state_dict(saved['scaler'])
    rngs = saved['rng']
    if len(rngs) == info.world_size:
        set_rng_state(rngs[info.rank])
    else:
        _log(info, f'note: resuming a {len(rngs)}-process run on {info.world_size}: not bit-exact')
        seed_everything(cfg.seed + info.rank + saved['step'])
    _log(
        info,
        f'resumed {session.layout.root} at epoch {state.epoch} step {state.step_in_epoch}/'
        f'{session.steps_per_epoch}',
    )
    return state


def _save_point(session: TrainSession, state: TrainState, *, epoch_done: bool) -> None:
    """Write a resume point (all ranks' generators, rank 0's files); at an epoch end also the last weights."""
    info, layout = session.info, session.layout
    rngs = _gather_rng(info)
    if info.is_main:
        payload = {
            **state.to_payload(),
            'optimizer': session.optimizer.state_dict(),
            'scaler': session.scaler.state_dict() if session.scaler.is_enabled() else None,
            'rng': rngs,
        }
        save_resume_point(layout.resume, state.step, session.model.state_dict(), payload, session.data_meta)
        if epoch_done:
            atomic_copy(layout.resume / f'weights-{state.step:09d}.safetensors', layout.last)
    if info.enabled:
        dist.barrier()


# ---------------------------------------------------------------------------------------------------------
# training


def _run_epoch(session: TrainSession, state: TrainState, progress: bool) -> None:
    """Train the rest of the current epoch, validate when due, checkpoint and log it."""
    epoch_seconds, seen = _train_epoch(session, state, progress)
    state.train_seconds += epoch_seconds
    record = _epoch_record(session, state, epoch_seconds, seen)
    if _validation_due(session, state):
        _validate_and_select(session, state, record)
    state.history.append(record)
    state.start_epoch()
    _save_point(session, state, epoch_done=True)
    if session.info.is_main:
        _write_log(session.layout, state.history)
        shown = {k: round(v, 2) for k, v in record.items() if k in METRIC_KEYS}
        _log(
            session.info,
            f'epoch {record["epoch"]}/{session.cfg.epochs}  loss {record["train_loss"]:.4f}'
            + (f'  {shown}' if shown else ''),
        )


def _progress_bar(session: TrainSession, state: TrainState, progress: bool):
    from tqdm import tqdm

    return tqdm(
        total=session.steps_per_epoch,
        initial=state.step_in_epoch,
        desc=f'epoch {state.epoch + 1}/{session.cfg.epochs}',
        unit='step',
        disable=None if (progress and session.info.is_main) else True,
        dynamic_ncols=True,
        leave=False,
    )


def _train_epoch(session: TrainSession, state: TrainState, progress: bool) -> tuple[float, int]:
    """The epoch's remaining steps; returns the seconds they took (checkpoints excluded) and this rank's
    image count."""
    cfg, steps_per_epoch = session.cfg, session.steps_per_epoch
    session.sampler.set_epoch(state.epoch, state.step_in_epoch)
    session.train_model.train()
    epoch_seconds, seen = 0.0, 0
    with _progress_bar(session, state, progress) as bar:  # closed (and forgotten by tqdm) even on an error
        t_last = time.perf_counter()
        for images, labels, *_ in session.train_loader:
            seen += _train_step(session, state, images, labels)
            now = time.perf_counter()
            epoch_seconds += now - t_last
            t_last = now
            bar.set_postfix(
                loss=f'{state.epoch_loss[0] / max(1, state.epoch_loss[1]):.4f}',
                img_s=f'{seen * session.info.world_size / max(epoch_seconds, 1e-9):.1f}',
                refresh=False,
            )
            bar.update(1)
            if (
                cfg.ckpt_every_steps
                and state.step % cfg.ckpt_every_steps == 0
                and (state.step_in_epoch < steps_per_epoch)
            ):
                _save_point(session, state, epoch_done=False)
                t_last = time.perf_counter()  # checkpoint time is not training time
    return epoch_seconds, seen


def _set_schedule(session: TrainSession, step: int) -> None:
    """The learning rate (and, with sched.cycle_momentum, the momentum) of ``step``: pure functions of it."""
    sched, total = session.cfg.sched, session.total_steps
    set_lr(session.optimizer, session.peaks, lr_factor(sched, step, session.steps_per_epoch, total))
    if sched.cycle_momentum:
        set_momentum(session.optimizer, momentum_at(sched, step, total))


def _forward_loss(
    session: TrainSession, step: int, images: torch.Tensor, labels: torch.Tensor
) -> torch.Tensor:
    """The training loss of one batch (moved to the device, in the run's precision and memory format; with
    CutMix, of the mixed batch against its soft targets)."""
    device = session.device
    images = images.to(device, non_blocking=True)
    if session.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = labels.to(device, non_blocking=True)
    if session.cutmix is not None:
        info = session.info
        images, labels = apply_cutmix(
            session.cutmix, images, labels, seed=session.cfg.seed, rank=info.rank, step=step
        )
    amp_dtype = session.amp_dtype
    with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = session.train_model(images)
        if session.cutmix is not None:
            return cutmix_loss(logits.float(), labels)
        return F.cross_entropy(logits.float(), labels)


def _train_step(session: TrainSession, state: TrainState, images: torch.Tensor, labels: torch.Tensor) -> int:
    """One optimizer step; returns its image count."""
    _set_schedule(session, state.step)
    loss = _forward_loss(session, state.step, images, labels)
    if not torch.isfinite(loss):
        raise FloatingPointError(f'loss is {loss.item()} at epoch {state.epoch} step {state.step}')
    optimizer, scaler = session.optimizer, session.scaler
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    n = images.shape[0]
    state.epoch_loss[0] += loss.item() * n
    state.epoch_loss[1] += n
    state.step += 1
    state.step_in_epoch += 1
    return n


# ---------------------------------------------------------------------------------------------------------
# epoch end: record, validation, best checkpoint


def _epoch_record(
    session: TrainSession, state: TrainState, epoch_seconds: float, seen: int
) -> dict[str, Any]:
    """The epoch's log record: mean loss over all ranks, the last step's rate, throughput."""
    loss_sum = torch.tensor(state.epoch_loss, dtype=torch.float64)
    if session.info.enabled:
        dist.all_reduce(loss_sum)
    cfg, world_size = session.cfg, session.info.world_size
    return {
        'epoch': state.epoch + 1,
        'step': state.step,
        'lr': cfg.optim.lr
        * lr_factor(cfg.sched, state.step - 1, session.steps_per_epoch, session.total_steps),
        'train_loss': float(loss_sum[0] / max(1.0, float(loss_sum[1]))),
        'img_per_s': seen * world_size / max(epoch_seconds, 1e-9),
        'epoch_seconds': epoch_seconds,
    }


def _validation_due(session: TrainSession, state: TrainState) -> bool:
    """Every ``eval_every`` epochs and after the last one, when the recipe has a validation split."""
    done = state.epoch + 1
    return session.val_loader is not None and (
        done % session.cfg.eval_every == 0 or done == session.cfg.epochs
    )


def _validate_and_select(session: TrainSession, state: TrainState, record: dict[str, Any]) -> None:
    """Add the validation metrics to ``record``; on rank 0 keep the weights when they are the best yet."""
    cfg, info = session.cfg, session.info
    tv = time.perf_counter()
    record.update(validate(session.model, session.val_loader, cfg, session.device, session.amp_dtype))
    state.val_seconds += time.perf_counter() - tv
    if info.enabled:
        dist.barrier()
    if not info.is_main:
        return
    select, best = cfg.select_metric, state.best
    if best is None or record[select] > best['metrics'][select]:
        state.best = {'epoch': record['epoch'], 'metrics': {k: record[k] for k in METRIC_KEYS if k in record}}
        meta = {**session.data_meta, 'epoch': str(record['epoch'])}
        save_weights(session.model.state_dict(), session.layout.best, meta)


def _write_log(layout: RunLayout, history: list[dict]) -> None:
    text = ''.join(json.dumps(h) + '\n' for h in history)
    atomic_write_bytes(layout.log, text.encode())


# ---------------------------------------------------------------------------------------------------------
# end of the run


def _result(session: TrainSession, state: TrainState) -> dict:
    """``run_training``'s returned dict (see its docstring)."""
    cfg, layout, best = session.cfg, session.layout, state.best
    validated = [h for h in state.history if cfg.select_metric in h]
    return {
        'final': {k: validated[-1][k] for k in METRIC_KEYS if k in validated[-1]} if validated else {},
        'best': dict(best['metrics']) if best else {},
        'best_epoch': best['epoch'] if best else cfg.epochs,
        'select_metric': cfg.select_metric,
        'cam_method': cfg.cam_method,
        'checkpoints': {'best': str(layout.best), 'last': str(layout.last)},
        'output_dir': str(layout.root),
        'config': str(layout.config),
        'log': str(layout.log),
        'epochs': cfg.epochs,
        'steps': state.step,
        'train_seconds': state.train_seconds,
        'val_seconds': state.val_seconds,
        'world_size': session.info.world_size,
    }


def _finish(session: TrainSession, state: TrainState) -> dict:
    """Rank 0 writes the summary (and, without validation, selects the last weights); every rank returns it."""
    info, layout, best = session.info, session.layout, state.best
    if info.is_main and best is None:  # no validation: the last weights are the selected ones
        atomic_copy(layout.last, layout.best)
    result = _result(session, state)
    if info.is_main:
        atomic_write_bytes(layout.summary, (json.dumps(result, indent=2) + '\n').encode())
        _log(info, _summary_table(state.history, session.cfg.select_metric, best['epoch'] if best else None))
    if info.enabled:  # rank 0 kept the history and wrote the summary: every rank returns its result
        shared = [result]
        dist.broadcast_object_list(shared, src=0)
        result = shared[0]
    return result
