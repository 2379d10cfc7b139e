"""Small classification datasets that live on the device as whole tensors.

``load_dataset(spec)`` understands these specs:

- ``mnist1d``   MNIST-1D, generated offline by the ``mnist1d`` package (``make_dataset(get_dataset_args())``:
                4000 train / 1000 test, length-40 signals, 10 classes) and cached on disk after the first call;
- ``digits``    scikit-learn's bundled 8x8 digits (1797 images, pixels scaled to [0, 1]); a fixed 20 % test
                split is carved out (the same split for every run seed);
- ``npz:PATH``  a NumPy ``.npz`` file with arrays ``x`` (N, ...) and ``y`` (N,) integer labels, and optionally
                ``x_test`` / ``y_test``; without them a fixed 20 % test split is carved out and reported;
- ``imagefolder:PATH``  one folder of images per class (``train/`` and ``val/`` or ``test/`` below PATH, else a
                fixed 20 % carved split), decoded once with Pillow into a cached uint8 tensor;
- ``cifar10:PATH`` / ``cifar100:PATH``  the python-batches format, read by a restricted unpickler;
- ``text:PATH`` / ``pysrc``  bytes for next-byte prediction (:mod:`nesterov.data.text`).

Images stay uint8 ``(N, C, H, W)`` on the device; :meth:`Dataset.inputs` normalises a batch and augments it
(random crop with padding, horizontal flip; :data:`AUGMENTS`) as it is drawn.

Batches are drawn by indexing the device tensors with a permutation (see :func:`epoch_permutation`): no
per-sample Python, no DataLoader.  Bad data raises :class:`DataError` naming the file and the problem.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..train.names import AUGMENTS, DATASETS, PREFIXES, is_text, valid_spec  # noqa: F401 - re-exported

__all__ = [
    "AUGMENTS",
    "DATASETS",
    "DataError",
    "Dataset",
    "cache_dir",
    "carve_split",
    "epoch_permutation",
    "is_text",
    "load_dataset",
    "valid_spec",
]

TEST_FRACTION = 0.2  # carved when a dataset has no test split of its own
SPLIT_SEED = 0  # carving uses a fixed seed so every run seed sees the same test set


class DataError(ValueError):
    """A dataset spec or file that cannot be used; the message names the file and the problem."""


@dataclass
class Dataset:
    """Whole-tensor train/test split of a classification dataset."""

    name: str
    x: torch.Tensor  # (N, ...) float32
    y: torch.Tensor  # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    notes: list[str] = field(default_factory=list)  # e.g. "carved a 20 % test split"
    seconds: float = 0.0  # data preparation time (generation or cache load, checks, transfer)
    mean: torch.Tensor | None = None  # images: x is uint8 (N, C, H, W), normalised per channel when drawn
    std: torch.Tensor | None = None
    default_augment: str = "none"  # what --augment auto means for this dataset
    kind: str = "classify"

    @property
    def image(self) -> bool:
        return self.mean is not None

    def inputs(self, xb: torch.Tensor, augment: str = "none", gen: torch.Generator | None = None) -> torch.Tensor:
        """A batch as the model takes it: images augmented (``augment``, draws from ``gen``) and normalised."""
        if not self.image:
            return xb
        if augment == "auto":
            augment = self.default_augment
        if augment != "none":
            from .images import augment as _augment

            pad = max(1, xb.shape[-1] // 8) if "crop" in augment else 0
            xb = _augment(xb, gen, pad, "flip" in augment)
        from .images import to_float

        return to_float(xb, self.mean, self.std)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def to(self, device) -> "Dataset":
        return replace(self, x=self.x.to(device), y=self.y.to(device),
                       x_test=self.x_test.to(device), y_test=self.y_test.to(device),
                       mean=None if self.mean is None else self.mean.to(device),
                       std=None if self.std is None else self.std.to(device))

    def describe(self) -> str:
        s = (f"{self.name}: {len(self.y)} train / {len(self.y_test)} test, input {list(self.input_shape)}, "
             f"{self.num_classes} classes")
        return s + "".join(f"; {n}" for n in self.notes)


def cache_dir() -> Path:
    """``$NESTEROV_CACHE``, else ``$XDG_CACHE_HOME/nesterov``, else ``~/.cache/nesterov``."""
    if os.environ.get("NESTEROV_CACHE"):
        return Path(os.environ["NESTEROV_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nesterov"


def epoch_permutation(n: int, seed: int, epoch: int, device=None) -> torch.Tensor:
    """The order of the ``n`` training examples in ``epoch``: a pure function of ``(seed, epoch)``.

    Drawing it from its own generator (not the global RNG) is what makes a resumed run replay the same
    batches as an uninterrupted one.
    """
    state = np.random.SeedSequence([int(seed), int(epoch), 0x6E657374]).generate_state(2, np.uint64)
    g = torch.Generator().manual_seed(int(state[0] >> np.uint64(1)))
    return torch.randperm(n, generator=g).to(device)


def carve_split(x: torch.Tensor, y: torch.Tensor, fraction: float, seed: int = SPLIT_SEED):
    """Split ``(x, y)`` into ``(x_keep, y_keep, x_out, y_out)`` with ``round(fraction * N)`` held out.

    The split is a fixed-seed permutation, so the same call always holds out the same examples.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction!r}")
    n = len(y)
    n_out = max(1, int(round(fraction * n)))
    if n_out >= n:
        raise DataError(f"cannot hold out {n_out} of only {n} examples")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).to(x.device)
    out, keep = perm[:n_out], perm[n_out:]
    return x[keep], y[keep], x[out], y[out]


