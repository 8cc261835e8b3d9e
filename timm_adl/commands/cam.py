"""``timm-adl cam``: the CAM of one image as the paper's Figure-3 panel, and its box (paper protocol).

The panel (image | heatmap | overlay with the box) is upscaled to a readable size and captioned with the
class, its probability, the threshold and the CAM method; ``--overlay`` writes only the overlay at the
photo's size and ``--figure`` the uncaptioned three pictures at the photo's size.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli import CliError
from ._flags import (
    add_cam_method,
    add_cam_threshold,
    add_img_size,
    add_json,
    default_output,
    deprecated_alias,
    resolve_device,
    write_json,
)
from ._inputs import normalization_flags, report_input
from .eval import add_align, add_model_args, check_align, check_cam_method, load_model, paper_box

PANEL_SIZE = 288  # 3x the 96 px synthetic images: text and boxes readable

HELP_EPILOG = """examples:
  timm-adl cam --model resnet50_se_adl --checkpoint out/best.safetensors --image bird.jpg
  timm-adl cam --checkpoint runs/cub_r50 --image bird.jpg --class 12 --out bird_cam.png --overlay
  timm-adl cam --model convnext_atto --checkpoint out/best.safetensors --image bird.jpg --cam-method gradcam
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'cam',
        help="write the CAM of one image as the paper's Figure-3 panel (PNG) and print its box",
        description='Compute the class activation map of one image (the top-1 class, or --class K) with the '
        "reference protocol, resized to the photo's size; write the paper's Figure-3 panel (image | heatmap | "
        'overlay with the estimated box in green: the largest region above --cam-threshold of the max, the '
        'paper protocol), upscaled so its short side is at least --panel-size px, captioned with the class, '
        'its probability, the threshold and the CAM method, with a legend; print the box in photo pixels '
        '(inclusive x0 y0 x1 y1).',
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.add_argument('--image', required=True, metavar='PATH', help='the photo (any format PIL reads)')
    p.add_argument(
        '--class',
        dest='class_index',
        type=int,
        metavar='K',
        help='class index K (default: the top-1 prediction)',
    )
    p.add_argument(
        '--out',
        metavar='PATH',
        help=f'output PNG (default: {default_output("cam")}/<image stem>_cam.png)',
    )
    add_cam_threshold(p)
    deprecated_alias(p, '--threshold', '--cam-threshold', 'cam_threshold', type=float)
    add_img_size(
        p,
        "network input size in pixels (default: the training input size the checkpoint records, else the model's)",
    )
    deprecated_alias(
        p, '--input-size', '--img-size N', 'img_size', convert=lambda v: int(v[-1]), nargs=3, type=int
    )
    add_cam_method(p)
    add_align(p)
    p.add_argument(
        '--panel-size',
        type=int,
        default=PANEL_SIZE,
        metavar='N',
        help=f'upscale the panel so its short side is at least N px (default: {PANEL_SIZE})',
    )
    style = p.add_mutually_exclusive_group()
    style.add_argument(
        '--overlay', action='store_true', help="write only the overlay with the box, at the photo's size"
    )
    style.add_argument(
        '--figure',
        action='store_true',
        help="write [image | heatmap | overlay] at the photo's size, without caption or legend",
    )
    add_json(p, help="write the class, probability and box as JSON to PATH ('-' prints them)")
    p.set_defaults(func=run)


def _picture(args: argparse.Namespace, photo, cam, box, caption: str):
    """The picture the flags ask for: the captioned panel (default), the bare overlay, or the bare strip."""
    from ..viz import PRED_COLOR, cam_figure, cam_panel, draw_boxes, overlay, to_uint8_image

    if args.figure:
        return cam_figure(photo, cam, None, box[None])
    if args.overlay:
        return draw_boxes(overlay(to_uint8_image(photo), cam), box[None], PRED_COLOR)
    return cam_panel(photo, cam, pred_boxes=box[None], caption=caption, min_size=args.panel_size)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..cam import compute_cams
    from ..data import load_image, wsol_eval_transform
    from ..viz import save_png

    if not 0.0 <= args.cam_threshold < 1.0:
        raise CliError(f'--cam-threshold must be in [0, 1), got {args.cam_threshold}')
    if args.panel_size < 1:
        raise CliError(f'--panel-size must be a positive number of pixels, got {args.panel_size}')
    check_cam_method(args.cam_method)
    check_align(args.align)
    flags = normalization_flags(args)
    photo = load_image(args.image, Path(args.image).name)
    loaded = load_model(args, flags)
    device = resolve_device(args.device)
    model = loaded.model.to(device)
    num_classes = getattr(model, 'num_classes', None)  # any head: get_classifier() may be an MLP
    if args.class_index is not None and num_classes is not None and not 0 <= args.class_index < num_classes:
        raise CliError(f'--class {args.class_index} is out of range for a model with {num_classes} classes')
    report_input(loaded)
    transform = wsol_eval_transform(loaded.img_size, mean=loaded.mean, std=loaded.std)
    x = transform(photo)[None].to(device)
    labels = None if args.class_index is None else torch.tensor([args.class_index], device=device)
    res = compute_cams(
        model,
        x,
        labels,
        method=loaded.cam_method,
        output_size=(photo.height, photo.width),
        align=args.align,
    )
    cam = (res.cams_top1 if labels is None else res.cams_gt)[0].cpu().numpy()
    cls = int(res.top1[0]) if labels is None else args.class_index
    prob = float(torch.softmax(res.logits[0].float(), 0)[cls])
    box = paper_box(cam, args.cam_threshold)

    label_names = loaded.label_names
    name = f' ({label_names[cls]})' if label_names and cls < len(label_names) else ''
    which = 'top-1' if labels is None else 'given'
    out = Path(args.out) if args.out else Path(default_output('cam')) / f'{Path(args.image).stem}_cam.png'
    caption = (
        f'class {cls}{name} [{which}], p = {prob:.3f} | box: largest region above '
        f'{args.cam_threshold:g} of the max (paper protocol) | CAM method: {res.method}'
    )
    save_png(_picture(args, photo, cam, box, caption), out)
    x0, y0, x1, y1 = (int(v) for v in box)
    print(f'class {cls}{name} [{which}], p={prob:.3f}, map: {res.method}')
    print(
        f'box {x0} {y0} {x1} {y1}  (x0 y0 x1 y1, inclusive pixels of {photo.width}x{photo.height}, '
        f'threshold {args.cam_threshold:g})'
    )
    print(f'wrote {out}')
    if args.json:
        write_json(
            args.json,
            {
                'image': args.image,
                'class': cls,
                'label': label_names[cls] if label_names and cls < len(label_names) else None,
                'probability': prob,
                'box': [x0, y0, x1, y1],
                'cam_method': res.method,
                'cam_threshold': args.cam_threshold,
                'out': str(out),
            },
        )
    return 0
