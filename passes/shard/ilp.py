"""The sharding ILP (Alpa's intra-operator formulation), in one place.

Variables
  x[c, s] in {0, 1}   class c (a tied group of identical ops) takes strategy s; one-hot per class.
  z[e, p, q] in [0, 1] edge class e carries its value from placement p (what the producer
                       makes) to placement q (what the consumer wants). Its marginals are
                       linear in x: sum_q z[p, q] = sum of x[u, s] with out(s) = p, and
                       sum_p z[p, q] = sum of x[v, s] with ins_k(s) = q. With one-hot x both
                       marginals are one-hot, so z is the indicator of the pair and may stay
                       continuous (the product x_u * x_v linearized without extra binaries).
  m >= 0               the largest local activation (for the memory row).
Objective (microseconds, so HiGHS's tolerances see the differences)
  sum_c mult_c * (compute + all-reduce)[c, s] x[c, s]
  + sum_e mult_e * reshard(p -> q) z[e, p, q]          (edges whose p or q is fixed: linear in x)
  + for every returned value, reshard(out -> replicated)
Memory (when a budget is given)
  sum_params mult_c * local_bytes[c, s] x[c, s] + 2 m <= budget,  m >= local_bytes[c, s] x[c, s].
Each use of a value is redistributed on its own (two consumers wanting the same placement
pay twice); the runtime does exactly the same, so predicted and issued collectives agree.
Restrictions (the baselines) fix x[c, s] = 0 for the strategies a rule forbids, and are
solved by the same program, so the ILP's optimum can never be worse than a baseline's.
"""

from __future__ import annotations

from dataclasses import dataclass

from cost_models.ilp import IntegerProgram, Solution, one_of, solve
from passes.shard.cost import CostTables
from passes.shard.placement import replicated

US = 1e6
# A tie-break, not a cost: between plans of equal time prefer parameters stored sharded
# (a replicated weight sliced for free on use would otherwise count as a full copy).
PARAM_US_PER_BYTE = 1e-8


@dataclass
class ShardProgram:
    program: IntegerProgram
    x: list[list[int]]  # class -> strategy -> variable
    pairs: list[tuple[dict, dict, dict]]  # per z edge class: (p index, q index, (p, q) -> var)
    z_edges: list[tuple[int, int, int]]  # (class u, class v, k) of each z block

    def choice(self, sol: Solution) -> list[int]:
        return [max(range(len(xs)), key=lambda s: sol.values[xs[s]]) for xs in self.x]

    def initial(self, t: CostTables, choice: list[int]) -> list[float]:
        """A full variable vector for a given plan (a warm start for HiGHS)."""
        g = t.graph
        values = [0.0] * self.program.num_vars
        for c, s in enumerate(choice):
            values[self.x[c][s]] = 1.0
        for (cu, cv, k), (_, _, var) in zip(self.z_edges, self.pairs):
            p = g.strategies(cu)[choice[cu]].out
            q = g.strategies(cv)[choice[cv]].ins[k]
            values[var[(p, q)]] = 1.0
        if self.program.names and self.program.names[-1] == "peak":
            values[-1] = max(t.out_bytes[c][s] for c, s in enumerate(choice) if not t.is_param(c)) \
                if any(not t.is_param(c) for c in range(len(choice))) else 0.0
        return values


def build(t: CostTables, allowed: list[set[int]] | None = None, memory_bytes: float | None = None) -> ShardProgram:
    g = t.graph
    prog = IntegerProgram()
    x: list[list[int]] = []
    for c, members in enumerate(g.classes):
        mult = len(members)
        ok = allowed[c] if allowed is not None else None
        tie = PARAM_US_PER_BYTE if t.is_param(c) else 0.0
        row = [prog.add_var(mult * (t.node_seconds[c][s] * US + tie * t.out_bytes[c][s]), upper=1.0 if ok is None or s in ok else 0.0,
                            name=f"x{c}_{s}") for s in range(len(g.strategies(c)))]
        one_of(prog, row)
        x.append(row)
    pairs, z_edges = [], []
    for (cu, cv, k), members in g.edge_classes().items():
        mult = len(members)
        u = members[0][0]
        outs: dict = {}
        for s, st in enumerate(g.strategies(cu)):
            outs.setdefault(st.out, []).append(x[cu][s])
        wants: dict = {}
        for s, st in enumerate(g.strategies(cv)):
            wants.setdefault(st.ins[k], []).append(x[cv][s])
        if len(outs) == 1 or len(wants) == 1:
            _linear_edge(prog, t, u, outs, wants, mult)
            continue
        var = {}
        for p in outs:
            for q in wants:
                secs, _ = t.reshard(u, p, q)
                var[(p, q)] = prog.add_var(mult * secs * US, integer=False, name=f"z{cu}_{cv}_{k}")
        for p, xs in outs.items():
            prog.add_constraint({**{var[(p, q)]: 1.0 for q in wants}, **{v: -1.0 for v in xs}}, 0.0, 0.0)
        for q, xs in wants.items():
            prog.add_constraint({**{var[(p, q)]: 1.0 for p in outs}, **{v: -1.0 for v in xs}}, 0.0, 0.0)
        pairs.append((outs, wants, var))
        z_edges.append((cu, cv, k))
    rep = replicated(g.mesh)
    for c, us in g.return_classes().items():
        for s, st in enumerate(g.strategies(c)):
            secs, _ = t.reshard(us[0], st.out, rep)
            prog.costs[x[c][s]] += len(us) * secs * US
    if memory_bytes is not None:
        peak = prog.add_var(0.0, 0.0, float("inf"), name="peak", integer=False)
        row = {peak: 2.0}
        for c, members in enumerate(g.classes):
            for s in range(len(g.strategies(c))):
                if t.is_param(c):
                    row[x[c][s]] = len(members) * t.out_bytes[c][s]
                else:
                    prog.add_constraint({peak: 1.0, x[c][s]: -t.out_bytes[c][s]}, 0.0)
        prog.add_constraint(row, upper=memory_bytes)
    return ShardProgram(prog, x, pairs, z_edges)


def _linear_edge(prog: IntegerProgram, t: CostTables, u: int, outs: dict, wants: dict, mult: int) -> None:
    """One side fixed: the redistribution cost is a coefficient on the other side's x."""
    if len(wants) == 1:
        (q,) = wants
        for p, xs in outs.items():
            secs, _ = t.reshard(u, p, q)
            for v in xs:
                prog.costs[v] += mult * secs * US
    else:
        (p,) = outs
        for q, xs in wants.items():
            secs, _ = t.reshard(u, p, q)
            for v in xs:
                prog.costs[v] += mult * secs * US


def solve_plan(t: CostTables, allowed: list[set[int]] | None = None, memory_bytes: float | None = None,
               time_limit: float = 10.0, warm: list[int] | None = None) -> tuple[list[int] | None, Solution]:
    """Strategy index per class (None when infeasible or nothing found in time) and the solution."""
    sp = build(t, allowed, memory_bytes)
    initial = sp.initial(t, warm) if warm is not None else None
    sol = solve(sp.program, time_limit=time_limit, initial=initial, rel_gap=1e-6)
    return (sp.choice(sol) if sol.has_solution else None), sol
