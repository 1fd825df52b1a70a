"""The fewest cells any round-by-round plan of ``dlgn.hdl.popcount`` can spend on one popcount.

    python bench/popcount_bound.py [--bits 100 800] [--rounds 7 10] [--time-limit 120]

An integer program (scipy's HiGHS) over the cells of ``dlgn.hdl.popcount``: how many of each
cell (full adder as two LUTs; carry-chain positions: start, full adder, half adder, export; the
pairs (4,0), (3,1), (3,0) with and without a carry in) sit in each round and column, subject to:
a cell reads only wires alive at the start of its round, every carry out lands on a position of
the next column in the same round (or leaves the score width, where it is 0), and after the last
round every column holds at most one wire. It ignores which wires go where (so it is a lower
bound for that cell library and round count) and nextpnr's two extra ``CCU2C`` per physical chain.
Prints the optimum in LUT4-equivalents per summed bit (a position is one).
"""

import argparse

import numpy as np

# (name, carry in, wires taken per column from its own, produced per column offset, carry out offset, cost)
CELLS = [
    ("full adder (LUTs)", 0, (3,), {0: 1, 1: 1}, 0, 2),
    ("start", 0, (2,), {0: 1}, 1, 1),
    ("full adder", 1, (2,), {0: 1}, 1, 1),
    ("half adder", 1, (1,), {0: 1}, 1, 1),
    ("export", 1, (0,), {0: 1}, 0, 1),
] + [(f"pair {a},{b}{' +carry' if ci else ''}", ci, (a, b), {0: 1, 1: 1}, 2, 2)
     for ci in (0, 1) for a, b in ((4, 0), (3, 1), (3, 0))]


def bound(bits, rounds, time_limit):
    from scipy.optimize import Bounds, LinearConstraint, milp

    width = bits.bit_length()
    var = {}
    for r in range(rounds):
        for j in range(width):
            for t, cell in enumerate(CELLS):
                if j + len(cell[2]) <= width:
                    var[r, j, t] = len(var)
    height = {(r, j): len(var) + r * width + j for r in range(rounds + 1) for j in range(width)}
    n = len(var) + len(height)
    rows, lo, hi = [], [], []

    def constraint(coefficients, low, high):
        row = np.zeros(n)
        for k, v in coefficients:
            row[k] += v
        rows.append(row)
        lo.append(low)
        hi.append(high)

    for j in range(width):
        constraint([(height[0, j], 1)], bits if j == 0 else 0, bits if j == 0 else 0)
        constraint([(height[rounds, j], 1)], 0, 1)
    for r in range(rounds):
        for j in range(width):
            taken, balance, carries = [], [(height[r, j], 1), (height[r + 1, j], -1)], []
            for (rr, jj, t), k in var.items():
                if rr != r:
                    continue
                _name, carry_in, takes, makes, carry_out, _cost = CELLS[t]
                if 0 <= j - jj < len(takes):
                    taken.append((k, takes[j - jj]))
                    balance.append((k, -takes[j - jj]))
                if j - jj in makes:
                    balance.append((k, makes[j - jj]))
                if carry_out and jj + carry_out == j:
                    carries.append((k, 1))
                if jj == j and carry_in:
                    carries.append((k, -1))
            constraint(taken + [(height[r, j], -1)], -np.inf, 0)
            constraint(balance, 0, 0)
            constraint(carries, 0, 0)
    cost = np.zeros(n)
    for (_r, j, t), k in var.items():
        cost[k] = 1 if t == 0 and j == width - 1 else CELLS[t][5]  # a top-column full adder drops its carry
    result = milp(cost, constraints=LinearConstraint(np.array(rows), lo, hi), integrality=np.ones(n),
                  bounds=Bounds(0, np.inf), options={"time_limit": time_limit})
    return None if result.x is None else result.fun / bits, result.status


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bits", nargs="+", type=int, default=[100, 800])
    parser.add_argument("--rounds", nargs="+", type=int, default=[7, 10])
    parser.add_argument("--time-limit", type=float, default=120)
    args = parser.parse_args()
    for bits in args.bits:
        for rounds in args.rounds:
            per_bit, status = bound(bits, rounds, args.time_limit)
            note = "" if status == 0 else " (time limit: best found, not proved optimal)"
            print(f"{bits} bits, {rounds} rounds: "
                  f"{'infeasible' if per_bit is None else f'{per_bit:.3f} LUT4-equivalents per bit'}{note}")


if __name__ == "__main__":
    main()
