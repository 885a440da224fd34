"""`journeys attribute`: parsed CSV / JSON output, the table, and errors with exit code 2."""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import json
from pathlib import Path

import pytest

from cli.commands import attribute
from pipeline.core.attribution import MODELS

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "paths_small.csv"
# tests/fixtures/paths_small.csv, by hand:
#   email > paid_search > direct                  3 conv, 150
#   email                                         5 nulls
#   paid_search > direct                          1 conv, 40
#   social > social > email                       2 conv, 90
#   direct                                        1 conv, 25
#   organic_search > email > direct > paid_search 2 conv, 130
#   social                                        8 nulls
TOTAL_CONVERSIONS = 9.0
TOTAL_VALUE = 435.0


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="journeys")
    sub = root.add_subparsers(dest="command", required=True)
    attribute.register(sub)
    return root


def run(argv: list[str]) -> int:
    args = parser().parse_args(["attribute", *argv])
    code: int = args.func(args)
    return code


def long_rows(text: str) -> dict[tuple[str, str], tuple[float, float]]:
    reader = csv.DictReader(io.StringIO(text))
    assert reader.fieldnames == ["model", "channel", "conversions", "value"]
    return {
        (r["model"], r["channel"]): (float(r["conversions"]), float(r["value"])) for r in reader
    }


def test_csv_output_has_every_model_and_channel(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--paths", str(FIXTURE), "--format", "csv"]) == 0
    out, err = capsys.readouterr()
    rows = long_rows(out)
    channels = {"email", "paid_search", "direct", "social", "organic_search"}
    assert {m for m, _ in rows} == set(MODELS)
    assert {c for _, c in rows} == channels
    for model in MODELS:
        conversions = sum(rows[(model, c)][0] for c in channels)
        value = sum(rows[(model, c)][1] for c in channels)
        assert conversions == pytest.approx(TOTAL_CONVERSIONS), model
        assert value == pytest.approx(TOTAL_VALUE), model
    # first touch: email 3 (150), paid_search 1 (40), social 2 (90), direct 1 (25),
    # organic_search 2 (130).
    assert rows[("first_touch", "email")] == (3.0, 150.0)
    assert rows[("first_touch", "organic_search")] == (2.0, 130.0)
    # last non-direct: paid_search 3 + 1 + 2 = 6 (320), email 2 (90), direct-only row 1 (25).
    assert rows[("last_non_direct", "paid_search")] == (6.0, 320.0)
    assert rows[("last_non_direct", "direct")] == (1.0, 25.0)
    # linear, direct: 3 * 1/3 + 1 * 1/2 + 1 + 2 * 1/4 = 3.
    assert rows[("linear", "direct")][0] == pytest.approx(3.0)
    assert "check ok" in err
    assert "9 conversions" in err


def test_models_repeatable_and_comma_separated(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--paths", str(FIXTURE), "--model", "markov,shapley", "--model", "linear"]
    assert run([*argv, "--format", "json", "--order", "2"]) == 0
    out, _ = capsys.readouterr()
    data = json.loads(out)
    assert [r["model"] for r in data[::5]] == ["markov", "shapley", "linear"]
    assert set(data[0]) == {"model", "channel", "conversions", "value"}


def test_table_output_with_options(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--paths", str(FIXTURE), "--half-life-hours", "48", "--position-weights", "30,40,30"]
    assert run(argv) == 0
    out, _ = capsys.readouterr()
    assert "Attributed conversions" in out
    assert "Attributed value" in out
    assert "organic_search" in out
    assert "check ok: 7 paths, 5 channels, 9 conversions" in out


def test_gzip_path_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gz = tmp_path / "paths.csv.gz"
    gz.write_bytes(gzip.compress(FIXTURE.read_bytes()))
    assert run(["--paths", str(gz), "--model", "last_touch", "--format", "csv"]) == 0
    rows = long_rows(capsys.readouterr().out)
    assert rows[("last_touch", "direct")] == (5.0, 215.0)


def test_bad_row_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "path,total_conversions,total_conversion_value,total_null\n"
        "email > sms,1,10,0\n"
        "email > > sms,1,10,0\n",
        encoding="utf-8",
    )
    assert run(["--paths", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:3: empty channel name" in err


def test_missing_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--paths", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv: cannot read" in capsys.readouterr().err


def test_bad_config_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["--paths", str(FIXTURE), "--half-life-hours", "-1"]) == 2
    assert "half_life_hours" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv",
    [
        ["--model", "lstm"],
        ["--order", "0"],
        ["--position-weights", "40,60"],
        ["--format", "xml"],
        ["--shapley-negatives", "drop"],
    ],
)
def test_bad_options_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run(["--paths", str(FIXTURE), *argv])
    assert info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_help_has_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parser().parse_args(["attribute", "--help"])
    out = capsys.readouterr().out
    assert "journeys attribute --paths" in out
    assert "total_conversions" in out
    assert "--shapley-negatives {clip,keep}" in out and "(default)" in out


def test_shapley_negatives_keep_leaves_negative_shares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # v(a) = 0.9, v(b) = 0.1, v(ab) = 0.2: phi_a = 0.5, phi_b = -0.3 over {a,b} (sum 0.2),
    # shares 2.5 and -1.5 of its 2 conversions and value 40 (DP6's conv_rate Shapley).
    corpus = tmp_path / "paths.csv"
    corpus.write_text(
        "path,total_conversions,total_conversion_value,total_null\n"
        "a,9,90,1\nb,1,10,9\na > b,2,40,8\n",
        encoding="utf-8",
    )
    base = ["--paths", str(corpus), "--model", "shapley", "--format", "csv"]
    assert run([*base, "--shapley-negatives", "keep"]) == 0
    keep = long_rows(capsys.readouterr().out)
    assert keep[("shapley", "a")] == pytest.approx((9 + 5, 90 + 100))
    assert keep[("shapley", "b")] == pytest.approx((1 - 3, 10 - 60))
    assert run(base) == 0  # the default clips: a takes all of {a,b}
    clip = long_rows(capsys.readouterr().out)
    assert clip[("shapley", "a")] == pytest.approx((11, 130))
    assert clip[("shapley", "b")] == pytest.approx((1, 10))
