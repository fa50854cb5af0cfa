"""tf.data input pipelines: feature batches taken from the arrays in place, photos streamed from disk
through the one decoder (the pixels serving sees), unreadable files skipped."""

from __future__ import annotations

import numpy as np

from clothclf.data.datasets import Split, create_dataset
from clothclf.data.images import load_image
from clothclf.data.pipeline import make_dataset, make_file_dataset


def _epoch(dataset) -> list[tuple[np.ndarray, ...]]:
    return [tuple(np.asarray(t) for t in batch) for batch in dataset]


def test_feature_batches_take_every_row_once_per_epoch_in_a_new_order():
    features = np.arange(40, dtype=np.float32).reshape(20, 2)
    labels = np.arange(20) % 3
    dataset = make_dataset(
        features, labels, 3, batch_size=6, shuffle=True, sample_weights={0: 1.0, 1: 2.0, 2: 0.5}
    )
    orders = []
    for _ in range(2):
        batches = _epoch(dataset)
        assert [len(b[0]) for b in batches] == [6, 6, 6, 2]
        x, y, w = (np.concatenate(part) for part in zip(*batches))
        rows = (x[:, 0] / 2).astype(int)
        assert sorted(rows) == list(range(20))
        np.testing.assert_array_equal(x, features[rows])
        np.testing.assert_array_equal(y.argmax(axis=1), labels[rows])
        np.testing.assert_array_equal(w, np.asarray([1.0, 2.0, 0.5], np.float32)[labels[rows]])
        orders.append(rows.tolist())
    assert orders[0] != orders[1] and orders[0] != list(range(20))
    in_order = _epoch(make_dataset(features, labels, 3, batch_size=8))
    np.testing.assert_array_equal(np.concatenate([b[0] for b in in_order]), features)


def test_photos_stream_from_disk_decoded_as_serving_decodes_them(synthetic_dataset, tmp_path):
    split = create_dataset(synthetic_dataset).validation
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with_broken = Split(
        (*split.files[:5], broken, *split.files[5:]), (*split.labels[:5], 0, *split.labels[5:])
    )
    batches = _epoch(make_file_dataset(with_broken, 32, 3, batch_size=5))
    x, y = (np.concatenate(part) for part in zip(*batches))
    assert len(x) == len(split) and x.dtype == np.float32  # the unreadable file is skipped
    expected = np.stack([load_image(path, 32) for path in split.files]).astype(np.float32)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y.argmax(axis=1), split.labels)
    shuffled = _epoch(make_file_dataset(split, 32, 3, batch_size=5, shuffle=True, seed=1))
    x_shuffled = np.concatenate([b[0] for b in shuffled])
    assert sorted(map(bytes, x_shuffled.astype(np.uint8))) == sorted(map(bytes, expected.astype(np.uint8)))
    assert not np.array_equal(x_shuffled, expected)
