"""``timm-adl data``: downloads from a loopback server (checksum, interruption, resume), safe extraction,
the metadata written for CUB and its validation split (deterministic, class-stratified, never from test)."""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from fakes import make_fake_cub, make_fake_imagenet, make_fake_wsol_metadata, write_image

from timm_adl.cli import main
from timm_adl.data import WSOLMetadataDataset
from timm_adl.data.cub import load_cub_records
from timm_adl.data.download import DownloadError, download_file, extract_archive
from timm_adl.data.metadata_write import carve_val_split
from timm_adl.data.prepare_cub import prepare_cub
from timm_adl.data.prepare_imagenet import prepare_imagenet
from timm_adl.data.prepare_openimages import prepare_openimages


class _Server:
    """Serves ``files`` (name -> bytes) on 127.0.0.1 with Range support; ``cut_after[name] = n`` sends the
    full Content-Length but closes the connection after n bytes, once (an interrupted transfer)."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.cut_after, self.ranges = files, {}, []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                name = self.path.lstrip('/')
                if name not in server.files:
                    self.send_error(404)
                    return
                data = server.files[name]
                start = 0
                header = self.headers.get('Range')
                server.ranges.append(header)
                if header:
                    start = int(header.removeprefix('bytes=').split('-')[0])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header('Content-Range', f'bytes {start}-{len(data) - 1}/{len(data)}')
                else:
                    self.send_response(200)
                self.send_header('Content-Length', str(len(data) - start))
                self.end_headers()
                cut = server.cut_after.pop(name, None)
                self.wfile.write(data[start:cut] if cut is not None else data[start:])
                if cut is not None:
                    self.wfile.flush()
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f'http://127.0.0.1:{self.httpd.server_address[1]}/{name}'

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def _tgz(folder: Path, arcname: str, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w:gz') as tar:
        tar.add(folder, arcname=arcname)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope='module')
def cub_archive(tmp_path_factory) -> tuple[bytes, dict]:
    """A fake CUB_200_2011.tgz: 3 classes x 10 images (5 train, 5 test each), as the official archive lays out."""
    src = tmp_path_factory.mktemp('cub-src')
    fake = make_fake_cub(src, n_classes=3, per_class=10)
    return _tgz(fake['base'], 'CUB_200_2011', {'attributes.txt': b'1 has_bill_shape::dagger\n'}), fake


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith('.'))


def test_interrupted_download_resumes_with_a_range_request(tmp_path):
    data = bytes(range(256)) * 4000  # ~1 MB, more than one read chunk
    with _Server({'a.bin': data}) as server:
        server.cut_after['a.bin'] = 300_000
        dest = tmp_path / 'a.bin'
        with pytest.raises(
            DownloadError, match=r'interrupted at 300000 of 1024000 bytes; run again to resume'
        ):
            download_file(server.url('a.bin'), dest, md5=_md5(data), progress=False)
        assert not dest.exists() and (tmp_path / 'a.bin.part').stat().st_size == 300_000
        download_file(server.url('a.bin'), dest, md5=_md5(data), progress=False)
        assert server.ranges == [None, 'bytes=300000-']
    assert dest.read_bytes() == data and not (tmp_path / 'a.bin.part').exists()


def test_checksum_mismatch_deletes_the_partial_file(tmp_path):
    with _Server({'a.bin': b'x' * 5000}) as server:
        with pytest.raises(
            DownloadError, match=r'checksum mismatch for .*a\.bin: md5 [0-9a-f]{32}, expected 0{32}'
        ):
            download_file(server.url('a.bin'), tmp_path / 'a.bin', md5='0' * 32, progress=False)
        with pytest.raises(DownloadError, match='HTTP 404'):
            download_file(server.url('missing.bin'), tmp_path / 'b.bin', progress=False)
    assert list(tmp_path.iterdir()) == []


def test_damaged_or_hostile_archives_leave_no_tree(tmp_path, cub_archive):
    data, _ = cub_archive
    truncated = tmp_path / 'truncated.tgz'
    truncated.write_bytes(data[: len(data) // 2])
    out = tmp_path / 'out'
    out.mkdir()
    with pytest.raises(DownloadError, match='damaged or incomplete'):
        extract_archive(truncated, out / 'CUB_200_2011', top='CUB_200_2011')
    assert list(out.iterdir()) == []

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        for name in ('fine/a.txt', '../escape.txt'):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b'hi'))
    hostile = tmp_path / 'hostile.tar'
    hostile.write_bytes(buf.getvalue())
    with pytest.raises(DownloadError, match=r"refusing member '\.\./escape\.txt'"):
        extract_archive(hostile, out / 'x')
    assert list(out.iterdir()) == [] and not (tmp_path / 'escape.txt').exists()

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode='w') as tar:
        link = tarfile.TarInfo('fine/link')
        link.type, link.linkname = tarfile.SYMTYPE, '/etc/passwd'
        tar.addfile(link)
    hostile.write_bytes(buf.getvalue())
    with pytest.raises(DownloadError, match='only regular files and folders'):
        extract_archive(hostile, out / 'x')
    assert list(out.iterdir()) == []


def _split_ids(metadata_root: Path, split: str) -> list[str]:
    return (metadata_root / split / 'image_ids.txt').read_text().split()


def test_prepare_cub_from_a_loopback_server(tmp_path, cub_archive):
    data, fake = cub_archive
    with _Server({'CUB_200_2011.tgz': data}) as server:
        url = server.url('CUB_200_2011.tgz')
        # A wrong checksum: a clear error and nothing extracted.
        with pytest.raises(DownloadError, match='checksum mismatch'):
            prepare_cub(tmp_path / 'bad', url=url, md5='f' * 32, val_per_class=2, progress=False)
        assert list((tmp_path / 'bad').iterdir()) == []

        # Interrupted, then resumed by running again.
        server.cut_after['CUB_200_2011.tgz'] = len(data) // 3
        with pytest.raises(DownloadError, match='interrupted'):
            prepare_cub(tmp_path / 'a', url=url, md5=_md5(data), val_per_class=2, progress=False)
        assert sorted(p.name for p in (tmp_path / 'a').iterdir()) == ['CUB_200_2011.tgz.part']
        prepared = prepare_cub(tmp_path / 'a', url=url, md5=_md5(data), val_per_class=2, progress=False)
        assert server.ranges[-1] == f'bytes={len(data) // 3}-'

    base = tmp_path / 'a' / 'CUB_200_2011'
    assert prepared.root == base / 'images' and prepared.metadata_root == base / 'metadata'
    assert prepared.split_sizes == {'train': 9, 'val': 6, 'test': 15}
    assert _leftovers(tmp_path / 'a') == [] and _leftovers(base) == []

    # Every split loads with the project's wsolevaluation reader; test keeps the official boxes.
    meta = prepared.metadata_root
    test = WSOLMetadataDataset(prepared.root, 'test', metadata_root=meta).records
    official = {i['id']: i for i in fake['images']}
    assert sorted(r.image_id for r in test) == sorted(i for i, v in official.items() if v['split'] == 'test')
    for r in test:
        x, y, w, h = official[r.image_id]['box_xywh']
        assert r.boxes == ((x, y, x + w, y + h),) and r.size == official[r.image_id]['size']
        assert r.label == official[r.image_id]['label']
    val = WSOLMetadataDataset(prepared.root, 'train-fullsup', metadata_root=meta).records
    train = WSOLMetadataDataset(prepared.root, 'train', metadata_root=meta, is_training=True).records

    # val: 2 per class, carved from the official train split, disjoint from train; test untouched.
    official_train = {i for i, v in official.items() if v['split'] == 'train'}
    val_ids, train_ids = {r.image_id for r in val}, {r.image_id for r in train}
    assert val_ids | train_ids == official_train and not val_ids & train_ids
    assert sorted(r.label for r in val) == [0, 0, 1, 1, 2, 2]
    assert 'seed' in (meta / 'prepare.json').read_text()


def test_val_split_is_deterministic_and_stratified(tmp_path, cub_archive):
    data, _ = cub_archive
    archive = tmp_path / 'CUB_200_2011.tgz'
    archive.write_bytes(data)
    runs = [
        prepare_cub(tmp_path / name, archive=archive, md5=_md5(data), val_per_class=1, progress=False)
        for name in 'ab'
    ]
    a, b = (_split_ids(r.metadata_root, 'val') for r in runs)
    assert a == b and len(a) == 3  # same seed, same ids
    assert sorted(i.split('/')[0] for i in a) == ['001.Bird_0', '002.Bird_1', '003.Bird_2']

    # The split function alone: stratified for any seed; the seed changes the draw.
    records, _ = load_cub_records(tmp_path / 'a', 'train')
    draws = set()
    for seed in range(6):
        train, val = carve_val_split(records, 2, seed)
        assert sorted(r.label for r in val) == [0, 0, 1, 1, 2, 2] and len(train) == len(records) - 6
        assert carve_val_split(list(reversed(records)), 2, seed)[1] == list(reversed(val))  # order-free
        draws.add(tuple(r.image_id for r in val))
    assert len(draws) > 1
    with pytest.raises(ValueError, match='class 0 has 5 training images'):
        carve_val_split(records, 5)


def test_cubv2_images_and_metadata_make_the_val_split(tmp_path, cub_archive):
    data, _ = cub_archive
    archive = tmp_path / 'CUB_200_2011.tgz'
    archive.write_bytes(data)
    v2 = tmp_path / 'cubv2'
    ids = [f'00{c + 1}.Bird_{c}/{1000 + c}.jpg' for c in range(3)]
    for k, image_id in enumerate(ids):
        write_image(v2 / image_id, (30, 20), seed=50 + k)
    wsol = tmp_path / 'wsolevaluation' / 'metadata' / 'CUB' / 'val'
    wsol.mkdir(parents=True)
    (wsol / 'image_ids.txt').write_text(''.join(f'{i}\n' for i in ids))
    (wsol / 'class_labels.txt').write_text(''.join(f'{i},{c}\n' for c, i in enumerate(ids)))
    (wsol / 'image_sizes.txt').write_text(''.join(f'{i},30,20\n' for i in ids))
    (wsol / 'localization.txt').write_text(''.join(f'{i},1,2,20,15\n' for i in ids))
    v2_tar = tmp_path / 'CUBV2.tar'
    with tarfile.open(v2_tar, 'w') as tar:
        for image_id in ids:
            tar.add(v2 / image_id, arcname=image_id)

    prepared = prepare_cub(
        tmp_path / 'out',
        archive=archive,
        md5=_md5(data),
        cubv2=v2_tar,
        cubv2_metadata=wsol.parent,
        progress=False,
    )
    assert prepared.split_sizes == {'train': 15, 'val': 3, 'test': 15}  # train keeps every official image
    val = WSOLMetadataDataset(prepared.root, 'val', metadata_root=prepared.metadata_root).records
    assert [r.image_id for r in val] == ids and val[0].boxes == ((1.0, 2.0, 20.0, 15.0),)
    # Running again reuses the images already unpacked.
    again = prepare_cub(
        tmp_path / 'out',
        archive=archive,
        md5=_md5(data),
        cubv2=v2_tar,
        cubv2_metadata=wsol.parent,
        progress=False,
    )
    assert again.split_sizes == prepared.split_sizes


def test_cli_prints_the_training_overrides(tmp_path, cub_archive, capsys):
    data, _ = cub_archive
    archive = tmp_path / 'CUB_200_2011.tgz'
    archive.write_bytes(data)
    argv = ['data', 'cub', str(tmp_path / 'd'), '--archive', str(archive), '--md5', _md5(data)]
    assert main([*argv, '--val-per-class', '1', '--no-progress']) == 0
    out = capsys.readouterr().out
    base = tmp_path / 'd' / 'CUB_200_2011'
    assert f'data.root={base / "images"} data.metadata_root={base / "metadata"}' in out
    assert main([*argv, '--val-per-class', '9', '--no-progress']) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and 'lower --val-per-class' in err[0]
    assert main(['data']) == 2


def _tar(path: Path, files: dict[str, Path], mode: str = 'w') -> Path:
    with tarfile.open(path, mode) as tar:
        for arcname, src in files.items():
            tar.add(src, arcname=arcname)
    return path


def test_prepare_imagenet_from_the_official_archives(tmp_path):
    src = tmp_path / 'src'
    fake = make_fake_imagenet(src, mapping=False)  # val images flat, XML under Annotations/CLS-LOC/val
    synsets = sorted({i['synset'] for i in fake['images']})
    # ILSVRC2012_img_train.tar holds one tar per synset.
    inner = {}
    for k, synset in enumerate(synsets):
        for j in range(2):
            write_image(src / 'train' / synset / f'{synset}_{j}.JPEG', (20, 16), seed=100 + 2 * k + j)
        inner[f'{synset}.tar'] = _tar(
            tmp_path / f'{synset}.tar',
            {f'{synset}_{j}.JPEG': src / 'train' / synset / f'{synset}_{j}.JPEG' for j in range(2)},
        )
    train_tar = _tar(tmp_path / 'ILSVRC2012_img_train.tar', inner)
    val_tar = _tar(
        tmp_path / 'ILSVRC2012_img_val.tar', {i['id']: src / 'val' / i['id'] for i in fake['images']}
    )
    boxes_tgz = _tar(
        tmp_path / 'bbox_val.tgz', {f'val/{i["xml"].name}': i['xml'] for i in fake['images']}, 'w:gz'
    )

    prepared = prepare_imagenet(tmp_path / 'data', train=train_tar, val=val_tar, val_boxes=boxes_tgz)
    assert prepared.split_sizes == {'train': 6, 'test': 6} and 'val_split=null' in prepared.val_source
    train = WSOLMetadataDataset(
        prepared.root, 'train', metadata_root=prepared.metadata_root, is_training=True
    )
    assert [(r.image_id, r.label) for r in train.records] == [
        (f'train/{s}/{s}_{j}.JPEG', k) for k, s in enumerate(synsets) for j in range(2)
    ]
    test = WSOLMetadataDataset(prepared.root, 'test', metadata_root=prepared.metadata_root).records
    for r, want in zip(test, fake['images'], strict=True):
        assert r.image_id == f'val/{want["id"]}' and r.label == synsets.index(want['synset'])
        assert list(r.boxes) == [tuple(float(v) for v in b) for b in want['boxes']] and r.size == want['size']
    assert not list((tmp_path / 'data' / 'ILSVRC').glob('.*'))  # no staging folder left

    # The user's unpacked folders are linked, not copied.
    again = prepare_imagenet(
        tmp_path / 'linked', train=src / 'train', val=src / 'val', val_boxes=src / 'Annotations'
    )
    assert (again.root / 'train').is_symlink() and again.split_sizes == prepared.split_sizes


def test_prepare_openimages_from_wsolevaluation_archives(tmp_path):
    src = tmp_path / 'src'
    fake = make_fake_wsol_metadata(src, kind='masks')
    images = tmp_path / 'OpenImages_images.zip'
    annotations = tmp_path / 'OpenImages_annotations.zip'
    with zipfile.ZipFile(images, 'w') as zf:
        for split in ('train', 'val', 'test'):
            for item in fake[split]:
                zf.write(src / item['id'], item['id'])
    with zipfile.ZipFile(annotations, 'w') as zf:
        for p in (src / 'masks').rglob('*.png'):
            zf.write(p, p.relative_to(src).as_posix())
    prepared = prepare_openimages(tmp_path / 'data', images, annotations, src / 'metadata')
    assert prepared.mask_root == prepared.root / 'masks'
    assert prepared.split_sizes == {'train': 6, 'val': 6, 'test': 6}
    test = WSOLMetadataDataset(
        prepared.root, 'test', metadata_root=prepared.metadata_root, mask_root=prepared.mask_root
    )
    assert [r.image_id for r in test.records] == [i['id'] for i in fake['test']]

    # A missing mask is reported now, and leaves no metadata folder behind.
    broken = tmp_path / 'broken'
    shutil.copytree(src / 'metadata', broken)
    first = fake['test'][1]['id'].removesuffix('.jpg')
    with open(broken / 'test' / 'localization.txt', 'a') as f:
        f.write(f'{fake["test"][1]["id"]},{first}_m9.png,\n')
    shutil.rmtree(tmp_path / 'data' / 'OpenImages' / 'metadata')
    with pytest.raises(FileNotFoundError, match=r'_m9\.png'):
        prepare_openimages(tmp_path / 'data', images, annotations, broken)
    assert not (tmp_path / 'data' / 'OpenImages' / 'metadata').exists()
