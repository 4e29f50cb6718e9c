"""Tests of qlib.methods.bit_allocation: per-layer sensitivity and knapsack bit allocation."""

import itertools
import math

import numpy as np
import pytest

import qlib
from qlib.methods.bit_allocation import (
    BitAllocation,
    LayerSensitivity,
    allocate_bits,
    allocation_frontier,
    layer_sensitivity,
    pareto_front,
)

# A hand-solved table: 3 layers x 3 widths. Sizes are exact bytes, costs loss increases.
SIZES = {
    "fc1": {2: 200, 4: 400, 8: 800},
    "fc2": {2: 20, 4: 40, 8: 80},
    "fc3": {2: 40, 4: 80, 8: 160},
}
SENS = {
    "fc1": {2: 5.0, 4: 1.0, 8: 0.0},
    "fc2": {2: 3.0, 4: 0.2, 8: 0.0},
    "fc3": {2: 2.0, 4: 0.5, 8: 0.0},
}


def brute_force(sens, sizes, budget):
    """(cost, nbytes, allocation) of the cheapest allocation within budget, by enumeration; None if none fits."""
    layers = list(sens)
    best = None
    for combo in itertools.product(*(sorted(sens[layer]) for layer in layers)):
        nbytes = sum(sizes[layer][b] for layer, b in zip(layers, combo))
        cost = sum(sens[layer][b] for layer, b in zip(layers, combo))
        if nbytes <= budget and (best is None or cost < best[0]):
            best = (cost, nbytes, dict(zip(layers, combo)))
    return best


def brute_frontier(sens, sizes):
    """The set of (nbytes, cost) of all non-dominated allocations, by enumeration."""
    layers = list(sens)
    pts = set()
    for combo in itertools.product(*(sorted(sens[layer]) for layer in layers)):
        pts.add((sum(sizes[layer][b] for layer, b in zip(layers, combo)),
                 sum(sens[layer][b] for layer, b in zip(layers, combo))))
    return sorted((b, c) for b, c in pts
                  if not any(b2 <= b and c2 <= c and (b2 < b or c2 < c) for b2, c2 in pts))


