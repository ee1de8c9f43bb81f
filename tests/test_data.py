"Tests of stargan_nb.data and stargan_nb.faces beyond the notebooks': more faces and sizes, odd image formats, workers, caches."
import struct, subprocess, sys, warnings, zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stargan_nb.data import (CELEBA_ATTRS, HAIR_COLOURS, RAFD_EXPRESSIONS, load_image, celeba_dls, celeba_items,
                             folder_dls, to_float, ImageDataset)
from stargan_nb.faces import SyntheticFaces, synthetic_dls, save_celeba_layout, save_folder_layout

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope='module')
def celeba(tmp_path_factory):
    return save_celeba_layout(tmp_path_factory.mktemp('celeba'), n=24, seed=1)


def _changed(ds, i, **attrs): return (ds._render_uint8(i, **attrs) != ds.images[i:i + 1]).any(1)[0]


@pytest.mark.parametrize('view,size', [('celeba', 32), ('celeba', 47), ('rafd', 32), ('rafd', 64)])
def test_counterfactuals_stay_in_their_regions(view, size):
    ds = SyntheticFaces(24, size=size, seed=7, view=view)
    for i in range(len(ds)):
        a = ds.attributes(i)
        assert not _changed(ds, i, **a).any()
        changes = [('hair', h) for h in HAIR_COLOURS if h != a['hair']] + [('Male', not a['Male']), ('Young', not a['Young'])]
        changes += [('expression', e) for e in RAFD_EXPRESSIONS if e != a['expression']]
        for name, new in changes:
            m, r = _changed(ds, i, **{name: new}), ds.region(i, name)
            assert m.any(), (i, name, new)
            assert not (m & ~r).any(), (i, name, new)


@pytest.mark.parametrize('view', ['celeba', 'rafd'])
def test_regions_are_tight_and_hair_never_meets_the_expression(view):
    ds = SyntheticFaces(16, size=64, seed=11, view=view)
    for i in range(len(ds)):
        a = ds.attributes(i)
        alts = {'hair': [dict(hair=h) for h in HAIR_COLOURS], 'Male': [dict(Male=not a['Male'])],
                'Young': [dict(Young=not a['Young'])], 'expression': [dict(expression=e) for e in RAFD_EXPRESSIONS]}
        r = {k: ds.region(i, k) for k in alts}
        for k, changes in alts.items():
            m = torch.stack([_changed(ds, i, **o) for o in changes]).any(0)
            assert not (m & ~r[k]).any() and (r[k] & ~m).float().mean() < 0.02, (i, k)  # faint changes round away at edges
        assert (r['hair'] & r['expression']).sum() <= 4, i  # a pixel where a brow's tip meets the fringe averages both
        assert r['expression'].float().mean() < 0.2 and r['hair'].float().mean() < 0.5


def test_expressions_are_distinct_images():
    ds = SyntheticFaces(5, size=32, view='rafd')
    for i in range(5):
        imgs = ds._render_uint8([i] * 8, torch.eye(8)).float()
        d = (imgs[:, None] - imgs[None]).abs().mean((2, 3, 4))
        assert (d + torch.eye(8) * 99).min() > 0.5  # every pair differs by > 0.5/255 on average


def test_render_batch_equals_single_and_is_deterministic():
    ds, ds2 = SyntheticFaces(12, size=37, seed=3), SyntheticFaces(12, size=37, seed=3)
    c = 1 - ds.labels
    c[:, :3] = torch.eye(3)[torch.arange(12) % 3]
    batch = ds.render(range(12), c)
    for i in range(12): assert torch.equal(batch[i], ds2.render(i, c[i]))
    assert torch.equal(ds.images, ds2.images)
    assert not torch.equal(ds.images, SyntheticFaces(12, size=37, seed=4).images)


def test_render_errors():
    ds = SyntheticFaces(3, size=16)
    with pytest.raises(ValueError, match='expected 5 labels, got 8'): ds.render(0, torch.zeros(8))
    with pytest.raises(ValueError, match="unknown attribute 'Bald'"): ds.render(0, Bald=1)
    with pytest.raises(ValueError, match="view must be one of"): SyntheticFaces(3, view='ffhq')


