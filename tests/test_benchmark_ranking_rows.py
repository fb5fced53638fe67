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


def test_a_file_of_the_earlier_header_is_read_and_gets_todays_header_on_the_next_append(bench, tmp_path):
    """Files written before the val losses were kept: their figures come back, and the next row upgrades
    the header without losing them (a row without the proxy's loss trains the proxy again)."""
    rows = tmp_path / "rows.csv"
    rows.write_text(",".join(bench.EARLIER_ROW_FIELDS) + "\r\nr,a,0.7,15.0,0.9,300.0,,,AMD EPYC\r\n")
    earlier = {"a": {"proxy": 0.7, "proxy_s": 15.0, "longer": 0.9, "longer_s": 300.0}}
    assert bench.read_rows(rows, "r") == earlier
    assert "proxy_loss" in bench.NEEDED["proxy"] and "proxy_loss" not in earlier["a"]
    bench.append_row(rows, "r", "b", {"proxy": 0.6, "proxy_s": 14.0, "proxy_loss": 0.8, "cpu": "x"})
    assert rows.read_text().splitlines()[0] == ",".join(bench.ROW_FIELDS)
    assert bench.read_rows(rows, "r") == earlier | {"b": {"proxy": 0.6, "proxy_s": 14.0, "proxy_loss": 0.8}}


@pytest.mark.slow
def test_the_benchmark_ranks_two_supernets_and_trains_nothing_twice(bench, tiny_test_experiment, tmp_path, capsys,
                                                                    monkeypatch):
    """End to end on 4 networks of the tiny experiment: a crop and a kernel-transform supernet, then the
    first ranked with the second beside it (``--compare``); the stand-alone figures are trained once."""
    import json
    import sys

    rows = tmp_path / "rows.csv"

    def run(*argv):
        monkeypatch.setattr(sys, "argv", ["supernet_ranking.py", str(tiny_test_experiment), "--networks", "4",
                                          "--epochs", "0.5", "--subset", "256", "--bn-batches", "1", "--rows",
                                          str(rows), "--json", *argv])
        assert bench.main() == 0
        return json.loads(capsys.readouterr().out)

    run("--supernet", str(tmp_path / "crop"), "--supernet-epochs", "0.5", "--sampling", "sandwich")
    trained = rows.read_text()
    assert len(trained.splitlines()) == 5 and all(r.split(",")[4] for r in trained.splitlines()[1:])  # proxy_loss
    run("--supernet", str(tmp_path / "transform"), "--supernet-epochs", "0.5", "--kernel", "transform")
    result = run("--supernet", str(tmp_path / "crop"), "--compare", str(tmp_path / "transform"))
    assert rows.read_text() == trained  # read back, not trained again
    assert result["compared_settings"]["kernel"] == "transform" and result["supernet_settings"]["kernel"] == "crop"
    assert {"compared vs longer", "compared likelihood vs longer", "proxy likelihood vs longer"} <= set(
        result["agreement"])
    # (a few steps on 256 images leave every stand-alone accuracy at chance, so the taus themselves are
    # undefined here; the gain's arithmetic and interval are tested in tests/test_supernet_ranking.py)
    assert {f"compared over supernet, {score} vs longer" for score in ("accuracy", "likelihood")} <= set(
        result["gains"])
    assert all(0 <= r["compared"] <= 1 and r["compared_loss"] > 0 for r in result["rows"])
    # the second supernet is scored, not the first again
    assert [r["compared_loss"] for r in result["rows"]] != [r["supernet_loss"] for r in result["rows"]]