def random_tables(rng, n_layers, n_widths, *, monotone=True):
    widths = sorted(rng.choice(np.arange(2, 9), size=n_widths, replace=False).tolist())
    sens, sizes = {}, {}
    for k in range(n_layers):
        n = int(rng.integers(10, 500))
        if monotone:  # realistic: more bits, more bytes, less loss
            sizes[f"l{k}"] = {b: -(-n * b // 8) + 4 for b in widths}
            sens[f"l{k}"] = {b: float(rng.uniform(0.1, 3.0)) * 4.0 ** -b for b in widths}
        else:  # arbitrary tables: the solver must not rely on any order
            sizes[f"l{k}"] = {b: int(rng.integers(0, 300)) for b in widths}
            sens[f"l{k}"] = {b: float(rng.normal()) for b in widths}
    return sens, sizes


# ---------------------------------------------------------------------------
# Hand-solved example
# ---------------------------------------------------------------------------


def test_hand_solved_greedy_suboptimal():
    # All at 8 bits: 800 + 80 + 160 = 1040 bytes, cost 0. Budget 1000: save >= 40 bytes.
    # Exact: the only allocations cheaper than 0.2 are all-8 (1040 bytes, too big); fc2 -> 4 saves exactly 40
    # at cost 0.2, so the optimum is {fc1: 8, fc2: 4, fc3: 8}, 1000 bytes, cost 0.2.
    # Greedy: cost per byte saved of the moves from all-8: fc1 8->4 1/400 = 0.0025, fc2 8->4 0.2/40 = 0.005,
    # fc3 8->4 0.5/80 = 0.00625 (others larger). It takes fc1 8->4 -> 640 bytes, within budget, cost 1.0.
    exact = allocate_bits(SENS, SIZES, 1000)
    assert exact.allocation == {"fc1": 8, "fc2": 4, "fc3": 8}
    assert exact.nbytes == 1000 and exact.cost == pytest.approx(0.2)
    assert exact.method == "exact" and exact.budget == 1000 and exact.gap == 0.0
    greedy = allocate_bits(SENS, SIZES, 1000, method="greedy")
    assert greedy.allocation == {"fc1": 4, "fc2": 8, "fc3": 8}
    assert greedy.nbytes == 640 and greedy.cost == pytest.approx(1.0)
    assert greedy.optimal_cost == pytest.approx(0.2) and greedy.gap == pytest.approx(0.8)


def test_hand_solved_greedy_optimal():
    # Budget 300 (minimum 200 + 20 + 40 = 260). fc1 must be at 2 bits (else >= 400 bytes); fc2 + fc3 <= 100 bytes:
    # (20, 80) costs 3.0 + 0.5 = 3.5, (40, 40) costs 0.2 + 2.0 = 2.2, (20, 40) costs 5.0: optimum
    # {fc1: 2, fc2: 4, fc3: 2}, 280 bytes, cost 5 + 0.2 + 2 = 7.2.
    # Greedy trace: fc1 8->4 (0.0025; 640 B), fc2 8->4 (0.005; 600 B), fc3 8->4 (0.00625; 520 B),
    # fc1 4->2 (4/200 = 0.02; 320 B), fc3 4->2 (1.5/40 = 0.0375 < fc2's 2.8/20; 280 B): the same optimum.
    for method in ("exact", "greedy"):
        r = allocate_bits(SENS, SIZES, 300, method=method)
        assert r.allocation == {"fc1": 2, "fc2": 4, "fc3": 2}
        assert r.nbytes == 280 and r.cost == pytest.approx(7.2) and r.gap == pytest.approx(0.0)
    # The generous budget: everything at 8 bits, cost 0.
    assert allocate_bits(SENS, SIZES, 10**6).allocation == {"fc1": 8, "fc2": 8, "fc3": 8}
    assert allocate_bits(SENS, SIZES, 10**6, method="greedy").nbytes == 1040
    # The smallest budget: everything at 2 bits.
    r = allocate_bits(SENS, SIZES, 260)
    assert r.allocation == {"fc1": 2, "fc2": 2, "fc3": 2} and r.cost == pytest.approx(10.0)


def test_hand_solved_frontier():
    front = allocation_frontier(SENS, SIZES)
    assert [(f.nbytes, pytest.approx(f.cost)) for f in front] == brute_frontier(SENS, SIZES)
    assert front[0].allocation == {"fc1": 2, "fc2": 2, "fc3": 2}
    assert front[-1].allocation == {"fc1": 8, "fc2": 8, "fc3": 8} and front[-1].cost == 0.0
    assert all(isinstance(f, BitAllocation) and f.budget is None for f in front)


# ---------------------------------------------------------------------------
# Against brute force on random tables
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("monotone", [True, False])
def test_exact_equals_brute_force(monotone):
    rng = np.random.default_rng(0)
    for trial in range(60):
        n_layers, n_widths = int(rng.integers(1, 7)), int(rng.integers(1, 5))
        sens, sizes = random_tables(rng, n_layers, n_widths, monotone=monotone)
        lo = sum(min(s.values()) for s in sizes.values())
        hi = sum(max(s.values()) for s in sizes.values())
        for budget in np.unique(rng.integers(lo, hi + 2, size=4)).tolist() + [lo]:
            want = brute_force(sens, sizes, budget)
            got = allocate_bits(sens, sizes, budget)
            assert got.cost == pytest.approx(want[0], abs=1e-12), (trial, budget)
            assert got.nbytes <= budget
            # The reported totals are those of the reported allocation.
            assert got.nbytes == sum(sizes[layer][b] for layer, b in got.allocation.items())
            assert got.cost == pytest.approx(sum(sens[layer][b] for layer, b in got.allocation.items()))
            greedy = allocate_bits(sens, sizes, budget, method="greedy")
            assert greedy.nbytes <= budget
            assert greedy.cost >= want[0] - 1e-12
            assert greedy.optimal_cost == pytest.approx(want[0], abs=1e-12) and greedy.gap >= -1e-12


@pytest.mark.parametrize("monotone", [True, False])
def test_frontier_equals_brute_force(monotone):
    rng = np.random.default_rng(1)
    for _ in range(30):
        sens, sizes = random_tables(rng, int(rng.integers(1, 7)), int(rng.integers(1, 5)), monotone=monotone)
        front = allocation_frontier(sens, sizes)
        want = brute_frontier(sens, sizes)
        assert [f.nbytes for f in front] == [b for b, _ in want]
        np.testing.assert_allclose([f.cost for f in front], [c for _, c in want], atol=1e-12)
        # allocate_bits(budget) is the last frontier point within the budget.
        for f in front:
            assert allocate_bits(sens, sizes, f.nbytes).cost == pytest.approx(f.cost, abs=1e-12)


def test_monotone_in_budget():
    rng = np.random.default_rng(2)
    for _ in range(20):
        sens, sizes = random_tables(rng, 5, 4, monotone=bool(rng.integers(2)))
        lo = sum(min(s.values()) for s in sizes.values())
        hi = sum(max(s.values()) for s in sizes.values())
        costs = [allocate_bits(sens, sizes, b).cost for b in np.linspace(lo, hi + 10, 40)]
        assert all(b <= a + 1e-12 for a, b in zip(costs, costs[1:]))


def test_greedy_is_often_suboptimal_but_never_better():
    rng = np.random.default_rng(3)
    gaps = []
    for _ in range(40):
        sens, sizes = random_tables(rng, 6, 4)
        lo = sum(min(s.values()) for s in sizes.values())
        hi = sum(max(s.values()) for s in sizes.values())
        budget = int(rng.integers(lo, hi + 1))
        gaps.append(allocate_bits(sens, sizes, budget, method="greedy").gap)
    assert min(gaps) >= -1e-12 and max(gaps) > 0


def test_large_problem_is_exact_against_a_byte_dp():
    # 20 layers x 6 widths, a budget of ~2 MB: compare with a plain DP over bytes in units of 1 kB
    # (sizes are multiples of 1024 here, so that DP is exact too).
    rng = np.random.default_rng(4)
    widths = [2, 3, 4, 5, 6, 8]
    sens, sizes = {}, {}
    for k in range(20):
        n_kb = int(rng.integers(8, 64))  # kB per bit of width: up to 512 kB per layer at 8 bits
        sizes[f"l{k}"] = {b: 1024 * n_kb * b for b in widths}
        sens[f"l{k}"] = {b: float(rng.uniform(0.1, 3.0)) * 4.0 ** -b for b in widths}
    budget = int(0.6 * sum(max(s.values()) for s in sizes.values()))
    got = allocate_bits(sens, sizes, budget)
    cap = budget // 1024
    best = np.full(cap + 1, np.inf)
    best[0] = 0.0
    for layer in sens:
        new = np.full(cap + 1, np.inf)
        for b in widths:
            w = sizes[layer][b] // 1024
            new[w:] = np.minimum(new[w:], best[: cap + 1 - w] + sens[layer][b])
        best = new
    assert got.cost == pytest.approx(best.min(), rel=1e-12) and got.nbytes <= budget
    greedy = allocate_bits(sens, sizes, budget, method="greedy")
    assert greedy.optimal_cost == pytest.approx(got.cost)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def test_budget_too_small():
    with pytest.raises(ValueError, match="at least 260 bytes"):
        allocate_bits(SENS, SIZES, 259)
    with pytest.raises(ValueError, match="at least 260 bytes"):
        allocate_bits(SENS, SIZES, 259, method="greedy")
    with pytest.raises(ValueError, match="budget"):
        allocate_bits(SENS, SIZES, -1)
    with pytest.raises(TypeError, match="budget"):
        allocate_bits(SENS, SIZES, "1000")


def test_mismatched_tables():
    with pytest.raises(ValueError, match=r"same layers: sizes lacks \['fc3'\]$"):
        allocate_bits(SENS, {k: v for k, v in SIZES.items() if k != "fc3"}, 1000)
    with pytest.raises(ValueError, match=r"same layers: sizes has extra \['fc4'\]$"):
        allocate_bits(SENS, {**SIZES, "fc4": {2: 1}}, 1000)
    with pytest.raises(ValueError, match=r"sensitivity\['fc2'\] has widths \[2, 4, 8\] but sizes\['fc2'\] has \[4, "):
        allocate_bits(SENS, {**SIZES, "fc2": {4: 40, 8: 80}}, 1000)
    with pytest.raises(ValueError, match="at least one layer"):
        allocate_bits({}, {}, 1000)
    with pytest.raises(ValueError, match=r"sensitivity\['fc1'\] must have at least one bit width"):
        allocate_bits({**SENS, "fc1": {}}, {**SIZES, "fc1": {}}, 1000)
    with pytest.raises(TypeError, match="sensitivity must be a mapping"):
        allocate_bits([1, 2], SIZES, 1000)
    with pytest.raises(TypeError, match=r"sizes\['fc1'\] must be a mapping"):
        allocate_bits(SENS, {**SIZES, "fc1": [200, 400, 800]}, 1000)
    with pytest.raises(TypeError, match=r"sizes\['fc1'\]\[4\] must be an integer"):
        allocate_bits(SENS, {**SIZES, "fc1": {2: 200, 4: 400.5, 8: 800}}, 1000)
    with pytest.raises(ValueError, match=r"sizes\['fc1'\]\[2\] must be an integer >= 0"):
        allocate_bits(SENS, {**SIZES, "fc1": {2: -1, 4: 400, 8: 800}}, 1000)
    with pytest.raises(ValueError, match=r"sensitivity\['fc1'\]\[8\] must be a finite"):
        allocate_bits({**SENS, "fc1": {2: 5.0, 4: 1.0, 8: math.nan}}, SIZES, 1000)
    with pytest.raises(TypeError, match="a bit width of sensitivity"):
        allocate_bits({**SENS, "fc1": {"2": 5.0}}, {**SIZES, "fc1": {"2": 200}}, 1000)
    with pytest.raises(ValueError, match="method must be one of"):
        allocate_bits(SENS, SIZES, 1000, method="ilp")


def test_pareto_front():
    pts = [(100, 0.5), (50, 0.9), (120, 0.5), (60, 1.0), (200, 0.1), (50, 0.9), (30, 2.0)]
    np.testing.assert_array_equal(pareto_front(pts), [6, 1, 0, 4])
    rng = np.random.default_rng(5)
    for _ in range(20):
        p = np.column_stack([rng.integers(0, 20, 30), rng.integers(0, 20, 30)]).astype(float)
        idx = pareto_front(p)
        want = sorted({(a, b) for a, b in map(tuple, p)
                       if not any(a2 <= a and b2 <= b and (a2 < a or b2 < b) for a2, b2 in p)})
        assert [tuple(p[i]) for i in idx] == want
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        pareto_front([1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        pareto_front([(1, math.inf)])
    with pytest.raises(TypeError, match="numeric"):
        pareto_front([("a", "b")])


# ---------------------------------------------------------------------------
# layer_sensitivity
# ---------------------------------------------------------------------------


def test_layer_sensitivity_quadratic():
    # A quadratic model of the loss: layer l at b bits adds curvature[l] * step(b)**2 with step(b) = 2 ** -b,
    # plus a cross term between fc1 and fc2 that one-layer-at-a-time measurement cannot see.
    curvature = {"fc1": 8.0, "fc2": 2.0, "fc3": 0.5}
    calls = []

    def evaluate(widths):
        calls.append(dict(widths))
        step = {layer: 2.0 ** -b for layer, b in widths.items()}
        loss = 0.25 + sum(curvature[layer] * s**2 for layer, s in step.items())
        return loss + 3.0 * step.get("fc1", 0.0) * step.get("fc2", 0.0)

    s = layer_sensitivity(evaluate, ["fc1", "fc2", "fc3"], [2, 4, 8])
    assert len(calls) == 3 * 3 + 1 and calls[0] == {}
    assert calls[1:] == [{layer: b} for layer in ("fc1", "fc2", "fc3") for b in (2, 4, 8)]
    assert isinstance(s, LayerSensitivity) and s.baseline == 0.25
    for layer in curvature:
        for b in (2, 4, 8):
            assert s[layer][b] == pytest.approx(curvature[layer] * 4.0**-b, rel=1e-12)
            assert s.loss[layer][b] == pytest.approx(0.25 + curvature[layer] * 4.0**-b, rel=1e-12)
    assert list(s) == ["fc1", "fc2", "fc3"] and dict(s["fc3"]) == pytest.approx({2: 0.5 / 16, 4: 0.5 / 256,
                                                                               8: 0.5 / 65536})
    with pytest.raises(TypeError):
        s["fc1"][2] = 0.0  # read-only
    # A known baseline saves the call; the table is the same.
    calls.clear()
    s2 = layer_sensitivity(evaluate, ["fc1", "fc2", "fc3"], [2, 4, 8], baseline=0.25)
    assert len(calls) == 9 and {} not in calls
    assert {k: dict(v) for k, v in s2.items()} == {k: dict(v) for k, v in s.items()}
    # It feeds allocate_bits directly.
    sizes = {layer: {b: 100 * b for b in (2, 4, 8)} for layer in curvature}
    r = allocate_bits(s, sizes, 100 * (8 + 4 + 2))
    assert r.allocation == {"fc1": 8, "fc2": 4, "fc3": 2}  # the most sensitive layer keeps the most bits


def test_layer_sensitivity_errors():
    def ok(widths):
        return 1.0

    with pytest.raises(TypeError, match="evaluate must be a callable"):
        layer_sensitivity(1.0, ["a"], [4])
    with pytest.raises(TypeError, match="layers must be a sequence"):
        layer_sensitivity(ok, "fc1", [4])
    with pytest.raises(TypeError, match="bits must be a sequence"):
        layer_sensitivity(ok, ["a"], 4)
    with pytest.raises(ValueError, match="layers must not be empty"):
        layer_sensitivity(ok, [], [4])
    with pytest.raises(ValueError, match="layers must be distinct"):
        layer_sensitivity(ok, ["a", "a"], [4])
    with pytest.raises(ValueError, match="bits must be distinct"):
        layer_sensitivity(ok, ["a"], [4, 4])
    with pytest.raises(ValueError, match="bits must be an integer >= 1"):
        layer_sensitivity(ok, ["a"], [0])
    with pytest.raises(TypeError, match="bits must be an integer"):
        layer_sensitivity(ok, ["a"], [4.0])
    with pytest.raises(TypeError, match=r"evaluate\(\{'a': 4\}\) must return a real number"):
        layer_sensitivity(lambda w: "x" if w else 1.0, ["a"], [4])
    with pytest.raises(ValueError, match=r"evaluate\(\{\}\) must be a finite loss"):
        layer_sensitivity(lambda w: math.nan, ["a"], [4])
    with pytest.raises(TypeError, match="baseline"):
        layer_sensitivity(ok, ["a"], [4], baseline="0")
    # numpy scalars are fine
    assert layer_sensitivity(lambda w: np.float32(2.0) if w else np.float64(1.0), ["a"], [4])["a"][4] == 1.0


def test_end_to_end_on_the_mlp(trained, digits):
    """Sizes from qlib.quantize_per_layer, losses from the trained MLP: the frontier is sensible."""
    model, _ = trained
    x, y = digits["x_test"], digits["y_test"]

    def evaluate(widths):
        params = dict(model.params)
        if widths:
            params.update(qlib.quantize_per_layer(model, widths, per_channel=True)[0])
        logits = model.forward(x, params=params).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        return float(-logp[np.arange(len(y)), y].mean())

    bits = [2, 3, 4, 8]
    sens = layer_sensitivity(evaluate, ["fc1", "fc2"], bits)
    assert all(sens[layer][2] > sens[layer][8] for layer in sens)  # 2 bits hurts more than 8
    sizes = {layer: {b: qlib.quantize_per_layer(model, {layer: b}, per_channel=True)[1] for b in bits}
             for layer in ("fc1", "fc2")}
    assert sizes["fc1"][4] == 64 * 64 * 4 // 8 + 4 * 64 + 4 * 64  # codes + per-channel scales + float32 bias
    front = allocation_frontier(sens, sizes)
    assert front[0].allocation == {"fc1": 2, "fc2": 2}
    assert front[-1].cost == pytest.approx(min(sens["fc1"][b1] + sens["fc2"][b2] for b1 in bits for b2 in bits))
    budget = sizes["fc1"][4] + sizes["fc2"][4]
    r = allocate_bits(sens, sizes, budget)
    assert r.nbytes <= budget and r.cost <= sens["fc1"][4] + sens["fc2"][4]
