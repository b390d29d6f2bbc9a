"""Architecture search: candidates scored per profile, Pareto fronts, the command's outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from clirun import invoke
from hypothesis import given
from hypothesis import strategies as st

from hierfl.archsearch import pareto_front

ROOT = Path(__file__).resolve().parents[1]


def test_pareto_front_by_hand():
    """A candidate is dropped only when another is at least as good in all three and better
    in one: (0.8, 1 s, 1 J) beats (0.7, 1.5 s, 2 J); ties keep both."""
    front = pareto_front(np.array([0.9, 0.8, 0.7, 0.8]), np.array([2.0, 1.0, 1.5, 1.0]),
                         np.array([1.0, 1.0, 2.0, 1.0]))
    assert front.tolist() == [True, True, False, True]


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5), st.integers(0, 5)),
                min_size=1, max_size=12))
def test_pareto_front_is_the_undominated_set(points):
    """Nobody on the front is dominated, and everyone off it is dominated by someone on it."""
    accuracy, round_s, energy = np.array(points, dtype=float).T
    front = pareto_front(accuracy, round_s, energy)

    def beats(i: int, j: int) -> bool:
        good = accuracy[i] >= accuracy[j] and round_s[i] <= round_s[j] and energy[i] <= energy[j]
        return good and (accuracy[i], round_s[i], energy[i]) != (accuracy[j], round_s[j],
                                                                 energy[j])

    n = len(points)
    for j in range(n):
        dominated = any(beats(i, j) for i in range(n))
        assert front[j] == (not dominated)
        if not front[j]:
            assert any(beats(i, j) and front[i] for i in range(n))
    assert front.any()


def test_archsearch_command_scores_each_profile(tmp_path):
    """hierfl archsearch runs every (model, width) candidate; each profile that trained one
    gets a row (compact at width 1 fits only the phones), its own Pareto front marked."""
    out = tmp_path / "arch"
    done = invoke("archsearch", str(ROOT / "scenarios" / "heterofl.toml"), "--models",
                  "tiny,compact", "--widths", "1,0.25", "--rounds", "2", "--workers", "1",
                  "--out", str(out))
    assert done.code == 0, done.err
    table = pd.read_csv(out / "archsearch.csv")
    rows = {(r.model, r.width): set() for r in table.itertuples()}
    for r in table.itertuples():
        rows[(r.model, r.width)].add(r.profile)
    assert rows == {("tiny", 1.0): {"mcu", "soc", "mobile"},
                    ("tiny", 0.25): {"mcu", "soc", "mobile"},
                    ("compact", 1.0): {"mobile"},
                    ("compact", 0.25): {"mcu", "soc", "mobile"}}
    for _, group in table.groupby("profile"):
        expected = pareto_front(group["accuracy"].to_numpy(), group["round_s"].to_numpy(),
                                group["energy_j_per_round"].to_numpy())
        assert group["pareto"].tolist() == expected.tolist()
    assert (out / "archsearch.png").read_bytes()[:4] == b"\x89PNG"
    assert "Pareto front" in done.out


def test_archsearch_bad_widths_exit_2():
    """--widths outside (0, 1] is one error line, exit 2."""
    done = invoke("archsearch", str(ROOT / "scenarios" / "heterofl.toml"), "--widths", "1,2")
    assert done.one_error_line and "--widths" in done.err
