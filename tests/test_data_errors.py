"""Malformed data sets fail at construction with the file, line or id in the message (corrupt images: at load)."""

import re

import pytest
from fakes import make_fake_cub, make_fake_imagenet, make_fake_wsol_metadata

from timm_adl.data import WSOLDataError, create_wsol_dataset


def _set_line(path, lineno, text):
    lines = path.read_text().splitlines()
    lines[lineno - 1] = text
    path.write_text('\n'.join(lines) + '\n')


def _drop_line(path, lineno):
    lines = path.read_text().splitlines()
    del lines[lineno - 1]
    path.write_text('\n'.join(lines) + '\n')


def _truncate(path):
    # keep the JPEG header (through the start-of-scan marker) and cut the compressed pixels short
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b'\xff\xda') + 40])


def _garbage(path):
    path.write_bytes(b'this is not an image at all')


# ---------------------------------------------------------------- CUB


@pytest.fixture
def cub(tmp_path):
    fake = make_fake_cub(tmp_path)
    fake['test'] = [d for d in fake['images'] if d['split'] == 'test']
    return fake


@pytest.mark.parametrize(
    'name', ['images.txt', 'image_class_labels.txt', 'train_test_split.txt', 'bounding_boxes.txt']
)
def test_cub_missing_file_is_named(cub, name):
    (cub['base'] / name).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(name)):
        create_wsol_dataset('cub', cub['base'], 'test')


def test_cub_box_outside_image(cub):
    d = cub['test'][0]
    w = d['size'][0]
    _set_line(cub['base'] / 'bounding_boxes.txt', d['index'], f'{d["index"]} 5.0 2.0 {w:.1f} 3.0')
    with pytest.raises(
        WSOLDataError, match=rf'bounding_boxes\.txt:{d["index"]}: box .* {re.escape(repr(d["id"]))}'
    ):
        create_wsol_dataset('cub', cub['base'], 'test')


def test_cub_negative_box(cub):
    d = cub['test'][1]
    _set_line(cub['base'] / 'bounding_boxes.txt', d['index'], f'{d["index"]} -1.0 2.0 5.0 3.0')
    with pytest.raises(WSOLDataError, match='outside its'):
        create_wsol_dataset('cub', cub['base'], 'test')


def test_cub_image_without_label(cub):
    d = cub['test'][0]
    _drop_line(cub['base'] / 'image_class_labels.txt', d['index'])
    with pytest.raises(WSOLDataError, match=rf'image id {d["index"]} \({re.escape(d["id"])}\) has no label'):
        create_wsol_dataset('cub', cub['base'], 'test')


def test_cub_line_that_does_not_parse(cub):
    d = cub['test'][0]
    _set_line(cub['base'] / 'bounding_boxes.txt', d['index'], f'{d["index"]} 1.0 two 3.0 4.0')
    with pytest.raises(WSOLDataError, match=rf'bounding_boxes\.txt:{d["index"]}: box value must be a number'):
        create_wsol_dataset('cub', cub['base'], 'test')
    _set_line(cub['base'] / 'bounding_boxes.txt', d['index'], f'{d["index"]} 1.0 3.0 4.0')
    with pytest.raises(WSOLDataError, match=rf'bounding_boxes\.txt:{d["index"]}: expected 5 fields'):
        create_wsol_dataset('cub', cub['base'], 'test')


def test_cub_bad_label_and_duplicate_id(cub):
    d = cub['test'][0]
    _set_line(cub['base'] / 'image_class_labels.txt', d['index'], f'{d["index"]} 0')
    with pytest.raises(WSOLDataError, match=rf'image_class_labels\.txt:{d["index"]}: class 0'):
        create_wsol_dataset('cub', cub['base'], 'test')
    _set_line(cub['base'] / 'image_class_labels.txt', d['index'], '1 1')
    with pytest.raises(WSOLDataError, match=r'image_class_labels\.txt:\d+: id 1 repeated'):
        create_wsol_dataset('cub', cub['base'], 'test')


def test_cub_missing_image_is_named(cub):
    d = cub['test'][0]
    d['path'].unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(d['path']))):
        create_wsol_dataset('cub', cub['base'], 'test')


def test_cub_unreadable_image_fails_at_construction(cub):
    d = cub['test'][0]
    _garbage(d['path'])
    with pytest.raises(OSError, match=rf'{re.escape(repr(d["id"]))} at {re.escape(str(d["path"]))}'):
        create_wsol_dataset('cub', cub['base'], 'test')


def test_cub_truncated_image_fails_at_load_naming_id(cub):
    d = cub['test'][0]
    _truncate(d['path'])  # header intact: only decoding fails
    ds = create_wsol_dataset('cub', cub['base'], 'test', img_size=16)
    with pytest.raises(OSError, match=rf'{re.escape(repr(d["id"]))} at {re.escape(str(d["path"]))}'):
        ds[0]


def test_cub_unknown_split(cub):
    with pytest.raises(ValueError, match=r"unknown CUB split 'tset' \(did you mean 'test'"):
        create_wsol_dataset('cub', cub['base'], 'tset')


