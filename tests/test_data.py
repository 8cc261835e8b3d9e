"""WSOL data sets on fake trees: items, box geometry, masks, transforms, collate and loaders."""

import os

import cv2
import numpy as np
import pytest
import timm
import torch
import torch.distributed as dist
from fakes import make_fake_cub, make_fake_imagenet, make_fake_wsol_metadata, write_image
from PIL import Image
from torchvision import transforms as T

from timm_adl.data import (
    ShardSampler,
    create_wsol_dataset,
    create_wsol_loader,
    load_masks,
    model_mean_std,
    scale_boxes,
    wsol_collate,
    wsol_eval_transform,
    wsol_train_transform,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _scaled(box, size, img=224):
    """The reference's resize_bbox, written out: multiply, divide, truncate."""
    w, h = size
    return [int(box[0] * img / w), int(box[1] * img / h), int(box[2] * img / w), int(box[3] * img / h)]


# ---------------------------------------------------------------- box scaling and transforms


def test_scale_boxes_multiplies_before_dividing():
    # 55 * 224 / 110 is exactly 112, but 55 * (224 / 110) is 111.999...: the reference gets 112.
    out = scale_boxes([(55, 0, 109, 54)], (110, 55), (224, 224))
    assert out.tolist() == [[112.0, 0.0, 221.0, 219.0]]
    assert out.dtype == torch.float32 and out.shape == (1, 4)
    assert scale_boxes([], (10, 10), (224, 224)).shape == (0, 4)


def test_scale_boxes_non_square_output():
    # (H', W') = (100, 200): x scales by 200/50, y by 100/40.
    assert scale_boxes([(10, 10, 49, 39)], (50, 40), (100, 200)).tolist() == [[40.0, 25.0, 196.0, 97.0]]


def test_eval_transform_equals_reference_resize_without_crop(tmp_path):
    write_image(tmp_path / 'a.jpg', (45, 27), seed=3)
    img = Image.open(tmp_path / 'a.jpg').convert('RGB')
    ref = T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize(MEAN, STD)])(img)
    ours = wsol_eval_transform(224, MEAN, STD)(img)
    assert ours.shape == (3, 224, 224)
    assert torch.equal(ours, ref)


def test_train_transform_is_reference_recipe(tmp_path):
    tf = wsol_train_transform(224)
    kinds = [type(t).__name__ for t in tf.transforms]
    assert kinds[:3] == ['Resize', 'RandomCrop', 'RandomHorizontalFlip']
    assert tuple(tf.transforms[0].size) == (256, 256) and tuple(tf.transforms[1].size) == (224, 224)
    assert tuple(wsol_train_transform(96).transforms[0].size) == (110, 110)  # 96 * 256 / 224 rounded
    write_image(tmp_path / 'a.jpg', (45, 27))
    assert tf(Image.open(tmp_path / 'a.jpg').convert('RGB')).shape == (3, 224, 224)
    with pytest.raises(ValueError, match='at least the crop size'):
        wsol_train_transform(224, resize_size=200)


def test_model_mean_std_reads_pretrained_cfg():
    model = timm.create_model('test_vit')  # a tiny timm test model normalised with 0.5, not ImageNet's
    assert model_mean_std(model) == ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


# ---------------------------------------------------------------- CUB


def test_cub_items_labels_and_boxes(tmp_path):
    fake = make_fake_cub(tmp_path)
    ds = create_wsol_dataset('cub', tmp_path, 'test')  # root above CUB_200_2011/ is found
    expected = [d for d in fake['images'] if d['split'] == 'test']
    assert ds.image_ids == [d['id'] for d in expected]
    assert ds.classes == ['001.Bird_0', '002.Bird_1'] and ds.num_classes == 2
    for i, d in enumerate(expected):
        image, label, boxes = ds[i]
        assert image.shape == (3, 224, 224) and image.dtype == torch.float32
        assert label == d['label']  # 0-based
        x, y, w, h = d['box_xywh']
        assert boxes.tolist() == [_scaled((x, y, x + w, y + h), d['size'])]  # x1 = x + w
    train = create_wsol_dataset('cub', fake['base'], 'train', img_size=64)
    assert len(train) == sum(d['split'] == 'train' for d in fake['images'])
    assert train[0][0].shape == (3, 64, 64)


def test_cub_training_items_have_no_boxes(tmp_path):
    make_fake_cub(tmp_path, classes_txt=False)
    ds = create_wsol_dataset('cub', tmp_path, 'train', is_training=True, img_size=32)
    image, label, boxes = ds[0]
    assert image.shape == (3, 32, 32) and boxes.shape == (0, 4) and label == 0
    assert ds.classes is None and ds.num_classes == 2


def test_cub_normalisation_uses_given_mean_std(tmp_path):
    make_fake_cub(tmp_path)
    a = create_wsol_dataset('cub', tmp_path, 'test', img_size=32)[0][0]
    b = create_wsol_dataset('cub', tmp_path, 'test', img_size=32, mean=(0.5,) * 3, std=(0.5,) * 3)[0][0]
    raw = a * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    assert torch.allclose(b, (raw - 0.5) / 0.5, atol=1e-5)


