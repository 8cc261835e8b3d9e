"""The first thing to run on a GPU (about 5 minutes on one): do the paper recipes' GPU paths work, how fast?

1. Each of the four paper backbones, CAM and ADL recipe (``cub/<backbone>_{cam,adl}``) with the recipe's own
   GPU settings (batch, amp, channels_last, compile, optimiser): a few dozen SGD steps at 224 px on random
   tensors already on the GPU (no data loading, no pretrained download: the GPU machine may be offline).
   Prints images/s and peak memory, CAM and ADL side by side.
2. One DistributedDataParallel step on the nccl backend under ``torchrun`` (one process per GPU; NCCL
   refuses two ranks on one GPU, so with one GPU this checks nccl + DDP at world size 1).
3. ``benchmarks/train_speed.py`` on the GPU: the trainer against a bare loop (target ratio >= 0.9).

    python benchmarks/gpu_check.py                     # all three
    python benchmarks/gpu_check.py --steps 10 --skip-speed
Without CUDA it stops at once with one line saying so.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

BACKBONES = ('vgg16_gap', 'resnet50_se', 'mobilenetv1', 'inception_v3')
HERE = Path(__file__).resolve().parent


def _step_fn(cfg, model, optimizer, amp_dtype):
    import torch
    import torch.nn.functional as F

    def step(images, labels):
        with torch.autocast('cuda', dtype=amp_dtype, enabled=amp_dtype is not None):
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss

    return step


def measure_recipe(name: str, steps: int, warmup: int, batch_size: int | None) -> dict:
    """images/s and peak GiB of one packaged recipe's training step, with the recipe's GPU settings."""
    import torch

    from timm_adl.train import load_config
    from timm_adl.train.distributed import DistInfo
    from timm_adl.train.engine import build_model
    from timm_adl.train.optim import build_optimizer, head_param_names
    from timm_adl.train.recipes import resolve_recipe

    cfg = load_config(resolve_recipe(name), ['pretrained=false', 'device=cuda'])
    batch = batch_size or cfg.batch_size
    torch.manual_seed(0)
    model, new_params = build_model(cfg, cfg.num_classes, DistInfo())
    head = head_param_names(model, cfg.optim.head or (), new_params)
    model.cuda().train()
    if cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer, _ = build_optimizer(model, cfg.optim, head)
    train_model = torch.compile(model) if cfg.compile else model
    amp_dtype = {'bf16': torch.bfloat16, 'fp16': torch.float16}.get(cfg.amp)
    step = _step_fn(cfg, train_model, optimizer, amp_dtype)
    images = torch.randn(batch, 3, cfg.img_size, cfg.img_size, device='cuda')
    if cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, cfg.num_classes or 1000, (batch,), device='cuda')
    for _ in range(warmup):
        step(images, labels)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(images, labels)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if not torch.isfinite(loss):
        raise FloatingPointError(f'{name}: loss is {loss.item()}')
    result = dict(
        img_s=batch * steps / seconds,
        peak_gib=torch.cuda.max_memory_allocated() / 2**30,
        batch=batch,
        settings=f'amp {cfg.amp}, channels_last {cfg.channels_last}, compile {cfg.compile}',
    )
    del model, optimizer, train_model
    torch.cuda.empty_cache()
    return result


def recipes_table(steps: int, warmup: int, batch_size: int | None) -> None:
    print(
        f'== paper recipes (cub/*), 224 px, {steps} timed steps after {warmup} warm-up, random tensors on GPU'
    )
    print(
        f'{"backbone":<14}{"batch":>6}{"CAM img/s":>11}{"ADL img/s":>11}{"ADL/CAM":>9}{"CAM GiB":>9}{"ADL GiB":>9}  settings'
    )
    for backbone in BACKBONES:
        cam = measure_recipe(f'cub/{backbone}_cam', steps, warmup, batch_size)
        adl = measure_recipe(f'cub/{backbone}_adl', steps, warmup, batch_size)
        print(
            f'{backbone:<14}{cam["batch"]:>6}{cam["img_s"]:>11.1f}{adl["img_s"]:>11.1f}'
            f'{adl["img_s"] / cam["img_s"]:>9.3f}{cam["peak_gib"]:>9.2f}{adl["peak_gib"]:>9.2f}  {adl["settings"]}',
            flush=True,
        )


def nccl_worker() -> int:
    """Run by torchrun: one DDP step of resnet50_se_adl on nccl, and an all_reduce whose sum is checked."""
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    import timm_adl  # noqa: F401 (registers the *_adl models)

    rank, local = int(os.environ['RANK']), int(os.environ['LOCAL_RANK'])
    torch.cuda.set_device(local)
    dist.init_process_group('nccl')
    import timm

    model = timm.create_model('resnet50_se_adl', num_classes=200).cuda().to(memory_format=torch.channels_last)
    ddp = DDP(model, device_ids=[local])
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(32, 3, 224, 224, device='cuda').contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 200, (32,), device='cuda')
    with torch.autocast('cuda', dtype=torch.bfloat16):
        loss = F.cross_entropy(ddp(x).float(), y)
    loss.backward()
    opt.step()
    total = torch.ones(1, device='cuda') * (rank + 1)
    dist.all_reduce(total)
    world = dist.get_world_size()
    assert total.item() == world * (world + 1) / 2, total.item()
    if rank == 0:
        print(
            f'nccl DDP step ok: world size {world}, loss {loss.item():.3f}, nccl {torch.cuda.nccl.version()}'
        )
    dist.destroy_process_group()
    return 0


def nccl_check() -> None:
    import torch

    n = torch.cuda.device_count()
    print(f'== torchrun nccl step ({n} process(es), one per GPU)', flush=True)
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', f'--nproc_per_node={n}']
    subprocess.run([*cmd, str(Path(__file__).resolve()), '--nccl-worker'], check=True)


def speed_check() -> None:
    print('== trainer vs bare loop on the GPU (benchmarks/train_speed.py)', flush=True)
    args = ['--device', 'cuda', '--model', 'resnet50', '--img-size', '224', '--batch-size', '128']
    args += [
        '--images',
        '1024',
        '--epochs',
        '3',
        '--rounds',
        '2',
        '--workers',
        '8',
        '--amp',
        'bf16',
        '--channels-last',
    ]
    subprocess.run([sys.executable, str(HERE / 'train_speed.py'), *args], check=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=30, help='timed steps per recipe (default 30)')
    p.add_argument('--warmup', type=int, default=5)
    p.add_argument('--batch-size', type=int, default=None, help="default: each recipe's own batch_size")
    p.add_argument('--skip-nccl', action='store_true')
    p.add_argument('--skip-speed', action='store_true')
    p.add_argument('--nccl-worker', action='store_true', help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.nccl_worker:
        return nccl_worker()
    import torch

    if not torch.cuda.is_available():
        print(
            'gpu_check: error: no CUDA GPU (torch.cuda.is_available() is False); run it on a GPU machine',
            file=sys.stderr,
        )
        return 2
    print(
        f'{torch.cuda.get_device_name(0)}, torch {torch.__version__}, CUDA {torch.version.cuda}', flush=True
    )
    t0 = time.perf_counter()
    recipes_table(args.steps, args.warmup, args.batch_size)
    if not args.skip_nccl:
        nccl_check()
    if not args.skip_speed:
        speed_check()
    print(f'gpu_check done in {time.perf_counter() - t0:.0f} s')
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