# ---------------------------------------------------------------- wsolevaluation metadata


@pytest.fixture
def meta(tmp_path):
    fake = make_fake_wsol_metadata(tmp_path, splits=('train', 'test'))
    return tmp_path, tmp_path / 'metadata' / 'test', fake['test']


@pytest.mark.parametrize('name', ['image_ids.txt', 'class_labels.txt', 'image_sizes.txt', 'localization.txt'])
def test_metadata_missing_file_is_named(meta, name):
    root, split_dir, _ = meta
    (split_dir / name).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(split_dir / name))):
        create_wsol_dataset('wsol-metadata', root, 'test')


def test_metadata_training_needs_no_localization(meta):
    root, split_dir, items = meta
    (split_dir / 'localization.txt').unlink()
    (split_dir / 'image_sizes.txt').unlink()
    assert len(create_wsol_dataset('wsol-metadata', root, 'test', is_training=True)) == len(items)


def test_metadata_missing_root_and_unknown_split(meta, tmp_path):
    root, _, _ = meta
    with pytest.raises(FileNotFoundError, match='metadata folder not found'):
        create_wsol_dataset('wsol-metadata', root, 'test', metadata_root=tmp_path / 'nope')
    with pytest.raises(ValueError, match=r"'tset' \(did you mean 'test'"):
        create_wsol_dataset('wsol-metadata', root, 'tset')


def test_metadata_image_without_label(meta):
    root, split_dir, items = meta
    _drop_line(split_dir / 'class_labels.txt', 2)
    with pytest.raises(
        WSOLDataError, match=rf"'{re.escape(items[1]['id'])}' \(.*image_ids\.txt:2\) has no label"
    ):
        create_wsol_dataset('wsol-metadata', root, 'test')


def test_metadata_lines_that_do_not_parse(meta):
    root, split_dir, items = meta
    _set_line(split_dir / 'class_labels.txt', 3, f'{items[2]["id"]},cat')
    with pytest.raises(WSOLDataError, match=r'class_labels\.txt:3: class label must be an integer'):
        create_wsol_dataset('wsol-metadata', root, 'test')
    _set_line(split_dir / 'class_labels.txt', 3, f'{items[2]["id"]},-1')
    with pytest.raises(WSOLDataError, match=r'class_labels\.txt:3: class label must be >= 0'):
        create_wsol_dataset('wsol-metadata', root, 'test')
    _set_line(split_dir / 'class_labels.txt', 3, f'{items[2]["id"]},1')
    _set_line(split_dir / 'image_sizes.txt', 1, f'{items[0]["id"]},40')
    with pytest.raises(WSOLDataError, match=r'image_sizes\.txt:1: expected 3 fields'):
        create_wsol_dataset('wsol-metadata', root, 'test')


def test_metadata_box_errors(meta):
    root, split_dir, items = meta
    loc = split_dir / 'localization.txt'
    original = loc.read_text()
    w, h = items[0]['size']
    _set_line(loc, 2, f'{items[0]["id"]},0,0,{w + 1},{h - 1}')
    with pytest.raises(
        WSOLDataError, match=rf"localization\.txt:2: box .* '{re.escape(items[0]['id'])}' is outside"
    ):
        create_wsol_dataset('wsol-metadata', root, 'test')
    _set_line(loc, 2, f'{items[0]["id"]},0,0,x,4')
    with pytest.raises(WSOLDataError, match=r'localization\.txt:2: box coordinate must be a number'):
        create_wsol_dataset('wsol-metadata', root, 'test')
    _set_line(loc, 2, f'{items[0]["id"]},a.png,')
    with pytest.raises(WSOLDataError, match=r'localization\.txt:2: a mask line in a file of boxes'):
        create_wsol_dataset('wsol-metadata', root, 'test')
    loc.write_text(original)
    _drop_line(split_dir / 'image_sizes.txt', 2)
    with pytest.raises(WSOLDataError, match=rf"'{re.escape(items[1]['id'])}' .* has no size in"):
        create_wsol_dataset('wsol-metadata', root, 'test')


def test_metadata_image_without_localization(meta):
    root, split_dir, items = meta
    lines = [
        ln for ln in (split_dir / 'localization.txt').read_text().splitlines() if items[2]['id'] not in ln
    ]
    (split_dir / 'localization.txt').write_text('\n'.join(lines) + '\n')
    with pytest.raises(
        WSOLDataError, match=rf"'{re.escape(items[2]['id'])}' .* has no entry in .*localization"
    ):
        create_wsol_dataset('wsol-metadata', root, 'test')


def test_metadata_missing_image_is_named(meta):
    root, _, items = meta
    (root / items[3]['id']).unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / items[3]['id']))):
        create_wsol_dataset('wsol-metadata', root, 'test')


def test_metadata_corrupt_image_fails_at_load_naming_id(meta):
    root, _, items = meta
    _garbage(root / items[1]['id'])
    ds = create_wsol_dataset('wsol-metadata', root, 'test', img_size=16)
    ds[0]
    with pytest.raises(OSError, match=rf"image '{re.escape(items[1]['id'])}' at .*corrupt"):
        ds[1]


