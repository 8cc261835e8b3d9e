"""One paper row in one call: train the CAM and ADL recipes of a backbone, evaluate both, compare with the papers.

:func:`run_reproduction` trains ``recipes/<dataset>/<backbone>_cam.yaml`` and ``..._adl.yaml`` with the
project's trainer, evaluates each selected checkpoint on ``test`` with both threshold protocols (MaxBoxAcc and
MaxBoxAccV2 at the CAM threshold picked on the validation split, and at the test split's own best, the oracle
that wsolevaluation reports; Top-1 Loc and GT-known Loc at the recipe's fixed threshold, as the ADL paper),
and writes, in its output folder:

* ``comparison.md`` / ``comparison.json``: our two rows beside the ADL paper's Table 3 and wsolevaluation's
  table for that backbone and data set (:mod:`timm_adl.published`, each figure with its source);
* ``figure3.png``: the paper's Figure 3, CAM and ADL side by side on the first test images;
* ``runs/{cam,adl}/``: the two training runs; ``arms/{cam,adl}.json``: each finished arm's results.

An output folder holds one reproduction: it is locked while one runs, and a second call on a used folder
stops unless ``resume`` is set, which reuses finished arms and resumes an interrupted training through the
trainer's own resume. Optionally both checkpoints are written as Hub folders (``hub_dry_run``) or pushed.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import atomic_write_bytes
from .published import PublishedResult, published_results

__all__ = [
    'BACKBONES',
    'DATASETS',
    'ArmResult',
    'BoxScores',
    'ReproduceConfig',
    'ReproduceError',
    'ReproduceResult',
    'format_comparison',
    'run_reproduction',
]

DATASETS = ('cub', 'imagenet')
BACKBONES = ('vgg16_gap', 'resnet50_se', 'mobilenetv1', 'inception_v3')
METHODS = ('cam', 'adl')
TEST_SPLIT = 'test'
# Hub tag of a data set (the paper checkpoints' naming: resnet50_se_adl.cub, resnet50_se_adl.in1k)
HUB_TAGS = {'cub': 'cub', 'imagenet': 'in1k'}
# Where `timm-adl data <dataset> DIR` puts the set, and the image root under it.
_LAYOUT = {'cub': ('CUB_200_2011', 'images'), 'imagenet': ('ILSVRC', '')}
MANIFEST = 'reproduce.json'


class ReproduceError(ValueError):
    """A reproduction that cannot run: one line naming the bad value."""


@dataclass(frozen=True)
class ReproduceConfig:
    """What to reproduce and where. ``overrides`` are recipe ``key=value`` items for both arms (e.g. a small
    ``model=`` for a smoke run); ``cam_overrides`` / ``adl_overrides`` for one arm only. The published
    figures compared against always come from ``dataset`` and ``backbone``."""

    dataset: str  # 'cub' | 'imagenet'
    backbone: str  # 'vgg16_gap' | 'resnet50_se' | 'mobilenetv1' | 'inception_v3'
    data_dir: str | None = None  # the folder `timm-adl data` prepared (or give data.root/metadata_root)
    out: str | None = None  # default runs/reproduce/<dataset>/<backbone> (every command writes under runs/)
    overrides: tuple[str, ...] = ()
    cam_overrides: tuple[str, ...] = ()
    adl_overrides: tuple[str, ...] = ()
    push_org: str | None = None  # publish both checkpoints under this Hub organisation
    hub_dry_run: str | None = None  # with push_org: write the two Hub folders here, upload nothing
    resume: bool = False
    device: str | None = None  # None = the recipes' (auto)
    figure_images: int = 8
    progress: bool = True

    @property
    def output_dir(self) -> Path:
        return Path(self.out) if self.out else Path('runs') / 'reproduce' / self.dataset / self.backbone

    def recipe_name(self, method: str) -> str:
        return f'{self.dataset}/{self.backbone}_{method}'

    def identity(self) -> dict[str, Any]:
        """What a resumed reproduction must share with the one it continues."""
        return {
            'dataset': self.dataset,
            'backbone': self.backbone,
            'data_dir': self.data_dir,
            'overrides': list(self.overrides),
            'cam_overrides': list(self.cam_overrides),
            'adl_overrides': list(self.adl_overrides),
        }


@dataclass(frozen=True)
class BoxScores:
    """MaxBoxAcc (IoU 50, largest contour) and MaxBoxAccV2 at one threshold policy; ``threshold`` is the
    CAM threshold of MaxBoxAcc (percent metrics)."""

    max_box_acc: float
    max_box_acc_v2: float
    threshold: float


@dataclass(frozen=True)
class ArmResult:
    """One trained arm (CAM or ADL) evaluated on ``test``."""

    method: str
    recipe: str
    model: str
    run_dir: str
    weights: str
    cam_method: str
    cam_threshold: float  # the paper protocol's fixed threshold (Top-1 Loc, GT-known Loc)
    top1_clas: float
    gt_known_loc: float
    top1_loc: float
    oracle: BoxScores  # thresholds picked on test itself (wsolevaluation's MaxBoxAcc / V2)
    calibrated: BoxScores | None  # thresholds picked on the validation split (None without one)
    val_split: str | None
    num_test_images: int
    num_val_images: int | None
    train_seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArmResult:
        data = dict(data)
        data['oracle'] = BoxScores(**data['oracle'])
        data['calibrated'] = BoxScores(**data['calibrated']) if data.get('calibrated') else None
        return cls(**data)

    def card_metrics(self) -> dict[str, Any]:
        """The metrics a model card shows: the test split's, plus the val-calibrated box accuracies."""
        out: dict[str, Any] = {
            'top1_clas': self.top1_clas,
            'gt_known_loc': self.gt_known_loc,
            'top1_loc': self.top1_loc,
            'max_box_acc': self.oracle.max_box_acc,
            'max_box_acc_v2': self.oracle.max_box_acc_v2,
            'cam_threshold': self.cam_threshold,
            'cam_method': self.cam_method,
        }
        if self.calibrated is not None:
            out['max_box_acc_val_threshold'] = self.calibrated.max_box_acc
            out['max_box_acc_v2_val_threshold'] = self.calibrated.max_box_acc_v2
            out['val_threshold'] = self.calibrated.threshold
        return out


