import numpy as np
import pytest
import torch

from nesterov.data import DataError, carve_split, epoch_permutation, load_dataset


@pytest.fixture(autouse=True, scope="module")
def _private_cache(tmp_path_factory):
    """Datasets are cached in a temporary directory, not the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NESTEROV_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def test_mnist1d_generated_offline_and_cached(tmp_path, monkeypatch):
    import mnist1d.data

    monkeypatch.setenv("NESTEROV_CACHE", str(tmp_path))
    monkeypatch.setattr(mnist1d.data, "get_dataset", lambda *a, **k: pytest.fail("get_dataset downloads"))
    ds = load_dataset("mnist1d")
    assert ds.x.shape == (4000, 40) and ds.x_test.shape == (1000, 40)
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert ds.num_classes == 10 and ds.notes == []
    cached = list(tmp_path.glob("mnist1d-*.npz"))
    assert len(cached) == 1
    monkeypatch.setattr(mnist1d.data, "make_dataset", lambda *a, **k: pytest.fail("cache not used"))
    again = load_dataset("mnist1d")
    assert torch.equal(again.x, ds.x) and torch.equal(again.y_test, ds.y_test)


def test_digits_carves_a_fixed_test_split():
    a, b = load_dataset("digits"), load_dataset("digits")
    assert len(a.y) + len(a.y_test) == 1797 and len(a.y_test) == 359
    assert torch.equal(a.y_test, b.y_test) and torch.equal(a.x, b.x)
    assert a.x.max() <= 1.0 and a.num_classes == 10
    # a fact of the dataset, not a split the user forgot to give
    assert a.notes == ["the digits dataset has no separate test split: 359 of 1797 examples (20%, fixed seed 0) "
                       "are held out as the test set"]


def _npz(tmp_path, name="d.npz", **arrays):
    path = tmp_path / name
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_npz_with_and_without_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(50, 3, 7)).astype(np.float32), rng.integers(0, 4, 50)
    ds = load_dataset(_npz(tmp_path, x=x, y=y, x_test=x[:10], y_test=y[:10]))
    assert ds.input_shape == (3, 7) and len(ds.y_test) == 10 and ds.notes == []
    ds = load_dataset(_npz(tmp_path, "b.npz", x=x, y=y.astype(np.float64)))
    assert len(ds.y_test) == 10 and len(ds.y) == 40
    assert ds.notes == [f"{tmp_path / 'b.npz'} has no x_test / y_test: 10 of 50 examples (20%, fixed seed 0) are "
                        "held out as the test set"]


@pytest.mark.parametrize("arrays, problem", [
    ({"features": np.zeros((4, 2)), "y": np.zeros(4)}, "missing array(s) ['x']"),
    ({"x": np.zeros((4, 2)), "y": np.array([0, 1, -1, 0])}, "label out of range"),
    ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 1, 0]), "x_test": np.zeros((2, 2)), "y_test": np.array([0, 5])},
     "label out of range in y_test"),
    ({"x": np.array([[0.0, np.nan]] * 4), "y": np.array([0, 1, 1, 0])}, "NaN/inf"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(5, dtype=int)}, "shape mismatch"),
    ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 1, 0]), "x_test": np.zeros((2, 3)), "y_test": np.array([0, 1])},
     "shape mismatch"),
    ({"x": np.zeros((4, 2)), "y": np.array([0.5, 1, 1, 0])}, "integer class labels"),
    ({"x": np.zeros((4, 2)), "y": np.array([0, 1, 1, 0]), "x_test": np.zeros((2, 2))}, "only one of"),
    ({"x": np.zeros(4), "y": np.array([0, 1, 1, 0])}, "shape (N, features...)"),
    ({"x": np.array([[0.0, 1.0], [2.0]], dtype=object), "y": np.array([0, 1])}, "'x' holds Python objects"),
])
def test_npz_bad_data_names_file_and_problem(tmp_path, arrays, problem):
    spec = _npz(tmp_path, **arrays)
    with pytest.raises(DataError) as e:
        load_dataset(spec)
    assert spec[4:] in str(e.value) and problem in str(e.value)


def test_bad_specs(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    (tmp_path / "junk.npz").write_text("not a zip")
    with pytest.raises(DataError, match="junk.npz: not a readable"):
        load_dataset(f"npz:{tmp_path / 'junk.npz'}")
    with pytest.raises(DataError, match="valid: mnist1d, digits, npz:PATH"):
        load_dataset("cifar10")


def test_epoch_permutation_is_a_function_of_seed_and_epoch():
    a = epoch_permutation(100, 3, 7)
    assert torch.equal(a, epoch_permutation(100, 3, 7))
    assert sorted(a.tolist()) == list(range(100))
    assert not torch.equal(a, epoch_permutation(100, 3, 8))
    assert not torch.equal(a, epoch_permutation(100, 4, 7))
    torch.manual_seed(0)
    b = epoch_permutation(100, 3, 7)
    torch.manual_seed(1)
    assert torch.equal(b, epoch_permutation(100, 3, 7))  # independent of the global RNG


def test_carve_split_disjoint_and_fixed():
    x = torch.arange(20.0).unsqueeze(1)
    y = torch.arange(20)
    xa, ya, xb, yb = carve_split(x, y, 0.25)
    assert len(yb) == 5 and len(ya) == 15
    assert set(ya.tolist()).isdisjoint(yb.tolist())
    assert torch.equal(yb, carve_split(x, y, 0.25)[3])
