"""Image datasets: ``imagefolder:PATH`` (Pillow), ``cifar10:PATH`` / ``cifar100:PATH`` (python batches), and
augmentation on the device (random crop with padding, horizontal flip).

Images are kept as one uint8 tensor ``(N, C, H, W)`` on the device; :func:`to_float` normalises a batch by the
training set's per-channel mean and standard deviation when it is drawn.  ``imagefolder`` decodes once and caches
the tensor under :func:`~nesterov.data.cache_dir`, keyed by the paths, sizes and modification times of the files.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import pickle
import signal
from pathlib import Path

import numpy as np
import torch

__all__ = ["IMAGE_EXTENSIONS", "augment", "load_cifar", "load_imagefolder", "restricted_load", "to_float"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _error(msg):
    from . import DataError

    return DataError(msg)


# --------------------------------------------------------------------------------------------- augmentation
def augment(x: torch.Tensor, gen: torch.Generator, pad: int, flip: bool, share=None) -> torch.Tensor:
    """Random crop of the ``pad``-padded (reflect) image back to its size, and a random horizontal flip.

    ``x`` is ``(B, C, H, W)``; the random draws come from ``gen`` (a CPU generator) for the whole batch, so the
    crop of example ``i`` does not depend on which process handles it.  ``share=(lo, hi, total)``: ``x`` is
    rows ``lo:hi`` of a global batch of ``total``; the draws are made for ``total`` and rows ``lo:hi`` used.
    """
    b, _, h, w = x.shape
    lo, hi, total = share if share is not None else (0, b, b)
    if pad:
        dy = torch.randint(0, 2 * pad + 1, (total,), generator=gen)[lo:hi].to(x.device)
        dx = torch.randint(0, 2 * pad + 1, (total,), generator=gen)[lo:hi].to(x.device)
        mode = "reflect" if pad < min(h, w) else "replicate"
        xp = torch.nn.functional.pad(x if x.is_floating_point() else x.float(), (pad,) * 4, mode=mode).to(x.dtype)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        x = xp[torch.arange(b, device=x.device)[:, None, None], :, rows, cols].permute(0, 3, 1, 2)
    if flip:
        f = (torch.rand(total, generator=gen)[lo:hi] < 0.5).to(x.device)
        x = torch.where(f[:, None, None, None], x.flip(3), x)
    return x.contiguous()


def to_float(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, dtype=torch.float32) -> torch.Tensor:
    """uint8 ``(B, C, H, W)`` -> normalised float: ``(x / 255 - mean) / std`` per channel."""
    x = x.to(dtype).div_(255.0)
    return x.sub_(mean.to(x)[:, None, None]).div_(std.to(x)[:, None, None])


STATS_SAMPLE = 512  # images the normalisation statistics are taken from (fixed seed)


def stats_sample(n: int) -> torch.Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(0))[:STATS_SAMPLE]


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel mean and standard deviation of a uint8 image tensor, in [0, 1] units, from a fixed sample of
    :data:`STATS_SAMPLE` images (the same ones a streamed folder decodes for its statistics)."""
    x = x[stats_sample(len(x)).to(x.device)]
    xf = x.double().div(255.0).transpose(0, 1).reshape(x.shape[1], -1)
    return xf.mean(1).float(), xf.std(1).clamp_min(1e-3).float()


# --------------------------------------------------------------------------------------------- ImageFolder
def _class_dirs(root: Path) -> list[Path]:
    dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not dirs:
        raise _error(f"{root}: no class folders (expected one sub-folder of images per class)")
    return dirs


