"""Training configuration: a dataclass tree read from YAML, with ``key=value`` command-line overrides.

Every key a recipe may hold is a field below; anything else is an error naming the closest valid key, so a
typo never silently falls back to a default. The resolved tree is what the trainer saves next to its
checkpoints (``config.yaml``) and what ``--resume`` compares against.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import math
import os
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

__all__ = [
    'SELECT_METRICS',
    'AdlConfig',
    'AugConfig',
    'ConfigError',
    'DataConfig',
    'OptimConfig',
    'SchedConfig',
    'TrainConfig',
    'config_to_dict',
    'load_config',
    'save_config',
]

# Validation metrics a recipe may select the best checkpoint by (the keys of WSOLEvaluator.compute()).
SELECT_METRICS = ('max_box_acc', 'max_box_acc_v2', 'top1_loc', 'gt_known_loc', 'top1_clas')
DATASETS = ('cub', 'wsol-metadata', 'imagenet')
CROP_MODES = ('random_crop', 'none')
SCHEDULES = ('step', 'cosine', 'onecycle', 'constant')
OPTIMIZERS = ('sgd',)
AMP_MODES = ('none', 'bf16', 'fp16')


class ConfigError(ValueError):
    """A recipe or override that cannot run: the message is one line naming the bad key or value."""


class _NotFinite(ConfigError):
    """A NaN or infinite number: reported as such even inside ``X | None`` keys."""


@dataclass
class AdlConfig:
    """ADL placement, applied with ``timm_adl.insert`` unless the model already holds ADL layers."""

    after: list[str] | dict[str, dict] | None = None  # insertion points (names accepted by timm_adl.insert)
    drop_rate: float = 0.75  # paper §4: drop mask chosen 75 % of the steps
    gamma: float = 0.9  # drop threshold as a fraction of the attention peak
    per_sample: bool = False  # False = one draw per step per layer, as both references
    # Table 1 ablations: False makes that branch of the same draw the identity ("importance map only" /
    # "drop mask only"); at least one must stay True.
    use_drop: bool = True
    use_importance: bool = True


@dataclass
class DataConfig:
    name: str = 'wsol-metadata'  # cub | wsol-metadata | imagenet
    root: str = ''  # image root
    metadata_root: str | None = None  # wsolevaluation metadata root (<metadata_root>/<split>/*.txt)
    train_split: str = 'train'
    val_split: str | None = 'val'  # val or train-fullsup; never test; null = no validation
    mean: list[float] | None = None  # null = the model's pretrained_cfg
    std: list[float] | None = None


@dataclass
class AugConfig:
    crop: str = (
        'random_crop'  # random_crop: resize to img_size*256/224 then random crop img_size; none: resize
    )
    hflip: bool = True
    # Hide-and-Seek (Singh & Lee, ICCV 2017): patch side at 224 px, scaled by img_size / 224; 0 = off.
    hide_patch: int = 0
    hide_prob: float = 0.5  # each patch hidden independently with this probability (the paper's 0.5)
    # CutMix (timm's Mixup with mixup_alpha=0) on each training batch: patch area ~ Beta(alpha, alpha), soft
    # targets; 0 = off. Applied to a batch with probability cutmix_prob. Needs an even batch on every process.
    cutmix_alpha: float = 0.0
    cutmix_prob: float = 1.0


@dataclass
class OptimConfig:
    name: str = 'sgd'
    lr: float = 0.01  # base rate; each group gets lr * its multiplier
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4
    decay_norm_bias: bool = True  # false: no weight decay on biases and norm parameters (1-d tensors)
    lr_head_mult: float = 10.0  # classifier and new layers
    lr_backbone_mult: float = 1.0  # everything else
    # Parameter-name patterns (fnmatch, or a module prefix such as 'head' or 'layer4') trained at the head rate,
    # in addition to the classifier named by pretrained_cfg['classifier'] and any parameter the initial
    # checkpoint did not supply. null = only those two.
    head: list[str] | None = None


@dataclass
class SchedConfig:
    name: str = 'step'  # step | cosine | onecycle | constant
    milestones: list[float] = field(default_factory=list)  # epochs where step decays the rate
    gamma: float = 0.1  # step decay factor
    warmup_epochs: float = 0.0  # linear warm-up from 0 (step, cosine)
    pct_start: float = 0.3  # onecycle: fraction of the run spent rising
    min_lr_mult: float = 0.0  # cosine / onecycle floor as a fraction of the peak rate
    # onecycle only: cycle SGD's momentum inversely to the rate, as torch's OneCycleLR (cycle_momentum=True):
    # max_momentum at the start, base_momentum at the rate's peak, max_momentum again at the end (cosine).
    # Replaces optim.momentum; false = optim.momentum throughout.
    cycle_momentum: bool = False
    base_momentum: float = 0.85
    max_momentum: float = 0.95


@dataclass
class TrainConfig:
    model: str = ''  # timm model name (``import timm_adl`` registers the WSOL backbones)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False
    pretrained_file: str | None = (
        None  # local weights for pretrained=True (timm's pretrained_cfg_overlay file)
    )
    initial_checkpoint: str | None = None  # safetensors to start from; keys with another shape are dropped
    num_classes: int | None = None  # null = the data set's
    adl: AdlConfig | None = None
    data: DataConfig = field(default_factory=DataConfig)
    img_size: int = 224
    aug: AugConfig = field(default_factory=AugConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    sched: SchedConfig = field(default_factory=SchedConfig)
    epochs: int = 1
    batch_size: int = 32  # global batch: split evenly over the processes of a torchrun job
    seed: int = 0
    eval_every: int = 1  # validate every N epochs (and always after the last one)
    select_metric: str = 'max_box_acc'  # best checkpoint by this validation metric
    cam_threshold: float = 0.2  # the paper's fixed CAM threshold for gt_known_loc / top1_loc
    cam_method: str = 'cam'  # how validation makes its maps: one of timm_adl.cam.CAM_METHODS
    ckpt_every_steps: int = 0  # also checkpoint every N steps inside an epoch (0 = at epoch ends only)
    device: str = 'auto'  # auto | cpu | cuda | cuda:N
    amp: str = 'none'  # none | bf16 | fp16 (fp16 GPU only; device=auto without a GPU turns amp off)
    channels_last: bool = False
    compile: bool = False
    num_workers: int = 2
    output_dir: str = 'output/train'


# Keys that only change how a run executes, not what it computes: a resumed run may change them.
RUNTIME_KEYS = ('device', 'num_workers', 'output_dir', 'compile', 'ckpt_every_steps')


# ---------------------------------------------------------------------------------------------------------
# dict <-> dataclass with type checks


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _all_keys(cls: type, prefix: str = '') -> list[str]:
    keys = []
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        keys.append(name)
        sub = _dataclass_in(_hints(cls)[f.name])
        if sub is not None:
            keys.extend(_all_keys(sub, name + '.'))
    return keys


def _dataclass_in(tp: Any) -> type | None:
    """The dataclass type inside ``tp`` (``X`` or ``X | None``), else None."""
    if dataclasses.is_dataclass(tp):
        return tp
    for arg in typing.get_args(tp):
        if dataclasses.is_dataclass(arg):
            return arg
    return None


def _unknown_key(key: str, valid: Iterable[str]) -> ConfigError:
    """The error for an unknown key, with the single closest valid key: a sibling first, then any key."""
    valid = list(valid)
    parent, _, leaf = key.rpartition('.')
    siblings = [v.rpartition('.')[2] for v in valid if v.rpartition('.')[0] == parent]
    close = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
    if close:
        best = f'{parent}.{close[0]}' if parent else close[0]
    else:
        close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
        if not close:  # a leaf put in the wrong section, e.g. 'lr' for 'optim.lr'
            by_leaf = {v.rpartition('.')[2]: v for v in reversed(valid)}
            close = [by_leaf[m] for m in difflib.get_close_matches(leaf, list(by_leaf), n=1, cutoff=0.6)]
        best = close[0] if close else None
    hint = f' (did you mean {best!r}?)' if best else ''
    return ConfigError(f'unknown config key {key!r}{hint}')


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace('typing.', '')


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; convert only lossless cases (int -> float, str -> path)."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except ConfigError as err:
                errors.append(err)
        for err in errors:  # a number of the right type, but NaN or infinite: say so, not "wrong type"
            if isinstance(err, _NotFinite):
                raise err
        raise ConfigError(f'config key {key!r} expects {_type_name(tp)}, got {value!r}')
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f'config key {key!r} expects a mapping of {tp.__name__} keys, got {value!r}')
        return _from_dict(tp, value, key + '.')
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f'config key {key!r} expects true or false, got {value!r}')
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f'config key {key!r} expects an integer, got {value!r}')
    if tp is float:
        number = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):  # YAML 1.1 reads '1e-4' as a string
            with contextlib.suppress(ValueError):
                number = float(value)
        if number is None:
            raise ConfigError(f'config key {key!r} expects a number, got {value!r}')
        if not math.isfinite(number):  # .nan passes every range check and fails at step 1
            raise _NotFinite(f'config key {key!r} expects a finite number, got {value!r}')
        return number
    if tp is str:
        if isinstance(value, (str, os.PathLike)):
            return os.fspath(value)
        raise ConfigError(f'config key {key!r} expects a string, got {value!r}')
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f'config key {key!r} expects a list, got {value!r}')
        return [_coerce(v, item_tp, f'{key}[{i}]') for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f'config key {key!r} expects a mapping, got {value!r}')
        return {str(k): v for k, v in value.items()}
    raise TypeError(f'unsupported annotation {tp!r} for {key!r}')  # a bug in this module, not user input


def _from_dict(cls: type, data: Mapping, prefix: str = '') -> Any:
    hints = _hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        if key not in names:
            raise _unknown_key(prefix + str(key), _all_keys(TrainConfig))
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    return cls(**kwargs)


def config_to_dict(cfg: Any) -> dict:
    """Plain nested dict (YAML-safe) of a config tree."""
    return dataclasses.asdict(cfg)


# ---------------------------------------------------------------------------------------------------------
# overrides


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split('.')
    valid = _all_keys(TrainConfig)
    node = tree
    cls: type | None = TrainConfig
    for i, part in enumerate(parts):
        path = '.'.join(parts[: i + 1])
        field_names = {f.name for f in dataclasses.fields(cls)} if cls is not None else set()
        if cls is None or part not in field_names:
            raise _unknown_key(path, valid)
        if i == len(parts) - 1:
            node[part] = value
            return
        sub = _dataclass_in(_hints(cls)[part])
        if sub is None:
            if _is_free_mapping(_hints(cls)[part]):  # model_kwargs.x=1: a free-form mapping, any key
                for sub_part in parts[i:-1]:
                    if not isinstance(node.get(sub_part), dict):
                        node[sub_part] = {}
                    node = node[sub_part]
                node[parts[-1]] = value
                return
            raise _unknown_key(path + '.' + '.'.join(parts[i + 1 :]), valid)
        if not isinstance(node.get(part), dict):
            node[part] = {}  # e.g. 'adl.gamma=0.8' on a recipe with adl: null
        node = node[part]
        cls = sub


def _is_free_mapping(tp: Any) -> bool:
    return typing.get_origin(tp) is dict or any(typing.get_origin(a) is dict for a in typing.get_args(tp))


def parse_override(text: str) -> tuple[str, Any]:
    """``'optim.lr=0.1'`` -> ``('optim.lr', 0.1)``; the value is read as YAML (``[a, b]``, ``null``, ``true``)."""
    key, sep, raw = text.partition('=')
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f'override {text!r} is not of the form key=value')
    try:
        value = yaml.safe_load(raw) if raw.strip() else ''
    except yaml.YAMLError as err:
        raise ConfigError(f'override {text!r}: value is not valid YAML ({err.__class__.__name__})') from None
    return key, value


# ---------------------------------------------------------------------------------------------------------
# public entry points


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f'recipe file not found: {path}')
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        mark = getattr(err, 'problem_mark', None)
        where = f' line {mark.line + 1}' if mark is not None else ''
        raise ConfigError(f'recipe {path}{where} is not valid YAML') from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f'recipe {path} must be a mapping of keys, got {type(data).__name__}')
    return data


def load_config(
    path_or_dict: str | os.PathLike | Mapping | TrainConfig, overrides: Iterable[str] = ()
) -> TrainConfig:
    """Read a recipe (YAML path, dict or TrainConfig) and apply ``key=value`` overrides (dotted keys).

    Raises ``ConfigError`` (a ``ValueError``) with one line for an unknown key (naming the closest valid one),
    a value of the wrong type, or a value outside its allowed set.
    """
    if isinstance(path_or_dict, TrainConfig):
        data = config_to_dict(path_or_dict)
    elif isinstance(path_or_dict, Mapping):
        data = dict(path_or_dict)
    else:
        data = _read_yaml(Path(path_or_dict))
    data = yaml.safe_load(yaml.safe_dump(data))  # deep copy with YAML types only
    if isinstance(overrides, str):
        overrides = [overrides]
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    cfg = _from_dict(TrainConfig, data)
    check_values(cfg)
    return cfg


def _choice(key: str, value: str, allowed: Iterable[str]) -> None:
    allowed = tuple(allowed)
    if value not in allowed:
        close = difflib.get_close_matches(str(value), allowed, n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise ConfigError(f'config key {key!r} must be one of {", ".join(allowed)}; got {value!r}{hint}')


def check_finite(cfg: Any, prefix: str = '') -> None:
    """Every float of the config tree is finite: a ``TrainConfig`` built in code skips ``load_config``'s
    type checks, and a NaN learning rate passes every range check (``nan <= 0`` is false)."""
    for f in dataclasses.fields(cfg):
        value, key = getattr(cfg, f.name), prefix + f.name
        if dataclasses.is_dataclass(value):
            check_finite(value, key + '.')
            continue
        items = value if isinstance(value, (list, tuple)) else [value]
        for v in items:
            if isinstance(v, float) and not math.isfinite(v):
                raise ConfigError(f'config key {key!r} expects a finite number, got {value!r}')


def check_values(cfg: TrainConfig) -> None:
    """Checks that need no file system, model registry or data."""
    if not cfg.model:
        raise ConfigError("config key 'model' is required (a timm model name, e.g. resnet50_se_adl)")
    _choice('data.name', cfg.data.name, DATASETS)
    _choice('aug.crop', cfg.aug.crop, CROP_MODES)
    _choice('optim.name', cfg.optim.name, OPTIMIZERS)
    _choice('sched.name', cfg.sched.name, SCHEDULES)
    _choice('amp', cfg.amp, AMP_MODES)
    _choice('select_metric', cfg.select_metric, SELECT_METRICS)
    from ..evaluation import cam_methods

    _choice('cam_method', cfg.cam_method, cam_methods())
    if cfg.data.val_split is not None and 'test' in cfg.data.val_split.lower():
        raise ConfigError(
            f'data.val_split is {cfg.data.val_split!r}: model selection must use val or train-fullsup, never test'
        )
    for key, value, low in (
        ('epochs', cfg.epochs, 1),
        ('batch_size', cfg.batch_size, 1),
        ('img_size', cfg.img_size, 8),
        ('eval_every', cfg.eval_every, 1),
        ('ckpt_every_steps', cfg.ckpt_every_steps, 0),
        ('num_workers', cfg.num_workers, 0),
    ):
        if value < low:
            raise ConfigError(f'config key {key!r} must be >= {low}, got {value}')
    if cfg.num_classes is not None and cfg.num_classes < 1:
        raise ConfigError(f"config key 'num_classes' must be >= 1 or null, got {cfg.num_classes}")
    if cfg.optim.lr <= 0:
        raise ConfigError(f"config key 'optim.lr' must be > 0, got {cfg.optim.lr}")
    for key in ('momentum', 'weight_decay', 'lr_head_mult', 'lr_backbone_mult'):
        if getattr(cfg.optim, key) < 0:
            raise ConfigError(f'config key {"optim." + key!r} must be >= 0, got {getattr(cfg.optim, key)}')
    if not 0.0 < cfg.sched.pct_start < 1.0:
        raise ConfigError(f"config key 'sched.pct_start' must be in (0, 1), got {cfg.sched.pct_start}")
    _check_momentum_cycle(cfg.sched)
    _check_cutmix(cfg)
    if sorted(cfg.sched.milestones) != list(cfg.sched.milestones):
        raise ConfigError(f"config key 'sched.milestones' must be increasing, got {cfg.sched.milestones}")
    if cfg.adl is not None:
        if not 0.0 <= cfg.adl.drop_rate <= 1.0:
            raise ConfigError(f"config key 'adl.drop_rate' must be in [0, 1], got {cfg.adl.drop_rate}")
        if not 0.0 < cfg.adl.gamma <= 1.0:
            raise ConfigError(f"config key 'adl.gamma' must be in (0, 1], got {cfg.adl.gamma}")
        if not (cfg.adl.use_drop or cfg.adl.use_importance):
            raise ConfigError(
                "config keys 'adl.use_drop' and 'adl.use_importance' are both false; at least one must be true"
            )
    if cfg.aug.hide_patch < 0:
        raise ConfigError(f"config key 'aug.hide_patch' must be >= 0 (0 = off), got {cfg.aug.hide_patch}")
    if not 0.0 <= cfg.aug.hide_prob <= 1.0:
        raise ConfigError(f"config key 'aug.hide_prob' must be in [0, 1], got {cfg.aug.hide_prob}")
    for key in ('mean', 'std'):
        value = getattr(cfg.data, key)
        if value is not None and len(value) != 3:
            raise ConfigError(f'config key {"data." + key!r} needs 3 values (RGB), got {value}')
    if cfg.data.std is not None and any(v <= 0 for v in cfg.data.std):
        raise ConfigError(
            f"config key 'data.std' must hold values > 0 (it divides the input), got {cfg.data.std}"
        )
    if cfg.amp == 'fp16' and cfg.device == 'cpu':
        raise ConfigError('amp=fp16 needs a GPU; use amp=bf16 or amp=none with device=cpu')


def _check_momentum_cycle(sched: SchedConfig) -> None:
    if sched.cycle_momentum and sched.name != 'onecycle':
        raise ConfigError(f"config key 'sched.cycle_momentum' needs sched.name onecycle, got {sched.name!r}")
    if not 0.0 <= sched.base_momentum <= sched.max_momentum < 1.0:
        raise ConfigError(
            "config keys 'sched.base_momentum' and 'sched.max_momentum' must satisfy 0 <= base <= max < 1, "
            f'got base {sched.base_momentum} and max {sched.max_momentum}'
        )


def _check_cutmix(cfg: TrainConfig) -> None:
    if cfg.aug.cutmix_alpha < 0:
        raise ConfigError(f"config key 'aug.cutmix_alpha' must be >= 0 (0 = off), got {cfg.aug.cutmix_alpha}")
    if not 0.0 <= cfg.aug.cutmix_prob <= 1.0:
        raise ConfigError(f"config key 'aug.cutmix_prob' must be in [0, 1], got {cfg.aug.cutmix_prob}")
    if cfg.aug.cutmix_alpha > 0 and cfg.batch_size % 2:
        raise ConfigError(
            f'aug.cutmix_alpha needs an even batch_size (CutMix pairs images), got {cfg.batch_size}'
        )


def save_config(cfg: TrainConfig, path: str | os.PathLike) -> None:
    """Write the resolved config as YAML, atomically."""
    from .checkpoint import atomic_write_bytes

    text = yaml.safe_dump(config_to_dict(cfg), sort_keys=False)
    atomic_write_bytes(Path(path), text.encode())
