"""The greedy bit-allocation baseline (`passes/quant_solver.solve_greedy`) is the real heuristic.

The quantization table compares the ILP with this greedy; a greedy that skipped its upgrade
phase, upgraded the first layer it found instead of the best one, or downgraded by raw
cost instead of cost per byte would make the ILP look better than it is. The budgets here
are built by hand so that each phase changes the answer; the tests assert exact formats
and bytes.
"""

from __future__ import annotations

from passes.quant_solver import Problem, brute_force, solve_greedy, solve_ilp


def problem(budget: int) -> Problem:
    """Three layers; formats hi > mid > lo.

    Downgrades by sensitivity per byte saved: c->mid (0.004/B), c->lo (0.006/B), b->lo
    (0.01/B), then a->lo (0.022/B) is needed to reach the budget, which saves 90 B at once
    and overshoots. The upgrade phase then spends the slack on the largest gains: b back
    to hi (0.1), then c as far as the bytes allow.
    """
    return Problem(
        layers=["a", "c", "b"],
        options=[["hi", "lo"], ["hi", "mid", "lo"], ["hi", "lo"]],
        cost=[[0.0, 2.0], [0.0, 0.02, 0.05], [0.0, 0.1]],
        nbytes=[[100, 10], [50, 45, 40], [50, 40]],
        budget=budget,
    )


def test_greedy_upgrades_after_overshooting_the_budget():
    p = problem(105)
    greedy = solve_greedy(p)
    # Downgrades alone stop at [lo, lo, lo] = 90 B, cost 2.15; upgrades buy b->hi (+10 B)
    # then c->mid (+5 B): c->hi (+10 B) no longer fits.
    assert p.formats(greedy.choice) == ["lo", "mid", "hi"]
    assert p.bytes_of(greedy.choice) == 105 == p.budget
    assert p.cost_of(greedy.choice) == 2.02


def test_greedy_upgrade_phase_takes_the_largest_gain_first():
    """With 100 B only one 10 B upgrade fits: b->hi (gain 0.1), not c->hi (0.05), which a
    first-found upgrade would take because c comes first."""
    p = problem(100)
    greedy = solve_greedy(p)
    assert p.formats(greedy.choice) == ["lo", "lo", "hi"]
    assert p.bytes_of(greedy.choice) == 100


def test_greedy_downgrades_by_cost_per_byte():
    """a->lo costs the most in total (0.6) but the least per byte (0.6/90 < 0.4/40): one
    downgrade meets the budget. Downgrading by raw cost would take b and c instead (0.8)."""
    p = Problem(["a", "b", "c"], [["hi", "lo"]] * 3, [[0.0, 0.6], [0.0, 0.4], [0.0, 0.4]],
                [[100, 10], [50, 10], [50, 10]], budget=120)
    greedy = solve_greedy(p)
    assert p.formats(greedy.choice) == ["lo", "hi", "hi"]
    assert p.bytes_of(greedy.choice) == 110


def test_greedy_is_optimal_here_and_the_ilp_agrees():
    """On these instances the greedy reaches the optimum: the ILP must not claim more."""
    for budget in (100, 105, 140):
        p = problem(budget)
        best = p.cost_of(brute_force(p).choice)
        assert p.cost_of(solve_greedy(p).choice) == best
        assert p.cost_of(solve_ilp(p).choice) == best


def test_greedy_starts_from_the_most_accurate_format():
    """A budget that fits everything keeps every layer at its lowest sensitivity."""
    p = problem(10_000)
    assert p.formats(solve_greedy(p).choice) == ["hi", "hi", "hi"]
