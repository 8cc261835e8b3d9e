"""timm-adl data {cub,imagenet,openimages} DIR: get a data set ready for ``timm-adl train`` / ``eval``.

Each prints the data.root=... data.metadata_root=... overrides that point a packaged recipe at it.
"""

from __future__ import annotations

import argparse

from ..cli import CliError
from ._flags import add_json, write_json

HELP_EPILOG = """examples:
  timm-adl data cub data/                        # download CUB-200-2011 (1.1 GB), verify, extract, metadata
  timm-adl data cub data/ --cubv2 CUBV2.tar --cubv2-metadata wsolevaluation/metadata/CUB
  timm-adl data imagenet data/ --train ILSVRC2012_img_train.tar --val ILSVRC2012_img_val.tar \\
      --val-boxes ILSVRC2012_bbox_val_v3.tgz
  timm-adl data openimages data/ --images OpenImages_images.zip --annotations OpenImages_annotations.zip \\
      --metadata wsolevaluation/metadata/OpenImages
then: timm-adl train cub/resnet50_se_adl <the printed overrides>
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        'data',
        help='download or unpack CUB-200-2011, ImageNet-1k or OpenImages30k and write their metadata',
        description="Prepare a WSOL data set in wsolevaluation's metadata format (train / val / test). See "
        'docs/data.md for the sources, licences and how each validation split is made.',
        epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sets = p.add_subparsers(dest='dataset', metavar='DATASET')
    raw = argparse.RawDescriptionHelpFormatter
    cub = sets.add_parser(
        'cub',
        help='CUB-200-2011: download the official archive (or use --archive)',
        description='CUB-200-2011 in wsolevaluation metadata format, from the official archive.',
        epilog='examples:\n  timm-adl data cub data/\n  timm-adl data cub data/ --archive CUB_200_2011.tgz',
        formatter_class=raw,
    )
    cub.add_argument('dir', help='folder to put CUB_200_2011/ in')
    cub.add_argument('--archive', help='a local CUB_200_2011.tgz instead of downloading it')
    cub.add_argument('--url', default=None, help='download address (default: the CaltechDATA record)')
    cub.add_argument('--md5', default=None, help='expected MD5 of the archive (default: the official one)')
    cub.add_argument(
        '--cubv2', help="wsolevaluation's CUBV2.tar (or its unpacked folder): the val split images"
    )
    cub.add_argument('--cubv2-metadata', help="wsolevaluation's metadata/CUB folder (its val/ files)")
    cub.add_argument(
        '--val-per-class',
        type=int,
        default=5,
        help='without CUBV2: val images per class carved from train (5)',
    )
    cub.add_argument('--seed', type=int, default=0, help='without CUBV2: seed of the carved val split (0)')

    inet = sets.add_parser(
        'imagenet',
        help="ImageNet-1k from the user's ILSVRC2012 archives or folders",
        description="ImageNet-1k in wsolevaluation metadata format, from the user's ILSVRC2012 archives.",
        epilog='example:\n  timm-adl data imagenet data/ --train ILSVRC2012_img_train.tar --val ILSVRC2012_img_val.tar '
        '\\\n      --val-boxes ILSVRC2012_bbox_val_v3.tgz',
        formatter_class=raw,
    )
    inet.add_argument('dir', help='folder to put ILSVRC/ in')
    inet.add_argument(
        '--train', required=True, help='ILSVRC2012_img_train.tar, or its folder of synset folders'
    )
    inet.add_argument('--val', required=True, help='ILSVRC2012_img_val.tar, or its folder of 50,000 images')
    inet.add_argument('--val-boxes', required=True, help='the official validation XML boxes (.tgz or folder)')
    inet.add_argument(
        '--imagenetv2', help='ImageNetV2 threshold0.7 (.tar.gz or folder): the val split images'
    )
    inet.add_argument(
        '--imagenetv2-metadata', help="wsolevaluation's metadata/ILSVRC folder (its val/ files)"
    )

    oi = sets.add_parser(
        'openimages',
        help="OpenImages30k from wsolevaluation's archives and metadata",
        description="OpenImages30k (with masks) from wsolevaluation's archives and metadata.",
        epilog='example:\n  timm-adl data openimages data/ --images OpenImages_images.zip '
        '--annotations OpenImages_annotations.zip \\\n      --metadata wsolevaluation/metadata/OpenImages',
        formatter_class=raw,
    )
    oi.add_argument('dir', help='folder to put OpenImages/ in')
    oi.add_argument('--images', required=True, help='OpenImages_images.zip (or its unpacked folder)')
    oi.add_argument(
        '--annotations', required=True, help='OpenImages_annotations.zip (or its unpacked folder)'
    )
    oi.add_argument('--metadata', required=True, help="wsolevaluation's metadata/OpenImages folder")

    for sub in (cub, inet, oi):
        sub.add_argument('--no-progress', action='store_true', help='no progress bar')
        add_json(
            sub,
            help="also write what was prepared (splits, folders, overrides) as JSON to PATH ('-' prints it)",
        )
    p.set_defaults(func=run)


def _report(prepared, json_path: str | None = None) -> int:
    sizes = ', '.join(f'{k} {v}' for k, v in prepared.split_sizes.items())
    print(f'{prepared.name}: {sizes} images; val: {prepared.val_source}')
    print(f'metadata: {prepared.metadata_root}')
    if prepared.mask_root is not None:
        print(f'masks: {prepared.mask_root} (timm-adl eval --mask-dir)')
    print(f'train with: {prepared.overrides()}')
    if json_path:
        write_json(
            json_path,
            {
                'name': prepared.name,
                'split_sizes': dict(prepared.split_sizes),
                'val_source': prepared.val_source,
                'metadata_root': str(prepared.metadata_root),
                'mask_root': None if prepared.mask_root is None else str(prepared.mask_root),
                'overrides': prepared.overrides(),
            },
        )
    return 0


def _run(fn, json_path: str | None = None, **kwargs) -> int:
    return _report(fn(**kwargs), json_path)


def run(args: argparse.Namespace) -> int:
    runners = {'cub': run_cub, 'imagenet': run_imagenet, 'openimages': run_openimages}
    if args.dataset is None:
        raise CliError('name a data set: cub, imagenet or openimages (see timm-adl data --help)')
    return runners[args.dataset](args)


def run_cub(args: argparse.Namespace) -> int:
    from ..data.prepare_cub import CUB_MD5, CUB_URL, prepare_cub

    return _run(
        prepare_cub,
        json_path=args.json,
        dest=args.dir,
        url=args.url or CUB_URL,
        md5=args.md5 or CUB_MD5,
        archive=args.archive,
        cubv2=args.cubv2,
        cubv2_metadata=args.cubv2_metadata,
        val_per_class=args.val_per_class,
        seed=args.seed,
        progress=not args.no_progress,
    )


def run_imagenet(args: argparse.Namespace) -> int:
    from ..data.prepare_imagenet import prepare_imagenet

    return _run(
        prepare_imagenet,
        json_path=args.json,
        dest=args.dir,
        train=args.train,
        val=args.val,
        val_boxes=args.val_boxes,
        imagenetv2=args.imagenetv2,
        imagenetv2_metadata=args.imagenetv2_metadata,
    )


def run_openimages(args: argparse.Namespace) -> int:
    from ..data.prepare_openimages import prepare_openimages

    return _run(
        prepare_openimages,
        json_path=args.json,
        dest=args.dir,
        images=args.images,
        annotations=args.annotations,
        metadata=args.metadata,
    )
