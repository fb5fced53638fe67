"""The ranking benchmark's ground-truth file (--rows): figures come back under the recipe that made
them, a network's missing figures stay missing, and a file it did not write is refused."""

import pytest

from tests.conftest import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("supernet_ranking")


def test_figures_come_back_under_their_recipe_and_the_last_row_wins(bench, tmp_path):
    rows = tmp_path / "rows.csv"
    mine, other = bench.recipe_key({"epochs": 3}), bench.recipe_key({"epochs": 1})
    assert mine != other and mine == bench.recipe_key({"epochs": 3})
    bench.append_row(rows, mine, "a", {"proxy": 0.7, "proxy_s": 15.0, "longer": 0.9, "longer_s": 300.0,
                                       "supernet": 0.85, "supernet_s": 1.3})
    bench.append_row(rows, other, "b", {"proxy": 0.6, "proxy_s": 14.0})
    bench.append_row(rows, mine, "a", {"proxy": 0.7, "proxy_s": 15.0, "longer": 0.9, "longer_s": 300.0,
                                       "longer_again": 0.88, "longer_again_s": 310.0})
    assert bench.read_rows(rows, mine) == {"a": {"proxy": 0.7, "proxy_s": 15.0, "longer": 0.9, "longer_s": 300.0,
                                                 "longer_again": 0.88, "longer_again_s": 310.0}}
    assert bench.read_rows(rows, other) == {"b": {"proxy": 0.6, "proxy_s": 14.0}}
    assert bench.read_rows(tmp_path / "none.csv", mine) == {}


@pytest.mark.parametrize("text", ["hash,supernet,proxy\nab,0.8,0.7\n",
                                  "recipe,hash,proxy,proxy_s,longer,longer_s,longer_again,longer_again_s\n"
                                  "r,a,seventy,1,0.9,1,,\n"])
def test_a_file_it_did_not_write_is_one_line_and_exit_status_2(bench, tmp_path, capsys, text):
    rows = tmp_path / "rows.csv"
    rows.write_text(text)
    with pytest.raises(SystemExit) as exc:
        bench.read_rows(rows, "r")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a CSV this benchmark wrote" in err