# ---------------------------------------------------------------- wsolevaluation metadata


def test_wsol_metadata_boxes_multi_and_first(tmp_path):
    fake = make_fake_wsol_metadata(tmp_path)
    ds = create_wsol_dataset('wsol-metadata', tmp_path, 'test')
    assert not ds.has_masks and len(ds) == len(fake['test'])
    for i, d in enumerate(fake['test']):
        _, label, boxes = ds[i]
        assert ds.image_ids[i] == d['id'] and label == d['label']
        assert boxes.tolist() == [_scaled(b, d['size']) for b in d['boxes']]
    assert len(ds[0][2]) == 2
    first = create_wsol_dataset('wsol-metadata', tmp_path, 'test', gt_box_mode='first', img_size=100)
    assert first[0][2].tolist() == [_scaled(fake['test'][0]['boxes'][0], fake['test'][0]['size'], 100)]


def test_wsol_metadata_split_alias_and_metadata_root(tmp_path):
    fake = make_fake_wsol_metadata(tmp_path / 'data', splits=('val',))
    os.rename(tmp_path / 'data' / 'metadata', tmp_path / 'meta')
    ds = create_wsol_dataset(
        'wsol-metadata', tmp_path / 'data', 'train-fullsup', metadata_root=tmp_path / 'meta'
    )
    assert ds.image_ids == [d['id'] for d in fake['val']]


def test_wsol_metadata_train_split_without_localization(tmp_path):
    make_fake_wsol_metadata(tmp_path, splits=('train',))
    ev = create_wsol_dataset('wsol-metadata', tmp_path, 'train')  # empty localization.txt
    assert ev[0][2].shape == (0, 4)
    tr = create_wsol_dataset('wsol-metadata', tmp_path, 'train', is_training=True, img_size=32)
    assert tr[0][0].shape == (3, 32, 32) and tr[0][2].shape == (0, 4)


def test_wsol_metadata_proxy_and_samples_per_class(tmp_path):
    fake = make_fake_wsol_metadata(tmp_path, splits=('train',), per_class=4)
    meta = tmp_path / 'metadata' / 'train'
    ids = [d['id'] for d in fake['train']]
    (meta / 'image_ids_proxy.txt').write_text(ids[1] + '\n' + ids[5] + '\n')
    assert create_wsol_dataset('wsol-metadata', tmp_path, 'train', proxy=True).image_ids == [ids[1], ids[5]]
    a = create_wsol_dataset('wsol-metadata', tmp_path, 'train', num_samples_per_class=2, seed=1)
    b = create_wsol_dataset('wsol-metadata', tmp_path, 'train', num_samples_per_class=2, seed=1)
    assert a.image_ids == b.image_ids and len(a) == 4 and sorted(a.labels) == [0, 0, 1, 1]
    with pytest.raises(ValueError, match='has only 4 images'):
        create_wsol_dataset('wsol-metadata', tmp_path, 'train', num_samples_per_class=5)


def test_wsol_metadata_masks_union_and_ignore(tmp_path):
    fake = make_fake_wsol_metadata(tmp_path, kind='masks', splits=('test',), mask_size=(32, 32))
    ds = create_wsol_dataset('wsol-metadata', tmp_path, 'test', img_size=32, mask_root=tmp_path / 'masks')
    assert ds.has_masks
    for i, d in enumerate(fake['test']):
        _, _, boxes, mask, ignore = ds[i]
        assert boxes.shape == (0, 4) and mask.dtype == torch.bool and mask.shape == (32, 32)
        want = np.zeros((32, 32), bool)
        for x0, y0, x1, y1 in d['masks']:
            want[y0:y1, x0:x1] = True
        x0, y0, x1, y1 = d['ignore']
        want_ignore = np.zeros((32, 32), bool)
        want_ignore[y0:y1, x0:x1] = True
        want_ignore &= ~want  # ignore box minus foreground
        assert np.array_equal(mask.numpy(), want) and np.array_equal(ignore.numpy(), want_ignore)
    # at half size the rectangles (even edges) land on exact halves
    half = create_wsol_dataset('wsol-metadata', tmp_path, 'test', img_size=16, mask_root=tmp_path / 'masks')
    assert half[1][3].nonzero().min(0).values.tolist() == [1, 1]
    assert half[1][3].nonzero().max(0).values.tolist() == [4, 5]


def test_masks_resize_like_opencv_nearest(tmp_path):
    # OpenCV's nearest takes source column floor(2 * i) when halving, PIL's takes floor(2 * i + 1):
    # a mask on column 0 only survives the reference's (OpenCV) resize.
    mask = np.zeros((4, 4), np.uint8)
    mask[:, 0] = 255
    cv2.imwrite(str(tmp_path / 'm.png'), mask)
    fg, ignore = load_masks([str(tmp_path / 'm.png')], None, (2, 2))
    assert fg.tolist() == [[True, False], [True, False]] and not ignore.any()


# ---------------------------------------------------------------- ImageNet XML