def test_synthetic_dls_workers_and_flips():
    dls0 = synthetic_dls(n_train=32, n_valid=16, size=16, bs=8)
    dls2 = synthetic_dls(n_train=32, n_valid=16, size=16, bs=8, num_workers=2)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(dls0.valid, dls2.valid))
    assert sum(len(x) for x, _ in dls2.train) == 32
    flipped = synthetic_dls(n_train=16, n_valid=8, size=16, bs=16, flip=True)
    ref = to_float(flipped.train_ds.images)
    seen = set()
    for _ in range(10):
        x, c = flipped.train.one_batch()
        for xi, ci in zip(x, c):
            same = [j for j in range(16) if torch.equal(xi, ref[j])]
            mirr = [j for j in range(16) if torch.equal(xi, ref[j].flip(-1))]
            assert same or mirr
            seen.add('same' if same else 'mirrored')
    assert seen == {'same', 'mirrored'}


def _png16_rgb(path, a):
    "Write a 16-bit RGB PNG by hand (PIL cannot write one)"
    h, w, _ = a.shape
    raw = b''.join(b'\0' + a[y].astype('>u2').tobytes() for y in range(h))
    chunk = lambda t, d: struct.pack('>I', len(d)) + t + d + struct.pack('>I', zlib.crc32(t + d) & 0xffffffff)
    path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', struct.pack('>IIBBBBB', w, h, 16, 2, 0, 0, 0))
                     + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b''))


def test_odd_image_formats(tmp_path):
    rng = np.random.default_rng(0)
    a16 = rng.integers(0, 65536, (6, 9, 3)).astype(np.uint16)
    _png16_rgb(tmp_path / 'rgb48.png', a16)
    x = load_image(tmp_path / 'rgb48.png')
    assert x.shape == (3, 6, 9) and x.dtype == torch.uint8
    assert (x.float() - torch.tensor(a16 / 257.).permute(2, 0, 1)).abs().max() <= 1
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / 'prog.jpg', progressive=True, quality=90)
    Image.fromarray(rgb).convert('LA').save(tmp_path / 'la.png')
    Image.fromarray(rgb).save(tmp_path / 'x.bmp'); Image.fromarray(rgb).save(tmp_path / 'x.webp', lossless=True)
    pal = Image.fromarray(rgb).quantize(8); pal.info['transparency'] = 0; pal.save(tmp_path / 'pal_t.png')
    for f in ('prog.jpg', 'la.png', 'x.bmp', 'x.webp', 'pal_t.png'):
        y = load_image(tmp_path / f)
        assert y.shape == (3, 16, 16) and y.dtype == torch.uint8, f
    assert torch.equal(load_image(tmp_path / 'x.bmp'), torch.tensor(rgb).permute(2, 0, 1))
    assert torch.equal(load_image(tmp_path / 'x.webp'), torch.tensor(rgb).permute(2, 0, 1))
    assert torch.equal(load_image(tmp_path / 'prog.jpg'), torch.tensor(np.asarray(Image.open(tmp_path / 'prog.jpg'))).permute(2, 0, 1))


def test_corrupt_files_in_a_celeba_folder(tmp_path):
    root = save_celeba_layout(tmp_path / 'celeba', n=10, seed=0)
    imgs = root / 'img_align_celeba'
    (imgs / '000003.jpg').write_bytes((imgs / '000003.jpg').read_bytes()[:400])
    (imgs / '000007.jpg').write_bytes(b'')
    dls = celeba_dls(root, image_size=32, bs=2, test_size=0)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        for _ in range(2): n = sum(len(x) for x, _ in dls.train)
    msgs = [str(o.message) for o in w if o.category is UserWarning]
    assert n == 10
    assert sorted(m.split(':')[0] for m in msgs if m.startswith('skipping')) == \
        [f'skipping unreadable image {imgs / "000003.jpg"}', f'skipping unreadable image {imgs / "000007.jpg"}']
    assert [m for m in msgs if not m.startswith('skipping')] == ['2 unreadable image(s) skipped in this pass (2 file(s) in all)'] * 2


