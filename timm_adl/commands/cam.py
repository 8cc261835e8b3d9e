"""``timm-adl cam``: the CAM of one image as an overlay PNG, and its box (paper protocol)."""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path

from ..cli import CliError
from ._inputs import normalization_flags, resolve_input
from .eval import add_model_args, load_model, paper_box, resolve_device

HELP_EPILOG = """examples:
  timm-adl cam --model resnet50_se_adl --checkpoint out/best.safetensors --image bird.jpg
  timm-adl cam --checkpoint my_model_folder --image bird.jpg --class 12 --out bird_cam.png --figure
  timm-adl cam --model convnext_atto --checkpoint out/best.safetensors --image bird.jpg --cam-method gradcam
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'cam',
        help='write the CAM overlay of one image as a PNG and print its box',
        description='Compute the class activation map of one image (the top-1 class, or --class K) with the '
        "reference protocol, resized to the photo's size, overlay it as a heatmap with the estimated box "
        '(largest region above --threshold of the max, the paper protocol) in green, and print the box in '
        'photo pixels (inclusive x0 y0 x1 y1).',
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_model_args(p)
    p.add_argument('--image', required=True, help='the photo (any format PIL reads)')
    p.add_argument(
        '--class', dest='class_index', type=int, help='class index K (default: the top-1 prediction)'
    )
    p.add_argument('--out', help='output PNG (default: <image stem>_cam.png in the current folder)')
    p.add_argument(
        '--threshold', type=float, default=0.2, help='box threshold, fraction of the max (default 0.2)'
    )
    p.add_argument(
        '--img-size',
        type=int,
        help="network input size (default: the training input size the checkpoint records, else the model's)",
    )
    p.add_argument(
        '--cam-method',
        default='cam',
        help="how the map is made: 'cam' (default; the reference CAM on a global-average-pool + linear head, "
        "the head applied per feature cell otherwise) or 'gradcam' (Grad-CAM, any head)",
    )
    p.add_argument('--align', default='reference', help="CAM resize: 'reference' (default) or 'centered'")
    p.add_argument(
        '--figure', action='store_true', help='write [image | heatmap | overlay] instead of the overlay'
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from ..cam import CAM_METHODS, compute_cams
    from ..data import load_image, wsol_eval_transform
    from ..viz import PRED_COLOR, cam_figure, draw_boxes, overlay, save_png, to_uint8_image

    if not 0.0 <= args.threshold < 1.0:
        raise CliError(f'--threshold must be in [0, 1), got {args.threshold}')
    if args.cam_method not in CAM_METHODS:
        close = difflib.get_close_matches(args.cam_method, CAM_METHODS, n=1)
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise CliError(f'--cam-method must be one of {", ".join(CAM_METHODS)}, got {args.cam_method!r}{hint}')
    if args.align not in ('reference', 'centered'):
        raise CliError(f"--align must be 'reference' or 'centered', got {args.align!r}")
    flags = normalization_flags(args)
    try:
        photo = load_image(args.image, Path(args.image).name)
    except (FileNotFoundError, OSError) as err:
        raise CliError(str(err)) from None
    model, label_names = load_model(args)
    device = resolve_device(args.device)
    model = model.to(device)
    num_classes = getattr(model, 'num_classes', None)  # any head: get_classifier() may be an MLP
    if args.class_index is not None and num_classes is not None and not 0 <= args.class_index < num_classes:
        raise CliError(f'--class {args.class_index} is out of range for a model with {num_classes} classes')
    normalization, img_size = resolve_input(args, model, flags)
    transform = wsol_eval_transform(img_size, mean=normalization['mean'], std=normalization['std'])
    x = transform(photo)[None].to(device)
    labels = None if args.class_index is None else torch.tensor([args.class_index], device=device)
    try:
        res = compute_cams(
            model,
            x,
            labels,
            method=args.cam_method,
            output_size=(photo.height, photo.width),
            align=args.align,
        )
    except ValueError as err:
        raise CliError(str(err)) from None
    cam = (res.cams_top1 if labels is None else res.cams_gt)[0].cpu().numpy()
    cls = int(res.top1[0]) if labels is None else args.class_index
    prob = float(torch.softmax(res.logits[0].float(), 0)[cls])
    box = paper_box(cam, args.threshold)

    out = Path(args.out) if args.out else Path(f'{Path(args.image).stem}_cam.png')
    if args.figure:
        picture = cam_figure(photo, cam, None, box[None])
    else:
        picture = draw_boxes(overlay(to_uint8_image(photo), cam), box[None], PRED_COLOR)
    save_png(picture, out)
    name = f' ({label_names[cls]})' if label_names and cls < len(label_names) else ''
    which = 'top-1' if labels is None else 'given'
    x0, y0, x1, y1 = (int(v) for v in box)
    print(f'class {cls}{name} [{which}], p={prob:.3f}, map: {res.method}')
    print(
        f'box {x0} {y0} {x1} {y1}  (x0 y0 x1 y1, inclusive pixels of {photo.width}x{photo.height}, threshold {args.threshold:g})'
    )
    print(f'wrote {out}')
    return 0