@pytest.mark.parametrize('layout, ann_layout', [('flat', 'kaggle'), ('synset', 'kaggle'), ('flat', 'beside')])
def test_imagenet_xml_boxes(tmp_path, layout, ann_layout):
    fake = make_fake_imagenet(tmp_path, layout=layout, ann_layout=ann_layout)
    ds = create_wsol_dataset('imagenet', tmp_path, 'val', img_size=112)
    assert ds.image_ids == [d['id'] for d in fake['images']]
    assert ds.classes == ['n01440764', 'n01443537', 'n01484850']
    for i, d in enumerate(fake['images']):
        _, label, boxes = ds[i]
        assert label == d['label']
        assert boxes.tolist() == [_scaled(b, d['size'], 112) for b in d['boxes']]
    first = create_wsol_dataset('imagenet', tmp_path, 'val', img_size=112, gt_box_mode='first')
    assert [len(first[i][2]) for i in range(len(first))] == [1] * len(first)
    assert max(len(ds[i][2]) for i in range(len(ds))) == 2


def test_imagenet_label_sources(tmp_path):
    # mapping order wins over sorted order; without a mapping, synset folders are sorted
    synsets = ('n02000000', 'n01000000')
    make_fake_imagenet(tmp_path / 'a', synsets=synsets, layout='flat')
    ds = create_wsol_dataset('imagenet', tmp_path / 'a', 'val')
    assert ds.classes == list(synsets) and ds.labels == [0, 0, 1, 1]  # ids sorted: val_1, val_2 are n02...
    make_fake_imagenet(tmp_path / 'b', synsets=synsets, layout='synset', mapping=False)
    ds = create_wsol_dataset('imagenet', tmp_path / 'b', 'val')
    assert ds.classes == sorted(synsets) and ds.labels == [0, 0, 1, 1]
    # no mapping, flat: timm's ImageNet-1k order (tench = 0, goldfish = 1)
    make_fake_imagenet(tmp_path / 'c', synsets=('n01443537', 'n01440764'), mapping=False, per_class=1)
    ds = create_wsol_dataset('imagenet', tmp_path / 'c', 'val')
    assert ds.num_classes == 1000 and ds.labels == [1, 0]


# ---------------------------------------------------------------- collate and loaders


def test_collate_keeps_variable_boxes(tmp_path):
    make_fake_wsol_metadata(tmp_path, splits=('test',))
    ds = create_wsol_dataset('wsol-metadata', tmp_path, 'test', img_size=32)
    images, labels, boxes = next(iter(create_wsol_loader(ds, batch_size=4, is_training=False)))
    assert images.shape == (4, 3, 32, 32) and labels.tolist() == ds.labels[:4]
    assert [len(b) for b in boxes] == [2, 1, 1, 2]
    assert all(torch.equal(b, ds[i][2]) for i, b in enumerate(boxes))


def test_collate_masks(tmp_path):
    make_fake_wsol_metadata(tmp_path, kind='masks', splits=('test',))
    ds = create_wsol_dataset('wsol-metadata', tmp_path, 'test', img_size=32, mask_root=tmp_path / 'masks')
    *_, masks, ignores = wsol_collate([ds[0], ds[1]])
    assert masks.shape == ignores.shape == (2, 32, 32) and masks.dtype == torch.bool
    assert not (masks & ignores).any()
    with pytest.raises(ValueError, match='got lengths'):
        wsol_collate([ds[0], ds[0][:3]])


def test_training_loader_shuffles_reproducibly(tmp_path):
    make_fake_wsol_metadata(tmp_path, splits=('train',), per_class=4)
    ds = create_wsol_dataset('wsol-metadata', tmp_path, 'train', is_training=True, img_size=16)

    def order(seed):
        return [y.tolist() for _, y, _ in create_wsol_loader(ds, batch_size=8, is_training=True, seed=seed)]

    assert order(3) == order(3)
    assert sorted(y for batch in order(3) for y in batch) == sorted(ds.labels)


def test_shard_sampler_covers_each_index_once():
    data = list(range(10))
    shards = [list(ShardSampler(data, num_replicas=3, rank=r)) for r in range(3)]
    assert sorted(i for s in shards for i in s) == data and [len(s) for s in shards] == [4, 3, 3]
    assert len(ShardSampler(data, num_replicas=3, rank=2)) == 3
    with pytest.raises(ValueError, match='rank'):
        ShardSampler(data, num_replicas=2, rank=2)


def test_distributed_loaders(tmp_path):
    make_fake_wsol_metadata(tmp_path, splits=('test',))
    ds = create_wsol_dataset('wsol-metadata', tmp_path, 'test', img_size=16)
    dist.init_process_group('gloo', init_method=f'file://{tmp_path / "store"}', rank=0, world_size=1)
    try:
        train = create_wsol_loader(ds, 2, is_training=True, distributed=True, seed=5)
        ev = create_wsol_loader(ds, 2, is_training=False, distributed=True)
        assert isinstance(train.sampler, torch.utils.data.DistributedSampler) and train.sampler.seed == 5
        assert isinstance(ev.sampler, ShardSampler) and list(ev.sampler) == list(range(len(ds)))
    finally:
        dist.destroy_process_group()
