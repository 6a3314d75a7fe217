"""The alpha-beta collective model: formulas, ring vs tree, mesh axes on clusters, the fit."""

from __future__ import annotations

import pytest

from cost_models import comm
from cost_models.comm import H100_CLUSTER, H100_NODE, Link

LINK = Link(alpha_s=10e-6, bandwidth=100e9)


def test_ring_all_reduce_formula() -> None:
    n, p = 64e6, 8
    assert comm.all_reduce_ring(n, p, LINK) == pytest.approx(14 * 10e-6 + 2 * 7 / 8 * n / 100e9)


def test_tree_wins_small_messages_ring_wins_large() -> None:
    p = 64
    assert comm.all_reduce_tree(1e3, p, LINK) < comm.all_reduce_ring(1e3, p, LINK)
    assert comm.all_reduce_ring(1e9, p, LINK) < comm.all_reduce_tree(1e9, p, LINK)
    assert comm.all_reduce(1e3, p, LINK) == comm.all_reduce_tree(1e3, p, LINK)


@pytest.mark.parametrize("fn", [comm.all_reduce, comm.all_gather, comm.reduce_scatter, comm.all_to_all])
def test_one_device_or_no_bytes_costs_nothing(fn) -> None:
    assert fn(1e6, 1, LINK) == 0.0
    assert fn(0.0, 4, LINK) == 0.0


def test_all_gather_and_reduce_scatter_are_half_an_all_reduce_in_bandwidth() -> None:
    n, p = 1e9, 4
    bw_part = lambda f: f(n, p, LINK) - (p - 1) * LINK.alpha_s
    assert bw_part(comm.all_gather) == pytest.approx(bw_part(comm.reduce_scatter))
    assert comm.all_reduce_ring(n, p, LINK) == pytest.approx(comm.all_gather(n, p, LINK) + comm.reduce_scatter(n, p, LINK))


def test_mesh_axes_map_to_nvlink_inside_a_node_and_infiniband_across() -> None:
    assert H100_NODE.axis_link((8,), 0) == H100_NODE.intra
    assert H100_CLUSTER.axis_link((4, 8), 1) == H100_CLUSTER.intra  # inner axis: 8 GPUs of one node
    assert H100_CLUSTER.axis_link((4, 8), 0) == H100_CLUSTER.inter  # outer axis crosses nodes
    assert H100_CLUSTER.axis_link((32,), 0) == H100_CLUSTER.inter
    assert H100_CLUSTER.inter.bandwidth < H100_CLUSTER.intra.bandwidth


def test_fit_recovers_alpha_and_bandwidth() -> None:
    truth = Link(50e-6, 0.8e9)
    samples = [(n, comm.all_reduce_ring(n, 2, truth)) for n in (1e3, 1e5, 1e6, 4e6)]
    fit = comm.fit_alpha_beta(samples, 2)
    assert fit.alpha_s == pytest.approx(truth.alpha_s, rel=1e-6)
    assert fit.bandwidth == pytest.approx(truth.bandwidth, rel=1e-6)


def test_unknown_cluster_is_one_line() -> None:
    with pytest.raises(ValueError, match="unknown cluster 'tpu-pod'; known: "):
        comm.get_cluster("tpu-pod")


@pytest.mark.slow
def test_calibrate_measures_gloo_on_two_ranks() -> None:
    from compiler.distributed.calibrate_comm import calibrate_comm

    link, samples = calibrate_comm(2, save=False)
    assert len(samples) == 5 and all(t > 0 for _, t in samples)
    assert samples[-1][1] > samples[0][1]  # 4 MiB takes longer than 1 KiB
    assert 0 < link.alpha_s < 0.05 and 1e6 < link.bandwidth < 1e12
