"""Image folders, CIFAR python batches, text corpora and on-device augmentation, on real data written here."""

import os
import pickle

import numpy as np
import pytest
import torch

from _workloads import digits_uint8, write_digits_cifar, write_digits_pngs
from nesterov.data import DataError, load_dataset
from nesterov.data import images as I
from nesterov.data.text import EXCLUDE_DIRS, pysrc_files


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NESTEROV_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def pngs(tmp_path_factory):
    return write_digits_pngs(tmp_path_factory.mktemp("digits_png"))


# --------------------------------------------------------------------------------------------- imagefolder
def test_imagefolder_decodes_train_and_val_and_caches(pngs, monkeypatch):
    ds = load_dataset(f"imagefolder:{pngs}")
    (xtr, ytr), (xte, yte) = digits_uint8()
    assert ds.x.dtype == torch.uint8 and ds.x.shape == (len(ytr), 1, 8, 8) and ds.x_test.shape == (len(yte), 1, 8, 8)
    assert ds.num_classes == 10 and ds.image and ds.default_augment == "crop"
    # the pixels are the digits we wrote (the folder lists class by class)
    order = np.argsort(ytr, kind="stable")
    assert np.array_equal(ds.x[:, 0].numpy(), xtr[order]) and np.array_equal(ds.y.numpy(), ytr[order])
    batch = ds.inputs(ds.x[:256])
    assert batch.dtype == torch.float32 and abs(batch.mean().item()) < 0.2
    monkeypatch.setattr(I, "_decode", lambda *a: pytest.fail("the cached tensor was not used"))
    again = load_dataset(f"imagefolder:{pngs}")
    assert torch.equal(again.x, ds.x) and torch.equal(again.y_test, ds.y_test)


def test_imagefolder_without_splits_carves_one(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (6, 5, 3), dtype=np.uint8)).save(tmp_path / "d" / c / f"{i}.jpg")
    ds = load_dataset(f"imagefolder:{tmp_path / 'd'}")
    assert ds.x.shape == (16, 3, 6, 5) and len(ds.y_test) == 4
    assert "has no val/ or test/ folder: 4 of 20 images (20%, fixed seed 0) are held out" in ds.describe()


def _tree(tmp_path, pngs):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(pngs, root)
    return root


def test_imagefolder_bad_input_names_the_file(tmp_path, pngs):
    root = _tree(tmp_path, pngs)
    victim = sorted((root / "train" / "3").iterdir())[0]
    victim.write_bytes(victim.read_bytes()[:30])  # truncated PNG
    with pytest.raises(DataError, match=f"{victim}: cannot decode image"):
        load_dataset(f"imagefolder:{root}")
    victim.write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=f"{victim}: cannot decode image"):
        load_dataset(f"imagefolder:{root}")
    (root / "train" / "empty").mkdir()
    victim.unlink()
    with pytest.raises(DataError, match=f"{root / 'train' / 'empty'}: class folder has no images"):
        load_dataset(f"imagefolder:{root}")
    with pytest.raises(DataError, match="nowhere: no such folder"):
        load_dataset(f"imagefolder:{tmp_path / 'nowhere'}")


# --------------------------------------------------------------------------------------------- CIFAR
def test_cifar_batches_equal_the_png_folder(tmp_path):
    png = load_dataset(f"imagefolder:{write_digits_pngs(tmp_path / 'png', size=32, rgb=True)}")
    cif = load_dataset(f"cifar10:{write_digits_cifar(tmp_path / 'cifar')}")
    assert cif.x.shape == (1437, 3, 32, 32) and cif.default_augment == "crop-flip" and cif.num_classes == 10
    for k in ("x", "y", "x_test", "y_test", "mean", "std"):
        assert torch.equal(getattr(png, k), getattr(cif, k)), k


class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_refuses_crafted_pickles_and_wrong_keys(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    marker = tmp_path / "pwned"
    evil = _Evil()
    evil.marker = marker
    (root / "data_batch_1").write_bytes(pickle.dumps({b"data": evil, b"labels": [0]}))
    with pytest.raises(DataError, match=r"data_batch_1: refused: global 'posix.system' is not allowed"):
        load_dataset(f"cifar10:{root}")
    assert not marker.exists()
    (root / "data_batch_1").write_bytes(pickle.dumps({b"pixels": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"data_batch_1: missing key\(s\) \['data'\]"):
        load_dataset(f"cifar10:{root}")
    (root / "data_batch_1").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}))
    with pytest.raises(DataError, match=r"data_batch_1: 'data' must be a uint8 array of shape \(N, 3072\)"):
        load_dataset(f"cifar10:{root}")
    (root / "data_batch_1").write_bytes(b"\x80\x02}q\x00(X")  # truncated
    with pytest.raises(DataError, match="data_batch_1: not a CIFAR python batch"):
        load_dataset(f"cifar10:{root}")
    with pytest.raises(DataError, match="no training batch"):
        load_dataset(f"cifar100:{root}")


