"""Tests of qlib.methods.storage: code widths, and the sparse storage of pruned tensors."""

import numpy as np
import pytest

import qlib
from qlib.methods.storage import pack_sparse, storage_bits, unpack_sparse


def test_storage_bits_is_the_true_width():
    assert [storage_bits(b) for b in range(1, 9)] == [1, 2, 3, 4, 5, 6, 7, 8]
    with pytest.raises(ValueError, match="bits"):
        storage_bits(9)
    with pytest.raises(TypeError, match="bits"):
        storage_bits(4.0)


@pytest.mark.parametrize("bits", [1, 2, 3, 4, 5, 6, 7, 8])
def test_pack_sparse_round_trip_and_size(bits):
    rng = np.random.default_rng(bits)
    lo, hi = qlib.integer_range(bits)
    q = rng.integers(lo, hi + 1, size=(7, 13)).astype(np.int8)
    q[rng.random(q.shape) < 0.7] = 0
    mask, values = pack_sparse(q, bits)
    nnz = int(np.count_nonzero(q))
    assert mask.dtype == values.dtype == np.uint8
    assert mask.size == -(-q.size // 8)
    assert values.size == -(-nnz * bits // 8) == qlib.packed_nbytes(nnz, bits)
    np.testing.assert_array_equal(unpack_sparse(mask, values, bits, q.shape), q)


def test_pack_sparse_edge_cases():
    z = np.zeros((3, 5), dtype=np.int8)
    mask, values = pack_sparse(z, 4)
    assert values.size == 0 and mask.size == 2
    np.testing.assert_array_equal(unpack_sparse(mask, values, 4, (3, 5)), z)
    with pytest.raises(ValueError, match="4-bit"):
        pack_sparse(np.array([8, 0], dtype=np.int8), 4)
    with pytest.raises(TypeError, match="integers"):
        pack_sparse(np.array([1.0, 0.0]), 4)
    with pytest.raises(ValueError, match="mask"):
        unpack_sparse(np.zeros(1, dtype=np.uint8), np.zeros(0, dtype=np.uint8), 4, (3, 5))
    np.testing.assert_array_equal(unpack_sparse(*pack_sparse(np.array([0, -3, 0]), 3), 3, 3), [0, -3, 0])


def test_still_reachable_from_ptq_users():
    assert qlib.storage_bits is storage_bits and qlib.pack_sparse is pack_sparse and qlib.unpack_sparse is unpack_sparse


def test_sparse_nbytes_counts_bitmask_and_csr_fields():
    import qlib
    from qlib.methods.storage import sparse_nbytes

    rng = np.random.default_rng(0)
    w = rng.normal(size=(64, 64)).astype(np.float32)
    for s in (0.5, 0.9, 0.95):
        w_p, mask = qlib.magnitude_prune(w, s)
        kept = w_p[mask].astype(np.float32)
        bitmask = qlib.size_bytes(np.packbits(mask), kept)
        csr = qlib.size_bytes(kept, np.nonzero(mask)[1].astype(np.uint8),
                              np.zeros(65, dtype=np.uint16))
        assert sparse_nbytes(mask) == (bitmask, csr)
    wide = np.zeros((2, 300), dtype=bool)
    wide[0, 299] = True  # column index 299 needs uint16; 600 entries need uint16 offsets
    assert sparse_nbytes(wide, value_bytes=1) == (75 + 1, 1 + 2 + 3 * 2)
    with pytest.raises(TypeError, match="bool array"):
        sparse_nbytes(np.ones((2, 2)))
    with pytest.raises(ValueError, match="2-D"):
        sparse_nbytes(np.ones(4, dtype=bool))
