"""The latency knapsack: exact on constructed cases, width snapping to the measured fast widths, importance."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from compressor.surgery.knapsack import Option, fast_widths, importance_lost, knapsack


def brute_force(options: dict[str, list[Option]], required: float):
    best, chosen = math.inf, None
    for combo in itertools.product(*options.values()):
        if sum(o.saved_ms for o in combo) >= required - 1e-12:
            lost = sum(o.lost for o in combo)
            if lost < best:
                best, chosen = lost, {k: o.width for k, o in zip(options, combo)}
    return best, chosen


def lost_of(options, kept):
    return sum(next(o.lost for o in options[k] if o.width == w) for k, w in kept.items())


def saved_of(options, kept):
    return sum(next(o.saved_ms for o in options[k] if o.width == w) for k, w in kept.items())


def test_a_constructed_case_has_its_known_optimum():
    # group a saves 3 ms for 1.0 lost at width 4, group b saves 2 ms for 0.3 at width 8 and 4 ms for 2.0 at 4,
    # group c saves 1 ms for 0.1 at width 2. For 3 ms: b at 8 (2 ms, 0.3) + c at 2 (1 ms, 0.1) = 0.4 beats a alone
    # (1.0) and the greedy best-ratio first choice c then b at 4 (2.1).
    options = {"a": [Option(8, 0.0, 0.0), Option(4, 3.0, 1.0)],
               "b": [Option(16, 0.0, 0.0), Option(8, 2.0, 0.3), Option(4, 4.0, 2.0)],
               "c": [Option(4, 0.0, 0.0), Option(2, 1.0, 0.1)]}
    assert knapsack(options, 3.0) == {"a": 8, "b": 8, "c": 2}
    assert knapsack(options, 0.0) == {"a": 8, "b": 16, "c": 4}
    assert knapsack(options, 8.0) == {"a": 4, "b": 4, "c": 2}
    assert knapsack(options, 8.5) is None  # the most every group can save is 8 ms


@pytest.mark.parametrize("seed", range(8))
def test_random_cases_match_brute_force(seed):
    rng = random.Random(seed)
    options = {}
    for g in range(4):
        widths = sorted(rng.sample(range(1, 16), 4), reverse=True)
        saved, lost, opts = 0.0, 0.0, [Option(16, 0.0, 0.0)]
        for w in widths:
            saved += rng.uniform(0.1, 2.0)
            lost += rng.uniform(0.0, 1.0)
            opts.append(Option(w, saved, lost))
        options[f"g{g}"] = opts
    required = rng.uniform(1.0, 0.8 * sum(o[-1].saved_ms for o in options.values()))
    best, _ = brute_force(options, required)
    kept = knapsack(options, required, bins=20_000)
    assert saved_of(options, kept) >= required * (1 - 4 / 20_000)  # off by at most half a step per group
    assert lost_of(options, kept) == pytest.approx(best, abs=0.05)  # the optimum, up to the steps' rounding


def test_fast_widths_keep_only_widths_faster_than_every_wider_one():
    # onnxruntime CPU as measured: widths 17..31 of a 32-channel group cost more than 32 itself; 1..16 cost 16's
    ms = {w: 2.0 + (0.3 if 17 <= w <= 31 else 0.0) - (0.9 if w <= 16 else 0.0) for w in range(1, 33)}
    ms[8] = 0.7  # and 8 is faster again
    assert fast_widths(list(range(1, 33)), ms.__getitem__) == [8, 16, 32]
    assert fast_widths([4, 8, 12], lambda w: 1.0) == [12]  # flat: only the full width
    # a margin drops widths whose gain is inside it
    assert fast_widths([2, 4, 8], {2: 0.98, 4: 0.99, 8: 1.0}.__getitem__, margin=0.05) == [8]


def test_importance_lost_is_zero_at_full_width_and_grows_as_a_group_empties():
    lost = importance_lost([4.0, 3.0, 2.0, 1.0], [1, 2, 3, 4])
    assert lost[4] == pytest.approx(0.0)
    assert lost[3] == pytest.approx(-math.log(0.9))  # keeps the best three: 9 of 10
    assert lost[1] == pytest.approx(-math.log(0.4))
    assert lost[1] > lost[2] > lost[3] > lost[4]
    uniform = importance_lost([0.0, 0.0], [1, 2])  # no signal: every channel alike
    assert uniform[1] == pytest.approx(math.log(2))