@dataclass(frozen=True)
class ReproduceResult:
    """Everything one reproduction wrote."""

    dataset: str
    dataset_name: str  # display name, e.g. 'CUB-200-2011'
    backbone: str
    arms: tuple[ArmResult, ...]
    published: tuple[PublishedResult, ...]
    output_dir: Path
    markdown: Path
    json: Path
    figure: Path
    hub_folders: tuple[Path, ...] = ()
    pushed: tuple[str, ...] = ()  # commit URLs
    reused: tuple[str, ...] = field(default_factory=tuple)  # arms taken from an earlier, finished run

    def arm(self, method: str) -> ArmResult:
        return next(a for a in self.arms if a.method == method)


# ---------------------------------------------------------------------------------------------------------
# checks and the output folder


def _choice(what: str, value: str, valid: Sequence[str]) -> None:
    if value not in valid:
        close = difflib.get_close_matches(value, valid, n=2, cutoff=0.5)
        hint = f' (closest: {", ".join(close)})' if close else ''
        raise ReproduceError(f'{what} {value!r} is not one of {", ".join(valid)}{hint}')


def check_config(config: ReproduceConfig) -> None:
    _choice('dataset', config.dataset, DATASETS)
    _choice('backbone', config.backbone, BACKBONES)
    if config.hub_dry_run and not config.push_org:
        raise ReproduceError('a Hub dry run needs the organisation the folders are meant for (--push ORG)')
    if config.figure_images < 1:
        raise ReproduceError(f'figure_images must be >= 1, got {config.figure_images}')
    for item in (*config.overrides, *config.cam_overrides, *config.adl_overrides):
        if item.partition('=')[0].strip() == 'output_dir':
            raise ReproduceError(
                f'{item!r}: the arms train in <out>/runs/{{cam,adl}}; choose the folder with --out'
            )


def data_overrides(dataset: str, data_dir: str | os.PathLike) -> list[str]:
    """``data.root`` / ``data.metadata_root`` of a folder prepared by ``timm-adl data`` (its DIR or the data
    set folder in it); ``data.val_split=null`` when it has no validation split (ImageNet without V2)."""
    folder, images = _LAYOUT[dataset]
    d = Path(data_dir)
    for base in (d / folder, d):
        meta = base / 'metadata'
        if (meta / 'train' / 'image_ids.txt').is_file():
            root = base / images if images else base
            out = [f'data.root={root}', f'data.metadata_root={meta}']
            if not (meta / 'val' / 'image_ids.txt').is_file():
                out.append('data.val_split=null')
            return out
    raise ReproduceError(
        f'data_dir {d}: no prepared {dataset} data (no metadata/train/image_ids.txt in {d / folder} or {d}); '
        f'prepare it with `timm-adl data {dataset} {d}`'
    )