# --------------------------------------------------------------------------------------------- text
def test_text_folder_splits_by_file(tmp_path):
    for i in range(12):
        (tmp_path / f"f{i:02d}.txt").write_text(f"file {i} " * (20 + i))
    d = load_dataset(f"text:{tmp_path}")
    assert d.kind == "text" and d.num_classes == 256 and d.files == 12
    val = (tmp_path / "f09.txt").read_bytes()
    assert bytes(d.val.numpy()) == val  # every 10th file (the 10th in sorted order)
    assert val not in bytes(d.train.numpy())
    x, y = d.windows(torch.tensor([0, 5]), 8)
    assert x.shape == (2, 8) and torch.equal(x[:, 1:], y[:, :-1])
    one = load_dataset(f"text:{tmp_path / 'f00.txt'}")
    assert len(one.val) == len((tmp_path / "f00.txt").read_bytes()) - int(0.9 * len((tmp_path / "f00.txt").read_bytes()))
    assert d.sha256 == load_dataset(f"text:{tmp_path}").sha256 != one.sha256


def test_text_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: no text files in this folder"):
        load_dataset(f"text:{tmp_path / 'empty'}")
    (tmp_path / "blank.txt").write_text("")
    with pytest.raises(DataError, match="blank.txt: the text is empty"):
        load_dataset(f"text:{tmp_path / 'blank.txt'}")
    with pytest.raises(DataError, match="missing: no such file or folder"):
        load_dataset(f"text:{tmp_path / 'missing'}")


def test_pysrc_is_the_stdlib_in_a_fixed_order():
    files = pysrc_files()
    assert files == sorted(files) and len(files) > 100
    assert not any(EXCLUDE_DIRS.intersection(p.parts) for p in files)
    assert any(p.name == "functools.py" for p in files)
    d = load_dataset("pysrc")
    assert len(d.train) > 1_000_000 and len(d.val) > 50_000 and len(d.sha256) == 64
    assert b"def " in bytes(d.val[:100_000].numpy())


# --------------------------------------------------------------------------------------------- augmentation
def test_augment_crops_from_the_padded_image_and_flips():
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).reshape(2, 1, 6, 6)
    out = I.augment(x, torch.Generator().manual_seed(3), pad=2, flip=False)
    g = torch.Generator().manual_seed(3)
    dy, dx = torch.randint(0, 5, (2,), generator=g), torch.randint(0, 5, (2,), generator=g)
    xp = torch.nn.functional.pad(x.float(), (2,) * 4, mode="reflect").to(torch.uint8)
    for i in range(2):
        assert torch.equal(out[i], xp[i, :, dy[i]:dy[i] + 6, dx[i]:dx[i] + 6])
    assert (dy != 2).any() or (dx != 2).any()  # the draw is not the identity crop
    flipped = I.augment(x.repeat(64, 1, 1, 1), torch.Generator().manual_seed(0), pad=0, flip=True)
    is_flip = [torch.equal(f, x[i % 2].flip(2)) for i, f in enumerate(flipped)]
    is_same = [torch.equal(f, x[i % 2]) for i, f in enumerate(flipped)]
    assert all(a != b for a, b in zip(is_flip, is_same)) and 30 < sum(is_flip) < 98


def test_a_streamed_folder_names_a_file_that_stops_decoding(tmp_path, pngs, monkeypatch):
    from nesterov.train import loop
    from nesterov.train.config import Config

    monkeypatch.setenv("NESTEROV_IMAGE_CACHE_BYTES", "1000")
    monkeypatch.setenv("NESTEROV_DATA_WORKERS", "1")
    root = _tree(tmp_path, pngs)
    ds = load_dataset(f"imagefolder:{root}")
    assert ds.streamed and not hasattr(ds, "x")
    assert len(ds.y) == 1437 and len(ds.y_test) == 360 and ds.input_shape == (1, 8, 8)
    victim = sorted((root / "val" / "7").iterdir())[0]
    victim.write_bytes(b"broken")  # after the listing: found when the batch is decoded
    cfg = Config(dataset=f"imagefolder:{root}", model="airbench", width=8, steps=2, eval_every=2, batch_size=16)
    with pytest.raises(DataError, match=f"^{victim}: cannot decode image"):
        loop.run(cfg, None, progress=False, data=ds, log=lambda m: None)
