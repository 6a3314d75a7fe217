"""The uniform reuse-factor baseline (`passes/reuse_factor.uniform_baseline`) is hls4ml's practice.

hls4ml users pick one reuse factor for the whole model, the smallest that fits the part
(each layer rounds it to its nearest valid factor). The "ILP vs baseline" latency figures
rest on that baseline; one that took a larger factor than needed, or ignored the budget,
would flatter the ILP. Budgets here are built so that factors 1 and 2 do not fit and 4
does: the baseline must say 4.
"""

from __future__ import annotations

from cost_models import fpga
from passes.reuse_factor import ReuseProblem, solve_ilp, uniform_baseline

PART = fpga.PARTS["xcu280-fsvh2892-2L-e"]
ROOMY = 10**9  # BRAM and LUT budgets that never bind: only DSPs decide


def mac(name: str, n_in: int, n_out: int) -> fpga.MacLayer:
    """16-bit weights and activations: one DSP per multiplier on UltraScale+."""
    return fpga.MacLayer(name, 1, n_in, n_out, n_in * n_out, 16, 16, 40)


def problem(macs: list[fpga.MacLayer], dsp: int) -> ReuseProblem:
    return ReuseProblem(macs, [], PART, fpga.Resources(dsp, ROOMY, ROOMY))


def test_smallest_uniform_factor_that_fits_is_four():
    layers = [mac("a", 8, 2), mac("b", 8, 2)]  # 16 multiplications per row each
    assert fpga.dsp_per_mult(16, 16, PART) == 1
    # DSPs: R=1 -> 32, R=2 -> 16, R=4 -> 8, R=8 -> 4.
    p = problem(layers, dsp=10)
    assert not p.fits([1, 1]) and not p.fits([2, 2]) and p.fits([4, 4])
    assert uniform_baseline(p) == (4, [4, 4])
    assert p.resources([4, 4]).dsp == 8


def test_the_factor_moves_with_the_budget():
    layers = [mac("a", 8, 2), mac("b", 8, 2)]
    assert uniform_baseline(problem(layers, dsp=32)) == (1, [1, 1])
    assert uniform_baseline(problem(layers, dsp=31)) == (2, [2, 2])
    assert uniform_baseline(problem(layers, dsp=16)) == (2, [2, 2])
    assert uniform_baseline(problem(layers, dsp=4)) == (8, [8, 8])
    assert uniform_baseline(problem(layers, dsp=3)) == (16, [16, 16])
    assert uniform_baseline(problem(layers, dsp=1)) is None  # 2 DSPs at the largest factor


def test_each_layer_rounds_the_uniform_factor_to_its_nearest_valid_one():
    """Layer a has 12 multiplications (factors 1,2,3,4,6,12), b has 16 (1,2,4,8,16). A
    uniform 3 is 3 for a and 4 for b (hls4ml's tie goes up): 4 + 4 = 8 DSPs; a uniform
    4 is 3 + 4 = 7."""
    layers = [mac("a", 6, 2), mac("b", 8, 2)]
    assert uniform_baseline(problem(layers, dsp=8)) == (3, [3, 4])
    assert uniform_baseline(problem(layers, dsp=7)) == (4, [4, 4])


def test_the_ilp_never_loses_to_the_baseline_on_it():
    p = problem([mac("a", 8, 2), mac("b", 8, 2)], dsp=10)
    decision = solve_ilp(p, time_limit=10)
    assert decision.status == "optimal" and p.fits(decision.choice)
    assert p.cost(decision.choice) <= p.cost([4, 4])