def _claim_output(config: ReproduceConfig):
    """Lock the output folder for this reproduction; refuse a used folder unless resuming the same one."""
    from .train.lock import LOCK_NAME, acquire_run_lock

    out = config.output_dir
    lock = acquire_run_lock(out, warn=print)
    try:
        manifest = out / MANIFEST
        used = [p.name for p in out.iterdir() if p.name != LOCK_NAME]
        if used and not config.resume:
            raise ReproduceError(
                f'output folder {out} already holds a reproduction ({", ".join(sorted(used)[:3])}): pass '
                '--resume to continue it, or choose another --out'
            )
        if manifest.is_file():
            saved = json.loads(manifest.read_text(encoding='utf-8'))
            for key, value in config.identity().items():
                if saved.get(key) != value:
                    raise ReproduceError(
                        f'--resume: {out} holds a reproduction with {key}={saved.get(key)!r}, not {value!r}; '
                        'choose another --out'
                    )
        elif used:
            raise ReproduceError(f'{out} is not a reproduction folder (no {MANIFEST}); choose another --out')
        atomic_write_bytes(manifest, (json.dumps(config.identity(), indent=1) + '\n').encode())
    except BaseException:
        lock.release()
        raise
    return lock


# ---------------------------------------------------------------------------------------------------------
# one arm


def arm_config(config: ReproduceConfig, method: str, data: Sequence[str]):
    """The arm's ``TrainConfig``: its packaged recipe, the data, the user's overrides, its own run folder."""
    from .train import load_config
    from .train.recipes import resolve_recipe

    per_arm = config.cam_overrides if method == 'cam' else config.adl_overrides
    items = [*data, *config.overrides, *per_arm]
    if config.device:
        items.append(f'device={config.device}')
    items.append(f'output_dir={config.output_dir / "runs" / method}')
    return load_config(resolve_recipe(config.recipe_name(method)), items)


def load_trained(cfg: Any, weights: str | os.PathLike, num_classes: int):
    """The arm's network as its run built it (no starting weights: the checkpoint replaces them), in eval."""
    from .train.checkpoint import load_weights
    from .train.distributed import DistInfo
    from .train.engine import build_model

    build_cfg = dataclasses.replace(cfg, pretrained=False, pretrained_file=None, initial_checkpoint=None)
    model, _ = build_model(build_cfg, cfg.num_classes or num_classes, DistInfo())
    model.load_state_dict(load_weights(weights))
    return model.eval()


def _split(cfg: Any, split: str, mean, std):
    from .data import create_wsol_dataset

    try:
        ds = create_wsol_dataset(
            cfg.data.name,
            cfg.data.root,
            split,
            is_training=False,
            img_size=cfg.img_size,
            mean=mean,
            std=std,
            metadata_root=cfg.data.metadata_root or None,
        )
    except (OSError, ValueError) as err:  # missing or malformed split files: the data module's one line
        raise ReproduceError(f'data, split {split!r}: {str(err).splitlines()[0]}') from None
    if len(ds) == 0 or not ds.has_boxes:
        raise ReproduceError(f'split {split!r} of {cfg.data.root} has no images with boxes to evaluate')
    return ds


