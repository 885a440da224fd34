"""The rules file's ``[channels]`` reach ingestion: the collector and ``journeys replay``
classify new touchpoints with them, not only ``journeys rechannel``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.commands._common import ingest_with_rules
from pipeline.core import channels
from pipeline.core.channels import DEFAULT, use_rules, web_channel
from pipeline.core.model import Campaign
from pipeline.rules import RulesFileError
from pipeline.settings import Settings


@pytest.fixture(autouse=True)
def _restore() -> Iterator[None]:
    yield
    use_rules(DEFAULT)


def test_a_source_override_in_the_rules_file_changes_what_ingestion_says(tmp_path: Path) -> None:
    visit = Campaign(source="chatgpt.com", medium="referral")
    assert web_channel(visit, None) == "referral"
    rules = tmp_path / "rules.toml"
    rules.write_text('[channels.sources]\n"chatgpt.com" = "search"\n')
    ingest_with_rules(Settings(rules_file=rules))
    assert channels.active_rules() is not DEFAULT
    assert web_channel(visit, None) == "organic_search"


def test_a_bad_override_names_the_key(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text('[channels.sources]\n"chatgpt.com" = "serch"\n')
    with pytest.raises(RulesFileError, match="chatgpt.com"):
        ingest_with_rules(Settings(rules_file=rules))