# --------------------------------------------------------------------------------------------- loaders


def _cached(name: str, package: str, build, log=None) -> dict[str, np.ndarray]:
    """``build()``'s arrays from ``cache_dir()/name-<package version>.npz``, building and caching on a miss.

    Keyed by the version of the package that makes the data, so a hit does not import it (mnist1d pulls in
    scipy and matplotlib, scikit-learn is heavy: ~1 s each).
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        key = version(package)
    except PackageNotFoundError:
        raise DataError(f"{name}: the {package} package is not installed (pip install {package})") from None
    path = cache_dir() / f"{name}-{key}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return {k: f[k] for k in f.files}
        except Exception:  # a corrupt cache file is rebuilt, not fatal
            pass
    if log is not None:
        log(f"data   generating {name} with the {package} package (once: cached in {path})")
    arrays = build()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:  # an unwritable cache only costs rebuilding next time
        pass
    return arrays


def _mnist1d_arrays(log=None) -> dict[str, np.ndarray]:
    def build():
        from mnist1d.data import get_dataset_args, make_dataset  # never get_dataset(): it downloads

        d = make_dataset(get_dataset_args())
        return {"x": d["x"].astype(np.float32), "y": d["y"].astype(np.int64),
                "x_test": d["x_test"].astype(np.float32), "y_test": d["y_test"].astype(np.int64)}

    return _cached("mnist1d", "mnist1d", build, log)


def _digits_arrays(log=None) -> dict[str, np.ndarray]:
    def build():
        from sklearn.datasets import load_digits

        d = load_digits()
        return {"x": (d.data / 16.0).astype(np.float32), "y": d.target.astype(np.int64)}

    return _cached("digits", "scikit-learn", build, log)


def _npz_arrays(path: str) -> dict[str, np.ndarray]:
    if not path:
        raise DataError("npz: give a file, as in --dataset npz:data/train.npz")
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{path}: no such file")
    import zipfile

    if not zipfile.is_zipfile(p):  # else numpy reads it as a pickle and says so, which misleads
        raise DataError(f"{path}: not a readable .npz file (not a zip archive; write it with numpy.savez)")
    try:
        f = np.load(p, allow_pickle=False)
    except Exception as e:
        raise DataError(f"{path}: not a readable .npz file ({e})") from None
    with f:
        keys = set(f.files)
        missing = {"x", "y"} - keys
        if missing:
            raise DataError(f"{path}: missing array(s) {sorted(missing)}; found {sorted(keys)} "
                            "(expected x, y and optionally x_test, y_test)")
        if ("x_test" in keys) != ("y_test" in keys):
            raise DataError(f"{path}: has only one of x_test / y_test; give both or neither")
        arrays = {}
        for k in ("x", "y", "x_test", "y_test"):
            if k in keys:
                try:
                    arrays[k] = f[k]
                except ValueError:  # numpy refuses object arrays without allow_pickle, which could run code
                    raise DataError(f"{path}: array {k!r} holds Python objects (dtype=object), which are not "
                                    "loaded (that would need pickle); save it as a numeric array") from None
        return arrays


def _check(arrays: dict[str, np.ndarray], where: str) -> None:
    for xk, yk in (("x", "y"), ("x_test", "y_test")):
        if xk not in arrays:
            continue
        x, y = arrays[xk], arrays[yk]
        if x.ndim < 2:
            raise DataError(f"{where}: {xk} must have shape (N, features...), got {x.shape}")
        if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
            raise DataError(f"{where}: {xk} must be numeric, got dtype {x.dtype}")
        if y.ndim != 1:
            raise DataError(f"{where}: {yk} must be a 1-D array of labels, got shape {y.shape}")
        if len(x) != len(y):
            raise DataError(f"{where}: shape mismatch: {xk} has {len(x)} rows but {yk} has {len(y)}")
        if len(y) == 0:
            raise DataError(f"{where}: {xk} is empty")
        if np.issubdtype(y.dtype, np.floating):
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise DataError(f"{where}: {yk} must hold integer class labels, got non-integer values")
        elif not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where}: {yk} must hold integer class labels, got dtype {y.dtype}")
        if np.issubdtype(x.dtype, np.floating) and not np.all(np.isfinite(x)):
            bad = int(np.count_nonzero(~np.isfinite(x)))
            raise DataError(f"{where}: {xk} has {bad} NaN/inf feature value(s)")
        if y.min() < 0:
            raise DataError(f"{where}: label out of range in {yk}: {int(y.min())} (labels must be 0..C-1)")
    if "x_test" in arrays and arrays["x_test"].shape[1:] != arrays["x"].shape[1:]:
        raise DataError(f"{where}: shape mismatch: x has examples of shape {arrays['x'].shape[1:]} "
                        f"but x_test has {arrays['x_test'].shape[1:]}")
    if "y_test" in arrays:
        c = int(arrays["y"].max()) + 1
        if int(arrays["y_test"].max()) >= c:
            raise DataError(f"{where}: label out of range in y_test: {int(arrays['y_test'].max())} "
                            f"but y only has classes 0..{c - 1}")


def load_dataset(spec: str, device="cpu", log=None):
    """Load a dataset (see the module docstring) as whole tensors on ``device``.

    ``log``: called with a line before work that takes a while (generating a dataset, reading files).

    Returns a :class:`Dataset` (classification) or a :class:`~nesterov.data.text.TextData` (``text:``, ``pysrc``).
    """
    t0 = time.perf_counter()
    if not isinstance(spec, str) or not spec:
        raise DataError(f"dataset must be one of {', '.join(DATASETS)}; got {spec!r}")
    notes: list[str] = []
    if log is not None and spec not in ("mnist1d", "digits"):
        log(f"data   reading {spec}")
    if is_text(spec):
        from .text import load_pysrc, load_text

        d = load_pysrc() if spec == "pysrc" else load_text(spec[5:])
        d = d.to(device)
        d.seconds = time.perf_counter() - t0
        return d
    image = False
    if spec == "mnist1d":
        arrays, where = _mnist1d_arrays(log), "mnist1d"
    elif spec == "digits":
        arrays, where = _digits_arrays(log), "digits"
    elif spec.startswith("npz:"):
        where = spec[4:]
        arrays = _npz_arrays(where)
    elif spec.startswith("imagefolder:"):
        from .images import load_imagefolder

        where = spec[len("imagefolder:"):]
        arrays, classes = load_imagefolder(where)
        if not isinstance(arrays, dict):  # too large to cache: streamed from the files
            arrays.to(device)
            arrays.seconds = time.perf_counter() - t0
            return arrays
        image = True
    elif spec.startswith(("cifar10:", "cifar100:")):
        from .images import load_cifar

        k = spec.index(":")
        where = spec[k + 1:]
        classes = range(int(spec[5:k]))
        arrays, image = load_cifar(where, len(classes)), True
    else:
        raise DataError(f"unknown dataset {spec!r}; valid: {', '.join(DATASETS)}")
    _check(arrays, where)
    xdtype = torch.uint8 if image else torch.float32
    x = torch.as_tensor(arrays["x"], dtype=xdtype)
    y = torch.as_tensor(np.asarray(arrays["y"]).astype(np.int64))
    if "x_test" in arrays:
        xt = torch.as_tensor(arrays["x_test"], dtype=xdtype)
        yt = torch.as_tensor(np.asarray(arrays["y_test"]).astype(np.int64))
    else:
        x, y, xt, yt = carve_split(x, y, TEST_FRACTION)
        what = ("the digits dataset has no separate test split" if spec == "digits" else
                f"{where} has no val/ or test/ folder" if spec.startswith("imagefolder:") else
                f"{where} has no x_test / y_test")
        notes.append(f"{what}: {len(yt)} of {len(yt) + len(y)} {'images' if image else 'examples'} "
                     f"({TEST_FRACTION:.0%}, fixed seed {SPLIT_SEED}) are held out as the test set")
    num_classes = int(max(int(y.max()), int(yt.max()))) + 1
    if num_classes < 2:
        raise DataError(f"{where}: labels hold a single class; need at least 2")
    ds = Dataset(spec, x, y, xt, yt, num_classes, notes)
    if image:
        from .images import channel_stats

        ds.num_classes = max(num_classes, len(classes))
        ds.mean, ds.std = channel_stats(x)
        ds.default_augment = "crop-flip" if spec.startswith("cifar") else "crop"
    ds = ds.to(device)
    ds.seconds = time.perf_counter() - t0
    return ds