def evaluate_arm(
    cfg: Any, method: str, recipe: str, weights: str, train_seconds: float, device, progress: bool = True
) -> ArmResult:
    """Test metrics of one trained arm, the box accuracies at the oracle and the val-calibrated thresholds."""
    from .data import create_wsol_loader
    from .evaluation import evaluate
    from .metrics import calibrated_accuracy
    from .train.engine import train_mean_std

    probe = _split(cfg, TEST_SPLIT, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    model = load_trained(cfg, weights, probe.num_classes).to(device)
    mean, std = train_mean_std(cfg, model)

    def run(split: str):
        ds = _split(cfg, split, mean, std)
        loader = create_wsol_loader(ds, 32, is_training=False, num_workers=min(cfg.num_workers, 4))
        settings = dict(cam_method=cfg.cam_method, cam_threshold=cfg.cam_threshold, device=device)
        label = f'{method} {split}' if progress else None
        return evaluate(model, loader, progress=label, **settings), len(ds)

    test, n_test = run(TEST_SPLIT)
    val, n_val, calibrated = None, None, None
    if cfg.data.val_split:
        val, n_val = run(cfg.data.val_split)
        cal = calibrated_accuracy(val, test)
        calibrated = BoxScores(cal['max_box_acc'], cal['max_box_acc_v2'], float(cal['best_threshold']))
    m = test.metrics()
    return ArmResult(
        method=method,
        recipe=recipe,
        model=cfg.model,
        run_dir=str(cfg.output_dir),
        weights=str(weights),
        cam_method=test.cam_method or cfg.cam_method,
        cam_threshold=cfg.cam_threshold,
        top1_clas=m['top1_clas'],
        gt_known_loc=m['gt_known_loc'],
        top1_loc=m['top1_loc'],
        oracle=BoxScores(m['max_box_acc'], m['max_box_acc_v2'], float(test.best_threshold)),
        calibrated=calibrated,
        val_split=cfg.data.val_split,
        num_test_images=n_test,
        num_val_images=n_val,
        train_seconds=float(train_seconds),
    )


def _run_arm(
    config: ReproduceConfig, method: str, data: Sequence[str], device: Any
) -> tuple[ArmResult, bool]:
    """Train (or resume) and evaluate one arm; a finished arm of a resumed reproduction is reused."""
    from .train import run_training

    record = config.output_dir / 'arms' / f'{method}.json'
    if config.resume and record.is_file():
        arm = ArmResult.from_dict(json.loads(record.read_text(encoding='utf-8')))
        if Path(arm.weights).is_file():
            print(f'== {method.upper()}: finished earlier, reused ({record})', flush=True)
            return arm, True
    cfg = arm_config(config, method, data)
    print(f'== {method.upper()}: {config.recipe_name(method)} ({cfg.model}) -> {cfg.output_dir}', flush=True)
    result = run_training(cfg, resume=config.resume, progress=config.progress)
    weights = result['checkpoints']['best']  # selected on the validation split, never on test
    arm = evaluate_arm(
        cfg, method, config.recipe_name(method), weights, result['train_seconds'], device, config.progress
    )
    atomic_write_bytes(record, (json.dumps(arm.to_dict(), indent=1) + '\n').encode())
    return arm, False


# ---------------------------------------------------------------------------------------------------------
# the comparison


_COLUMNS = (
    ('Top-1 Clas', 'top1_clas'),
    ('GT-known Loc', 'gt_known_loc'),
    ('Top-1 Loc', 'top1_loc'),
    ('MaxBoxAcc (val τ)', 'cal_max_box_acc'),
    ('MaxBoxAccV2 (val τ)', 'cal_max_box_acc_v2'),
    ('MaxBoxAcc (oracle τ)', 'max_box_acc'),
    ('MaxBoxAccV2 (oracle τ)', 'max_box_acc_v2'),
)


def _our_cells(arm: ArmResult) -> dict[str, float | None]:
    cal = arm.calibrated
    return {
        'top1_clas': arm.top1_clas,
        'gt_known_loc': arm.gt_known_loc,
        'top1_loc': arm.top1_loc,
        'cal_max_box_acc': cal.max_box_acc if cal else None,
        'cal_max_box_acc_v2': cal.max_box_acc_v2 if cal else None,
        'max_box_acc': arm.oracle.max_box_acc,
        'max_box_acc_v2': arm.oracle.max_box_acc_v2,
    }


def _cell(value: float | None) -> str:
    return '–' if value is None else f'{value:.2f}'


def format_comparison(
    dataset_name: str, backbone: str, arms: Sequence[ArmResult], published: Sequence[PublishedResult]
) -> str:
    """``comparison.md``: our rows, the published rows, what each column means, and the sources."""
    head = '| Row | Method | ' + ' | '.join(c for c, _ in _COLUMNS) + ' |'
    lines = [
        f'# {backbone} on {dataset_name}: CAM and ADL, this run beside the published figures',
        '',
        head,
        '|' + '---|' * (len(_COLUMNS) + 2),
    ]
    for arm in arms:
        cells = _our_cells(arm)
        row = ' | '.join(_cell(cells[k]) for _, k in _COLUMNS)
        lines.append(f'| timm-adl, this run (`{arm.model}`) | {arm.method.upper()} | {row} |')
    for table in dict.fromkeys(p.table for p in published):
        for method in METHODS:
            found = {p.metric: p for p in published if p.table == table and p.method == method}
            if not found:
                continue
            name = next(iter(found.values())).source_backbone
            row = ' | '.join(_cell(found[k].value if k in found else None) for _, k in _COLUMNS)
            lines.append(f'| {table} ({name}) | {method.upper()} | {row} |')
    arm = arms[0]
    lines += [
        '',
        f'Test split: {arm.num_test_images} images; CAM maps by `{arm.cam_method}`. Top-1 Loc and GT-known '
        f"Loc at the fixed CAM threshold {arm.cam_threshold} (the ADL paper's protocol). "
        + (
            f'"val τ": the CAM threshold that is best on the `{arm.val_split}` split ({arm.num_val_images} '
            'images), applied to test'
            if arm.calibrated is not None
            else '"val τ": not available (no validation split)'
        )
        + '. "oracle τ": the best threshold on test itself, as wsolevaluation reports MaxBoxAccV2. '
        'Each arm is the checkpoint its run selected on the validation split.',
        '',
        '![Figure 3: CAM and ADL on the first test images (ground truth red, estimate green)](figure3.png)',
        '',
        '## Sources',
        '',
    ]
    for source in dict.fromkeys(p.source for p in published):
        lines.append(f'- {source}')
    notes = sorted({f'{p.table} ({p.source_backbone}): {p.note}' for p in published if p.note})
    lines += [f'- Note: {n}' for n in notes]
    tables = {p.table for p in published}
    if 'wsolevaluation' not in tables:
        lines.append(f'- wsolevaluation has no {backbone} row.')
    lines.append('')
    return '\n'.join(lines)


def _comparison_json(
    config: ReproduceConfig,
    dataset_name: str,
    arms: Sequence[ArmResult],
    published: Sequence[PublishedResult],
) -> dict[str, Any]:
    return {
        'dataset': config.dataset,
        'dataset_name': dataset_name,
        'backbone': config.backbone,
        'split': TEST_SPLIT,
        'arms': [a.to_dict() for a in arms],
        'published': [dataclasses.asdict(p) for p in published],
    }


# ---------------------------------------------------------------------------------------------------------
# figure and Hub folders


def _figure_threshold(arm: ArmResult) -> float:
    return arm.calibrated.threshold if arm.calibrated is not None else arm.oracle.threshold


def _draw_figures(
    config: ReproduceConfig,
    arms: Sequence[ArmResult],
    cfgs: dict[str, Any],
    models: dict[str, Any],
    device: Any,
) -> tuple[Path, dict[str, Path]]:
    """``figure3.png`` (both arms) and one picture per arm for its model card."""
    from .hub.figure import cam_examples, draw_figure3, load_split_head
    from .train.engine import train_mean_std

    out = config.output_dir
    examples = []
    for arm in arms:
        cfg, model = cfgs[arm.method], models[arm.method]
        mean, std = train_mean_std(cfg, model)
        batch = load_split_head(cfg.data, TEST_SPLIT, cfg.img_size, mean, std, config.figure_images)
        examples.append(
            cam_examples(model, batch, mean=mean, std=std, cam_method=cfg.cam_method, device=device)
        )
    thresholds = [_figure_threshold(a) for a in arms]
    titles = [f'{a.method.upper()} (threshold {t:.2f})' for a, t in zip(arms, thresholds, strict=True)]
    figure = draw_figure3(out / 'figure3.png', examples, thresholds, titles)
    per_arm = {
        a.method: draw_figure3(out / 'arms' / f'{a.method}_figure3.png', [e], [t])
        for a, e, t in zip(arms, examples, thresholds, strict=True)
    }
    return figure, per_arm


def hub_name(config: ReproduceConfig, cfgs: dict[str, Any], method: str) -> str:
    """``<architecture>.<tag>`` as the paper checkpoints are named (``resnet50_se_adl.cub``); with a model
    override shared by both arms, the method keeps the two names apart."""
    models = {cfgs[m].model for m in METHODS}
    arch = cfgs[method].model if len(models) == len(METHODS) else f'{cfgs[method].model}-{method}'
    return f'{arch}.{HUB_TAGS[config.dataset]}'


def _publish(
    config: ReproduceConfig,
    arms: Sequence[ArmResult],
    cfgs: dict[str, Any],
    models: dict[str, Any],
    pictures: dict[str, Path],
    dataset_name: str,
) -> tuple[tuple[Path, ...], tuple[str, ...]]:
    """Both arms' Hub folders (dry run) or commits, each card with its test metrics and its own picture."""
    from .hub import push_to_hub, save_pretrained
    from .train import config_to_dict
    from .train.checkpoint import read_data_config

    folders, pushed = [], []
    for arm in arms:
        recorded = read_data_config(arm.weights) or {}
        kwargs = dict(
            dataset=dataset_name,
            split=TEST_SPLIT,
            heatmaps=pictures[arm.method],
            data_config={k: recorded[k] for k in ('input_size', 'mean', 'std') if k in recorded} or None,
        )
        model, recipe = models[arm.method].cpu(), config_to_dict(cfgs[arm.method])
        repo_id = f'{config.push_org}/{hub_name(config, cfgs, arm.method)}'
        if config.hub_dry_run:
            folder = Path(config.hub_dry_run) / repo_id.split('/')[-1]
            save_pretrained(
                model, folder, arm.card_metrics(), recipe, repo_id=repo_id, overwrite=config.resume, **kwargs
            )
            print(f'wrote {folder} (Hub dry run, nothing uploaded)', flush=True)
            folders.append(folder)
        else:
            info = push_to_hub(model, repo_id, arm.card_metrics(), recipe, **kwargs)
            print(f'pushed {arm.method.upper()} to {info.commit_url}', flush=True)
            pushed.append(str(info.commit_url))
    return tuple(folders), tuple(pushed)


def _check_hub_targets(config: ReproduceConfig, cfgs: dict[str, Any]) -> None:
    """Before any training: the two repo ids are valid and the dry-run folders are free (or ours, resuming)."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if not config.push_org:
        return
    for method in METHODS:
        repo_id = f'{config.push_org}/{hub_name(config, cfgs, method)}'
        try:
            validate_repo_id(repo_id)
        except HFValidationError as err:
            raise ReproduceError(
                f'--push {config.push_org!r}: {repo_id!r} is not a valid Hub repo id ({err})'
            ) from None
        folder = Path(config.hub_dry_run or '') / repo_id.split('/')[-1]
        if config.hub_dry_run and not config.resume and folder.is_dir() and any(folder.iterdir()):
            raise ReproduceError(
                f'Hub dry-run folder {folder} exists and is not empty; choose another --dry-run DIR'
            )


# ---------------------------------------------------------------------------------------------------------
# the whole row


def _dataset_name(config: ReproduceConfig, cfg: Any) -> str:
    from .hub.datasets import dataset_info, infer_dataset

    info = infer_dataset(dataclasses.asdict(cfg.data)) or dataset_info(config.dataset)
    return info.name if info is not None else config.dataset


def run_reproduction(config: ReproduceConfig) -> ReproduceResult:
    """Train, evaluate, compare (and optionally publish) the CAM and ADL arms of one paper row."""
    from .train.preflight import resolve_device

    check_config(config)
    data = data_overrides(config.dataset, config.data_dir) if config.data_dir else []
    cfgs = {m: arm_config(config, m, data) for m in METHODS}  # every override checked before any work
    for cfg in cfgs.values():
        if not cfg.data.root:
            raise ReproduceError(
                'no data: give data_dir (--data-dir) or data.root=... data.metadata_root=...'
            )
    _check_hub_targets(config, cfgs)
    lock = _claim_output(config)
    try:
        device = resolve_device(config.device or cfgs['cam'].device)
        arms, reused = [], []
        for method in METHODS:
            arm, was_reused = _run_arm(config, method, data, device)
            arms.append(arm)
            if was_reused:
                reused.append(method)
        num_classes = {
            a.method: _split(cfgs[a.method], TEST_SPLIT, (0, 0, 0), (1, 1, 1)).num_classes for a in arms
        }
        models = {a.method: load_trained(cfgs[a.method], a.weights, num_classes[a.method]) for a in arms}
        models = {m: model.to(device) for m, model in models.items()}
        figure, pictures = _draw_figures(config, arms, cfgs, models, device)
        dataset_name = _dataset_name(config, cfgs['cam'])
        published = tuple(published_results(config.dataset, config.backbone))
        out = config.output_dir
        markdown = out / 'comparison.md'
        atomic_write_bytes(
            markdown, format_comparison(dataset_name, config.backbone, arms, published).encode()
        )
        record = _comparison_json(config, dataset_name, arms, published)
        json_path = out / 'comparison.json'
        atomic_write_bytes(json_path, (json.dumps(record, indent=1) + '\n').encode())
        folders, pushed = ((), ())
        if config.push_org:
            folders, pushed = _publish(config, arms, cfgs, models, pictures, dataset_name)
    finally:
        lock.release()
    return ReproduceResult(
        dataset=config.dataset,
        dataset_name=dataset_name,
        backbone=config.backbone,
        arms=tuple(arms),
        published=published,
        output_dir=out,
        markdown=markdown,
        json=json_path,
        figure=figure,
        hub_folders=folders,
        pushed=pushed,
        reused=tuple(reused),
    )