def _files(d: Path) -> list[Path]:
    files = sorted(p for p in d.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise _error(f"{d}: class folder has no images ({', '.join(IMAGE_EXTENSIONS)})")
    return files


def _decode(path: Path, size: tuple[int, int] | None, mode: str | None) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.load()
            if mode is None:
                mode = "L" if im.mode in ("1", "L", "I", "I;16", "F") else "RGB"
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds (OSError, SyntaxError, ValueError...)
        raise _error(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    return a[:, :, None] if a.ndim == 2 else a


def _peek(path: Path, size: int | None) -> tuple[int, int, int]:
    """(height, width, channels) the first image decodes to, from its header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            c = 1 if im.mode in ("1", "L", "I", "I;16", "F") else 3
    except Exception as e:  # noqa: BLE001
        raise _error(f"{path}: cannot decode image ({type(e).__name__}: {e})") from None
    return (size, size, c) if size else (h, w, c)


def _decode_split(root: Path, classes: list[str], size, mode) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = [], []
    for c, name in enumerate(classes):
        d = root / name
        if not d.is_dir():
            raise _error(f"{d}: missing class folder (the training split has a class {name!r})")
        for f in _files(d):
            a = _decode(f, size, mode)
            if size is None:
                size, mode = a.shape[:2], ("L" if a.shape[2] == 1 else "RGB")
            xs.append(a)
            ys.append(c)
    return np.stack(xs).transpose(0, 3, 1, 2).copy(), np.asarray(ys, dtype=np.int64)


def load_imagefolder(path: str, size: int | None = None) -> tuple[dict, list[str]]:
    """Arrays ``x``, ``y`` (and ``x_test``, ``y_test`` when PATH has ``train/`` and ``val/`` or ``test/``).

    Images are resized to the first image's size (or ``size`` x ``size``) and converted to its mode (grey or
    RGB).  The decoded tensor is cached; the cache key covers every file's path, size and mtime.
    """
    from . import cache_dir

    if not path:
        raise _error("imagefolder: give a folder, as in --dataset imagefolder:data/pets")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise _error(f"{path}: no such folder")
    val = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    train = root / "train" if (root / "train").is_dir() and val is not None else root
    classes = [d.name for d in _class_dirs(train)]
    if len(classes) < 2:
        raise _error(f"{train}: only one class folder ({classes[0]}); need at least 2")
    listing = []
    for split in [train] + ([val] if val is not None else []):
        for name in classes:
            d = split / name
            if d.is_dir():
                for f in _files(d):
                    st = f.stat()
                    listing.append(f"{f}|{st.st_size}|{st.st_mtime_ns}")
    h, w, c = _peek(Path(listing[0].rsplit("|", 2)[0]), size)
    if len(listing) * h * w * c > stream_bytes():
        first = _decode(Path(listing[0].rsplit("|", 2)[0]), (size, size) if size else None, None)
        return StreamedFolder.build(path, train, val, classes, first), classes
    key = hashlib.sha256("\n".join([str(size)] + listing).encode()).hexdigest()[:20]
    cache = cache_dir() / f"imagefolder-{key}.npz"
    if cache.exists():
        try:
            with np.load(cache) as f:
                return {k: f[k] for k in f.files}, classes
        except Exception:  # noqa: BLE001 - a bad cache is rebuilt
            pass
    sz = (size, size) if size else None
    x, y = _decode_split(train, classes, sz, None)
    arrays = {"x": x, "y": y}
    if val is not None:
        extra = sorted(d.name for d in _class_dirs(val) if d.name not in classes)
        if extra:
            raise _error(f"{val}: class folder(s) {extra} not in {train}")
        arrays["x_test"], arrays["y_test"] = _decode_split(val, classes, tuple(x.shape[2:]),
                                                           "L" if x.shape[1] == 1 else "RGB")
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, cache)
    except OSError:
        pass
    return arrays, classes


def stream_bytes() -> int:
    """Decoded image sets larger than this (``$NESTEROV_IMAGE_CACHE_BYTES``, default 2 GiB) are streamed."""
    return int(os.environ.get("NESTEROV_IMAGE_CACHE_BYTES", 2 << 30))


class _Files(torch.utils.data.Dataset):
    """Decode one image per item, to the folder's size and mode (in DataLoader worker processes)."""

    def __init__(self, items, size, mode):
        self.items, self.size, self.mode = items, size, mode

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        path, label = self.items[i]
        a = _decode(path, self.size, self.mode)
        return torch.from_numpy(a.transpose(2, 0, 1).copy()), label


def worker_error(e: Exception) -> Exception:
    """A DataError raised in a DataLoader worker, as the one line it was (the worker's traceback dropped)."""
    from . import DataError

    text = str(e).strip().splitlines()
    last = text[-1] if text else ""
    if "DataError: " in last:
        return DataError(last.split("DataError: ", 1)[1])
    return e


def start_method() -> str | None:
    """How DataLoader workers are started: ``$NESTEROV_DATA_START_METHOD`` (``fork``, ``forkserver`` or ``spawn``,
    as this platform offers them); unset or empty, None: multiprocessing's default (``fork`` on Linux before Python
    3.14, ``forkserver`` from 3.14; ``spawn`` on macOS and Windows)."""
    name = os.environ.get("NESTEROV_DATA_START_METHOD", "").strip()
    if not name:
        return None
    methods = multiprocessing.get_all_start_methods()
    if name not in methods:
        raise _error(f"$NESTEROV_DATA_START_METHOD: {name!r} is not a start method here; use one of "
                     f"{', '.join(methods)} (or leave it unset for the default)")
    return name


def _ignore_ctrl_c(worker_id: int) -> None:
    """A DataLoader worker ignores SIGINT: a terminal's Ctrl-C reaches the whole process group, and it is the main
    process that acts on it (the trainer stops at a step boundary) and shuts its workers down.  Forked workers
    would inherit the trainer's handler; those of ``forkserver`` and ``spawn`` start with Python's own, and a
    worker killed by it loses the batches it owed (the run then fails instead of checkpointing)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _collate(batch):
    return torch.stack([b[0] for b in batch]), torch.tensor([b[1] for b in batch], dtype=torch.int64)


class StreamedFolder:
    """An image folder too large to decode into memory: files are decoded per batch by DataLoader workers.

    Each rank decodes only its share of each global batch (the loop asks for the indices); the pixels, the
    order and the augmentation draws are those the cached path would use, so the two give the same run.
    """

    kind = "classify"
    image = True
    streamed = True
    default_augment = "crop"

    def __init__(self, name, train, test, num_classes, shape, mode, mean, std, notes):
        self.name, self.train, self.test, self.num_classes = name, train, test, num_classes
        self.input_shape, self.mode, self.mean, self.std, self.notes = shape, mode, mean, std, notes
        self.y = torch.tensor([c for _, c in train], dtype=torch.int64)
        self.y_test = torch.tensor([c for _, c in test], dtype=torch.int64)
        self.seconds, self.device = 0.0, torch.device("cpu")

    @classmethod
    def build(cls, path, train_dir, val_dir, classes, first):
        from . import SPLIT_SEED, TEST_FRACTION, carve_split

        items = [(f, c) for c, name in enumerate(classes) for f in _files(train_dir / name)]
        notes = [f"streamed: {len(items):,} training images decoded per batch by DataLoader workers "
                 f"(over the {stream_bytes():,}-byte cache limit, $NESTEROV_IMAGE_CACHE_BYTES)"]
        if val_dir is not None:
            test = [(f, c) for c, name in enumerate(classes) if (val_dir / name).is_dir()
                    for f in _files(val_dir / name)]
        else:
            idx = torch.arange(len(items))
            keep, _, out, _ = carve_split(idx, idx, TEST_FRACTION)
            items, test = [items[i] for i in keep.tolist()], [items[i] for i in out.tolist()]
            notes.append(f"{path} has no val/ or test/ folder: {len(test)} of {len(test) + len(items)} images "
                         f"({TEST_FRACTION:.0%}, fixed seed {SPLIT_SEED}) are held out as the test set")
        size, mode = first.shape[:2], ("L" if first.shape[2] == 1 else "RGB")
        shape = (first.shape[2], *size)
        xs = torch.stack([_Files(items, size, mode)[i][0] for i in stats_sample(len(items)).tolist()])
        mean, std = channel_stats(xs)
        return cls(f"imagefolder:{path}", items, test, len(classes), shape, mode, mean, std, notes)

    def to(self, device):
        self.device = torch.device(device)
        self.mean, self.std = self.mean.to(device), self.std.to(device)
        return self

    def describe(self) -> str:
        return (f"{self.name}: {len(self.train)} train / {len(self.test)} test, input {list(self.input_shape)}, "
                f"{self.num_classes} classes" + "".join(f"; {n}" for n in self.notes))

    def loader(self, batches, test: bool = False, workers: int | None = None):
        """Batches (uint8 images, labels) for an iterable of index lists, decoded by worker processes.

        ``workers`` processes (``$NESTEROV_DATA_WORKERS``, default half the cores, 1 to 4), started by
        :func:`start_method`; they ignore Ctrl-C (:func:`_ignore_ctrl_c`), the caller stops them.
        """
        if workers is None:
            workers = int(os.environ.get("NESTEROV_DATA_WORKERS", min(4, max(1, (os.cpu_count() or 2) // 2))))
        ds = _Files(self.test if test else self.train, self.input_shape[1:], self.mode)
        return torch.utils.data.DataLoader(ds, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
                                           pin_memory=self.device.type == "cuda",
                                           prefetch_factor=4 if workers else None,
                                           multiprocessing_context=start_method() if workers else None,
                                           worker_init_fn=_ignore_ctrl_c if workers else None)

    def inputs(self, xb, augment="none", gen=None, share=None):
        if augment == "auto":
            augment = self.default_augment
        if augment != "none":
            pad = max(1, xb.shape[-1] // 8) if "crop" in augment else 0
            xb = globals()["augment"](xb, gen, pad, "flip" in augment, share)
        return to_float(xb, self.mean, self.std)


# --------------------------------------------------------------------------------------------- CIFAR
class _Refused(pickle.UnpicklingError):
    pass


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR python batches hold: dicts, lists, str/bytes/numbers and numpy arrays.

    Any other global (``os.system``, ``builtins.eval``, ``subprocess.Popen``...) is refused, so a crafted
    file cannot run code.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # how Python 2 pickles of bytes are read with encoding="bytes"
        ("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor"),
        ("__builtin__", "object"), ("builtins", "object"),
    }

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise _Refused(f"global '{module}.{name}' is not allowed in a CIFAR batch")


def restricted_load(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            d = _RestrictedUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except _Refused as e:
        raise _error(f"{path}: refused: {e}") from None
    except Exception as e:  # noqa: BLE001 - truncated / not a pickle
        raise _error(f"{path}: not a CIFAR python batch ({type(e).__name__}: {e})") from None
    if not isinstance(d, dict):
        raise _error(f"{path}: not a CIFAR python batch (a {type(d).__name__}, expected a dict)")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    d = restricted_load(path)
    if "data" not in d or label_key not in d:
        raise _error(f"{path}: missing key(s) {sorted({'data', label_key} - set(d))}; found {sorted(map(str, d))}")
    x = np.asarray(d["data"])
    y = np.asarray(d[label_key])
    if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072:
        raise _error(f"{path}: 'data' must be a uint8 array of shape (N, 3072); got {x.dtype} {x.shape}")
    if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
        raise _error(f"{path}: '{label_key}' must hold {len(x)} integer labels; got {y.dtype} {y.shape}")
    return x.reshape(-1, 3, 32, 32), y.astype(np.int64)


def load_cifar(path: str, classes: int) -> dict:
    """CIFAR-10 (``data_batch_1..5``, ``test_batch``) or CIFAR-100 (``train``, ``test``) python batches."""
    name = f"cifar{classes}"
    if not path:
        raise _error(f"{name}: give the folder of the python batches, as in --dataset {name}:data/cifar-10-batches-py")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise _error(f"{path}: no such folder")
    if classes == 10:
        train_files, test_file, key = sorted(root.glob("data_batch_*")), root / "test_batch", "labels"
    else:
        train_files, test_file, key = [root / "train"], root / "test", "fine_labels"
    train_files = [f for f in train_files if f.is_file()]
    if not train_files:
        want = "data_batch_1 .. data_batch_5" if classes == 10 else "train"
        raise _error(f"{root}: no training batch ({want}); is this the python version of {name}?")
    parts = [_cifar_batch(f, key) for f in train_files]
    arrays = {"x": np.concatenate([p[0] for p in parts]), "y": np.concatenate([p[1] for p in parts])}
    if test_file.is_file():
        arrays["x_test"], arrays["y_test"] = _cifar_batch(test_file, key)
    for k in ("y", "y_test"):
        if k in arrays and arrays[k].size and (arrays[k].min() < 0 or arrays[k].max() >= classes):
            raise _error(f"{root}: labels must be in 0..{classes - 1}; found {arrays[k].min()}..{arrays[k].max()}")
    return arrays