def test_partition_file_errors(celeba, tmp_path):
    d = tmp_path / 'c'; d.mkdir()
    (d / 'img_align_celeba').symlink_to(celeba / 'img_align_celeba')
    (d / 'list_attr_celeba.txt').write_text((celeba / 'list_attr_celeba.txt').read_text())
    (d / 'list_eval_partition.txt').write_text(''.join(f'{i:06d}.jpg 0\n' for i in range(1, 24)) + '000024.jpg 3\n')
    with pytest.raises(ValueError, match='list_eval_partition.txt, line 24: expected a file name and 0, 1 or 2'): celeba_items(d)
    (d / 'list_eval_partition.txt').write_text(''.join(f'{i:06d}.jpg 0\n' for i in range(1, 24)))
    with pytest.raises(ValueError, match='no partition for 1 image'): celeba_items(d)
    assert len(celeba_items(d, partition=False, test_size=4)['test'][0]) == 4


def test_official_split_default_and_crlf(celeba, tmp_path):
    items = celeba_items(celeba, test_size=5)
    assert len(items['test'][0]) == 5 and items['valid'][0] == items['test'][0]
    d = tmp_path / 'crlf'; d.mkdir()
    (d / 'img_align_celeba').symlink_to(celeba / 'img_align_celeba')
    (d / 'list_attr_celeba.txt').write_bytes((celeba / 'list_attr_celeba.txt').read_bytes().replace(b'\n', b'\r\n'))
    assert np.array_equal(celeba_items(d, test_size=5)['all'][1], items['all'][1])


def test_celeba_workers_and_file_cache(celeba, tmp_path):
    dls = celeba_dls(celeba, image_size=32, bs=4, test_size=4, num_workers=2, cache=tmp_path / 'cache')
    assert sum(len(x) for x, _ in dls.train) == 20
    again = celeba_dls(celeba, image_size=32, bs=4, test_size=4, cache=tmp_path / 'cache')
    assert again.train_ds.cache.done.all()  # the workers filled the shared file
    plain = celeba_dls(celeba, image_size=32, bs=4, test_size=4)
    assert torch.equal(again.train_ds.raw_batch(list(range(20)))[0], plain.train_ds.raw_batch(list(range(20)))[0])


def test_folder_dls_with_valid_folder_and_flat_layout(tmp_path):
    root = save_folder_layout(tmp_path / 'r', n_per_class=1, size=32, splits=('train', 'valid'))
    dls = folder_dls(root, image_size=16, bs=4)
    assert (len(dls.train_ds), len(dls.valid_ds)) == (8, 8)
    assert dls.train_ds.flip and not dls.valid_ds.flip
    flat = folder_dls(root / 'train', image_size=16, bs=4, valid_pct=0.25, seed=1)
    assert (len(flat.train_ds), len(flat.valid_ds)) == (6, 2)
    assert not set(flat.train_ds.files) & set(flat.valid_ds.files)


def test_image_dataset_all_unreadable(tmp_path):
    "A dataset with no usable file is the user's to fix: a UserError (a ValueError), not a crash"
    (tmp_path / 'a.jpg').write_bytes(b'junk')
    ds = ImageDataset([tmp_path / 'a.jpg'], [[1.]], ['a'])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(ValueError, match='none of the 1 images can be used'): ds[0]


@pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a GPU')
def test_batches_convert_and_flip_on_the_gpu():
    dls = synthetic_dls(n_train=32, n_valid=16, size=16, bs=16, flip=True, device='cuda')
    x, c = dls.valid.one_batch()
    assert x.device.type == 'cuda' and c.device.type == 'cuda'
    assert torch.equal(x.cpu(), to_float(dls.valid_ds.images[:16]))
    ref = to_float(dls.train_ds.images)
    x, _ = dls.train.one_batch()
    for xi in x.cpu(): assert any(torch.equal(xi, r) or torch.equal(xi, r.flip(-1)) for r in ref)