def test_metadata_mask_errors(tmp_path):
    fake = make_fake_wsol_metadata(tmp_path, kind='masks', splits=('test',))
    items, loc = fake['test'], tmp_path / 'metadata' / 'test' / 'localization.txt'
    masks = tmp_path / 'masks'
    stem = items[0]['id'][:-4]
    (masks / f'{stem}_m1.png').unlink()
    with pytest.raises(
        FileNotFoundError, match=rf'localization\.txt:2\) not found: .*{re.escape(stem)}_m1\.png'
    ):
        create_wsol_dataset('wsol-metadata', tmp_path, 'test', mask_root=masks)
    _garbage(masks / f'{stem}_m1.png')
    ds = create_wsol_dataset('wsol-metadata', tmp_path, 'test', mask_root=masks, img_size=16)
    with pytest.raises(OSError, match=rf"cannot read mask of image '{re.escape(items[0]['id'])}'"):
        ds[0]
    _set_line(loc, 2, f'{items[0]["id"]},{stem}_m1.png,other_ignore.png')
    with pytest.raises(WSOLDataError, match=r'localization\.txt:2: second ignore path'):
        create_wsol_dataset('wsol-metadata', tmp_path, 'test', mask_root=masks)


# ---------------------------------------------------------------- ImageNet XML


@pytest.fixture
def imagenet(tmp_path):
    return tmp_path, make_fake_imagenet(tmp_path)['images']


def test_imagenet_malformed_xml_is_named(imagenet):
    root, images = imagenet
    images[0]['xml'].write_text('<annotation><size><width>4</width>')
    with pytest.raises(WSOLDataError, match=rf'{re.escape(str(images[0]["xml"]))}: not a valid XML'):
        create_wsol_dataset('imagenet', root, 'val')


def test_imagenet_bad_values(imagenet):
    root, images = imagenet
    xml = images[1]['xml']
    text = xml.read_text()
    xml.write_text(text.replace('<xmin>', '<xmin>x', 1))
    with pytest.raises(
        WSOLDataError, match=rf'{re.escape(str(xml))}: <object> #1 <bndbox><xmin> must be a number'
    ):
        create_wsol_dataset('imagenet', root, 'val')
    xml.write_text(text.replace('<xmax>', '<xmax>9', 1))
    with pytest.raises(WSOLDataError, match=rf"{re.escape(str(xml))}: box .* '{images[1]['id']}' is outside"):
        create_wsol_dataset('imagenet', root, 'val')
    xml.write_text(text.split('<size>')[0] + '</annotation>')
    with pytest.raises(WSOLDataError, match='no <size> element'):
        create_wsol_dataset('imagenet', root, 'val')
    xml.write_text(text.split('<object>')[0] + '</annotation>')
    with pytest.raises(WSOLDataError, match=rf"no <object>, so image '{images[1]['id']}' has no label"):
        create_wsol_dataset('imagenet', root, 'val')


def test_imagenet_unknown_synset(imagenet):
    root, images = imagenet
    xml = images[2]['xml']
    xml.write_text(xml.read_text().replace(images[2]['synset'], 'n09999999'))
    with pytest.raises(WSOLDataError, match=r"synset 'n09999999' of image .* is not in .*LOC_synset_mapping"):
        create_wsol_dataset('imagenet', root, 'val')


def test_imagenet_image_without_xml(imagenet):
    root, images = imagenet
    images[3]['xml'].unlink()
    with pytest.raises(WSOLDataError, match=rf"'{images[3]['id']}' .* has no annotation file"):
        create_wsol_dataset('imagenet', root, 'val')


def test_imagenet_folder_synset_disagrees_with_xml(tmp_path):
    images = make_fake_imagenet(tmp_path, layout='synset')['images']
    xml = images[0]['xml']
    xml.write_text(xml.read_text().replace(images[0]['synset'], 'n01443537'))
    with pytest.raises(
        WSOLDataError, match=r"first object is 'n01443537' but image .* is in folder 'n01440764'"
    ):
        create_wsol_dataset('imagenet', tmp_path, 'val')


def test_imagenet_missing_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"ImageNet 'val' image folder not found; looked in"):
        create_wsol_dataset('imagenet', tmp_path, 'val')


# ---------------------------------------------------------------- factory


def test_factory_rejects_unknown_names(tmp_path):
    with pytest.raises(ValueError, match=r"unknown WSOL dataset name 'cubb' \(did you mean 'cub'"):
        create_wsol_dataset('cubb', tmp_path, 'test')
    with pytest.raises(ValueError, match=r"unknown gt_box_mode 'firts' \(did you mean 'first'"):
        create_wsol_dataset('cub', tmp_path, 'test', gt_box_mode='firts')
    with pytest.raises(ValueError, match="metadata_root is only used by the 'wsol-metadata' format"):
        create_wsol_dataset('cub', tmp_path, 'test', metadata_root=tmp_path)
