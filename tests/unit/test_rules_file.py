"""The rules file's [channels] section: overrides reach ChannelRules, errors name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.rules import RulesFileError, load_rules


def test_channels_section_overrides_single_entries(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[channels.sources]\n"chatgpt.com" = "search"\n"x.com" = "none"\n')
    rules = load_rules(path).channels
    assert rules.classify("chatgpt.com", "referral", None) == "organic_search"
    assert rules.classify("x.com", "referral", None) == "referral"
    assert load_rules(None).channels.classify("x.com", "referral", None) == "organic_social"


def test_channels_errors_name_file_section_and_key(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[channels.sources]\n"chatgpt.com" = "serch"\n')
    message = r'rules\.toml: \[channels\] sources\."chatgpt\.com": expected one of .* or none'
    with pytest.raises(RulesFileError, match=message):
        load_rules(path)
    path.write_text("[channels]\nserch_sources = []\n")
    with pytest.raises(RulesFileError, match=r"\[channels\] serch_sources: unknown channel rule"):
        load_rules(path)
