"""The trainer's images/s against a bare PyTorch loop: same model, data, batch, optimiser, in one process.

The question is whether ``run_training`` adds a hidden cost per step (LR schedule, logging, progress bar,
resume bookkeeping, the sampler) over the loop anyone would write by hand. Both read the same data set
object (same files, same transform, same workers), build the same timm model and SGD, and are timed over
the same number of steps, excluding a first warm-up epoch and the trainer's validation and checkpoints
(its ``img_per_s`` log field). Rounds alternate trainer / bare loop (ABBA), medians are printed, so load
from other processes hits both alike. ``--clock cpu`` (the default on CPU) times both with the process's CPU
time instead of the wall clock (the trainer's clock is swapped for the run): on a shared machine wall time
mostly measures the other users. Target: trainer / bare >= 0.9.

    python benchmarks/train_speed.py                                  # CPU: resnet18, 96 px, batch 32
    python benchmarks/train_speed.py --device cuda --model resnet50 --img-size 224 --batch-size 128 \\
        --images 2048 --amp bf16 --channels-last
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

import timm_adl.train.engine as engine
from timm_adl.data import wsol_collate
from timm_adl.train import load_config, run_training
from timm_adl.train.distributed import DistInfo
from timm_adl.train.engine import build_datasets, build_model, train_mean_std

CLOCKS = {'wall': time.perf_counter, 'cpu': time.process_time}


def write_random_set(root: Path, n: int, size: int, classes: int = 10) -> None:
    """``n`` random images in wsolevaluation's layout (train split only: the benchmark trains)."""
    rng = np.random.default_rng(0)
    ids = []
    for i in range(n):
        image_id = f'train/c{i % classes}/{i}.jpg'
        (root / image_id).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(root / image_id)
        ids.append(image_id)
    meta = root / 'metadata' / 'train'
    meta.mkdir(parents=True)
    (meta / 'image_ids.txt').write_text(''.join(f'{i}\n' for i in ids))
    (meta / 'class_labels.txt').write_text(''.join(f'{i},{k % classes}\n' for k, i in enumerate(ids)))
    (meta / 'image_sizes.txt').write_text('')
    (meta / 'localization.txt').write_text('')


def recipe(args: argparse.Namespace, root: Path, out: Path) -> dict:
    return dict(
        model=args.model,
        pretrained=False,
        data=dict(name='wsol-metadata', root=str(root), val_split=None, mean=[0.5] * 3, std=[0.25] * 3),
        img_size=args.img_size,
        aug=dict(crop='none', hflip=False),
        optim=dict(name='sgd', lr=0.01, momentum=0.9, nesterov=True, weight_decay=1e-4),
        sched=dict(name='cosine'),
        epochs=args.epochs,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
        amp=args.amp,
        channels_last=args.channels_last,
        output_dir=str(out),
        eval_every=args.epochs + 1,
    )


def trainer_images_per_s(cfg_dict: dict, clock: str) -> float:
    real_time = engine.time
    engine.time = types.SimpleNamespace(perf_counter=CLOCKS[clock])  # the trainer times its epochs with it
    try:
        run_training(load_config(cfg_dict), progress=False)
    finally:
        engine.time = real_time
    rows = [
        json.loads(line) for line in (Path(cfg_dict['output_dir']) / 'log.jsonl').read_text().splitlines()
    ]
    return statistics.median(r['img_per_s'] for r in rows[1:])  # epoch 1 is the warm-up


def bare_images_per_s(cfg_dict: dict, clock: str) -> float:
    """The hand-written loop: same model and data set objects as the trainer builds, plain SGD."""
    cfg = load_config(cfg_dict)
    device = torch.device(
        cfg.device if cfg.device != 'auto' else ('cuda' if torch.cuda.is_available() else 'cpu')
    )
    torch.manual_seed(cfg.seed)
    model, _ = build_model(cfg, None, DistInfo())
    train_ds, _ = build_datasets(cfg, *train_mean_std(cfg, model))
    model.reset_classifier(train_ds.num_classes)
    model.to(device).train()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    o = cfg.optim
    opt = torch.optim.SGD(
        model.parameters(), lr=o.lr, momentum=o.momentum, nesterov=o.nesterov, weight_decay=o.weight_decay
    )
    loader = DataLoader(
        train_ds,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=cfg.num_workers,
        collate_fn=wsol_collate,
    )
    amp = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(cfg.amp)
    speeds = []
    for _ in range(cfg.epochs):
        seen, t0 = 0, CLOCKS[clock]()
        for images, labels, *_ in loader:
            images, labels = images.to(device), labels.to(device)
            if cfg.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp, enabled=amp is not None):
                loss = F.cross_entropy(model(images).float(), labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()  # the trainer reads the loss every step too (its finiteness check)
            seen += images.shape[0]
        if device.type == 'cuda':
            torch.cuda.synchronize()
        speeds.append(seen / (CLOCKS[clock]() - t0))
    return statistics.median(speeds[1:])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--model', default='resnet18')
    p.add_argument('--img-size', type=int, default=96)
    p.add_argument('--batch-size', type=int, default=32)
    p.add_argument('--images', type=int, default=256, help='training images (default 256: 8 steps per epoch)')
    p.add_argument('--epochs', type=int, default=3, help='per measurement; the first is a warm-up')
    p.add_argument('--rounds', type=int, default=2, help='ABBA rounds (trainer and bare loop each)')
    p.add_argument('--workers', type=int, default=0)
    p.add_argument('--device', default='cpu')
    p.add_argument('--amp', default='none', choices=('none', 'bf16', 'fp16'))
    p.add_argument('--channels-last', action='store_true')
    p.add_argument('--threads', type=int, default=0, help='torch CPU threads (0: torch default)')
    p.add_argument('--clock', choices=tuple(CLOCKS), help='cpu (process time) or wall; default: cpu on CPU')
    args = p.parse_args()
    clock = args.clock or ('wall' if args.device.startswith('cuda') else 'cpu')
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / 'data'
        write_random_set(root, args.images, args.img_size)
        trainer, bare = [], []
        for r in range(args.rounds):
            order = ('trainer', 'bare') if r % 2 == 0 else ('bare', 'trainer')
            for who in order:
                cfg = recipe(args, root, Path(tmp) / f'run{r}-{who}')
                (trainer if who == 'trainer' else bare).append(
                    trainer_images_per_s(cfg, clock) if who == 'trainer' else bare_images_per_s(cfg, clock)
                )
    t, b = statistics.median(trainer), statistics.median(bare)
    print(
        f'{args.model} {args.img_size}px batch {args.batch_size} on {args.device} (amp {args.amp}, '
        f'channels_last {args.channels_last}, {torch.get_num_threads()} threads, {clock} clock): trainer {t:.1f} img/s, '
        f'bare loop {b:.1f} img/s, ratio {t / b:.3f} (target >= 0.9); rounds: trainer '
        f'{[round(v, 1) for v in trainer]}, bare {[round(v, 1) for v in bare]}'
    )
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
