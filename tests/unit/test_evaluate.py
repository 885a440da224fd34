"""``journeys evaluate``: stitching quality on generated data, and what breaks it."""

from __future__ import annotations

import json
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli.main import main
from connectors.evaluation import Evaluation, EvaluationError, evaluate
from connectors.generate import generate
from pipeline.core.identity import IdentityRules

END = datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("evaluate")
    generate(out, people=100, days=14, seed=3, end=END)
    return out


@pytest.fixture(scope="module")
def default_result(sample: Path) -> Evaluation:
    return evaluate(sample)


def test_default_rules_stitch_generated_people_with_high_precision_and_recall(
    default_result: Evaluation,
) -> None:
    result = default_result
    assert result.precision >= 0.98
    assert result.recall >= 0.98
    assert result.recall <= result.recall_ceiling
    assert result.event_precision is not None and result.event_precision >= 0.98
    assert result.event_recall is not None and result.event_recall >= 0.98
    # every record accounted for, every touchpoint scored at event level
    assert result.records == result.touchpoints + result.dead_letters
    assert result.dead_letters > 0  # ~1% malformed on purpose
    assert result.scored_events == result.touchpoints
    assert 0 < result.scored_identifiers <= result.truth_identifiers
    # the realism the rules must survive shows up as refusals
    assert result.refusals.get("blocklist", 0) > 0
    assert result.refusals.get("limit:user_id", 0) > 0
    assert result.refusals.get("super_node:device_id", 0) > 0
    assert result.fast_path > 0 and result.owner_calls > 0 and result.links_per_second > 0
    assert abs(result.persons_stitched - result.persons_true) <= result.persons_true * 0.05


def test_stitching_without_limits_or_super_node_guard_loses_precision(
    sample: Path, default_result: Evaluation
) -> None:
    naive = IdentityRules(limits={}, super_node_types=())
    broken = evaluate(sample, naive)
    # kiosks and family tablets now merge their customers into one another
    assert broken.precision < 0.9
    assert broken.precision < default_result.precision - 0.05
    assert broken.persons_stitched < default_result.persons_stitched
    assert "super_node:device_id" not in broken.refusals
    assert broken.recall >= default_result.recall  # merging everything costs no recall


def test_blocklist_off_lets_junk_values_merge_customers(
    sample: Path, default_result: Evaluation
) -> None:
    no_blocklist = evaluate(sample, IdentityRules(blocklist=frozenset()))
    assert "blocklist" not in no_blocklist.refusals
    assert no_blocklist.precision < default_result.precision


def test_cli_prints_json_and_fails_under_a_threshold(
    sample: Path, default_result: Evaluation, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", str(sample), "--format", "json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["precision"] == pytest.approx(default_result.precision)
    assert data["recall"] == pytest.approx(default_result.recall)
    assert set(data) >= {"persons_true", "persons_stitched", "refusals", "links_per_second"}
    assert "@" not in json.dumps(data)  # nothing personal in the report
    # family tablets stay with their first user, so precision is not perfect
    assert main(["evaluate", str(sample), "--fail-under", "1.0", "--format", "json"]) == 1
    capsys.readouterr()
    assert main(["evaluate", str(sample)]) == 0
    assert "pairwise precision" in capsys.readouterr().out


def test_cli_reads_rules_from_a_file(sample: Path, tmp_path: Path) -> None:
    rules = tmp_path / "identity.toml"
    rules.write_text("super_node_types = []\n[limits]\nuser_id = 'unlimited'\n")
    assert main(["evaluate", str(sample), "--rules", str(rules), "--format", "json"]) == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("no_such_rule = 1\n")
    assert main(["evaluate", str(sample), "--rules", str(bad)]) == 2


def test_bad_folders_are_errors(tmp_path: Path, sample: Path) -> None:
    with pytest.raises(EvaluationError, match="not a folder"):
        evaluate(tmp_path / "missing")
    with pytest.raises(EvaluationError, match="ground_truth.csv"):
        evaluate(tmp_path)
    assert main(["evaluate", str(tmp_path)]) == 2
    (tmp_path / "ground_truth.csv").write_text("identifier_type,identifier_value,person\n")
    with pytest.raises(EvaluationError, match="no source file"):
        evaluate(tmp_path)
    (tmp_path / "ground_truth.csv").write_text("type,value\n")
    shutil.copy(sample / "pos.csv", tmp_path / "pos.csv")
    with pytest.raises(EvaluationError, match="missing column"):
        evaluate(tmp_path)


def test_without_events_truth_only_identifiers_are_scored(tmp_path: Path, sample: Path) -> None:
    for name in ("segment.jsonl", "ground_truth.csv"):
        shutil.copy(sample / name, tmp_path / name)
    result = evaluate(tmp_path)
    assert result.event_precision is None and result.event_recall is None
    assert result.files == {"segment.jsonl": result.records}
    assert result.scored_identifiers < result.truth_identifiers  # other files' ids unseen
    assert result.precision >= 0.98
