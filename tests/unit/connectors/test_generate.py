"""``connectors.generate``: every generated file replays cleanly through its own source."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.base import Rejected
from connectors.generate import generate
from connectors.registry import get_source
from connectors.replay import replay_files
from pipeline.core.identity import IdentityRules
from pipeline.core.model import Touchpoint
from pipeline.core.pii import hash_email, hash_phone

END = datetime(2026, 11, 1, tzinfo=UTC)
BLOCKED = IdentityRules().is_blocked
FILES = (
    "segment.jsonl",
    "sendgrid.jsonl",
    "twilio.jsonl",
    "shopify.jsonl",
    "pos.csv",
    "ads.csv",
    "interactions.jsonl",
    "store_signals.csv",
)


def _replay(path: Path) -> tuple[list[Touchpoint], list[Rejected], int]:
    touchpoints: list[Touchpoint] = []
    rejected: list[Rejected] = []
    stats = replay_files(
        [path], get_source(path.name.split(".")[0]), touchpoints.append, rejected.append
    )
    assert stats.touchpoints == len(touchpoints)
    assert stats.rejected == len(rejected)
    return touchpoints, rejected, stats.records


@pytest.mark.parametrize("share", [0.05, 0.0])
def test_every_file_replays_with_its_source_and_accounts_for_every_record(
    tmp_path: Path, share: float
) -> None:
    stats = generate(tmp_path, people=40, days=10, seed=1, end=END, malformed_share=share)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert set(manifest["files"]) == set(FILES)
    assert manifest["files"] == stats.files
    for name in FILES:
        touchpoints, rejected, records = _replay(tmp_path / name)
        assert records == manifest["files"][name], name
        assert touchpoints, f"{name}: no touchpoint"
        # one record per touchpoint (no array lines are generated) or per dead letter
        assert len(touchpoints) + len(rejected) == records, name
        assert len(rejected) == manifest["malformed_by_file"][name], name
        if share > 0:
            assert rejected, f"{name}: no dead letter"
        else:
            assert not rejected, f"{name}: {rejected[0].error}"
        for tp in touchpoints:
            assert END - timedelta(days=10) <= tp.occurred_at <= END, name


def test_files_are_time_ordered_and_cover_every_kind_of_record(tmp_path: Path) -> None:
    generate(tmp_path, people=80, days=14, seed=5, end=END, malformed_share=0.0)
    event_types: set[str] = set()
    for name in FILES:
        touchpoints, _, _ = _replay(tmp_path / name)
        times = [tp.occurred_at for tp in touchpoints]
        assert times == sorted(times), name
        event_types |= {tp.event_type for tp in touchpoints}
    assert {"email_delivered", "email_open", "email_click", "sms_delivered", "sms_click"} <= (
        event_types
    )
    assert {"purchase", "store_purchase", "ad_click", "chat", "call"} <= event_types
    shopify, _, _ = _replay(tmp_path / "shopify.jsonl")
    assert any(tp.store_id for tp in shopify if tp.event_type == "store_purchase")
    clicks = [
        tp for tp in _replay(tmp_path / "sendgrid.jsonl")[0] if tp.event_type == "email_click"
    ]
    assert all(tp.campaign and tp.campaign.name for tp in clicks)


def test_same_people_across_files_and_no_raw_pii_in_touchpoints(tmp_path: Path) -> None:
    generate(tmp_path, people=60, days=10, seed=2, end=END, malformed_share=0.05)
    with (tmp_path / "ground_truth.csv").open(newline="") as fh:
        truth = {
            (r["identifier_type"], r["identifier_value"]): r["person"] for r in csv.DictReader(fh)
        }
    assert {t for t, _ in truth} >= {
        "anonymous_id",
        "user_id",
        "email_sha256",
        "phone_sha256",
        "loyalty_id",
        "shopify_customer_id",
    }
    emails = {
        json.loads(line)["email"]
        for line in (tmp_path / "sendgrid.jsonl").read_text().splitlines()
        if line.startswith("{") and line.endswith("}")
    }
    assert emails and all(("email_sha256", hash_email(e)) in truth for e in emails)
    phones: set[str] = set()
    for line in (tmp_path / "twilio.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        phones.add(record.get("To") or record["data"]["to"])
    digits = {p[-10:] for p in phones}
    assert digits
    for name in FILES:
        touchpoints, _, _ = _replay(tmp_path / name)
        for tp in touchpoints:
            text = repr(tp.to_record())
            assert not any(e in text for e in emails), name
            assert not any(d in text for d in digits), name
            # every identifier of a touchpoint has a true owner, junk values excepted
            for ident in tp.identifiers:
                if ident.type != "click_id" and not BLOCKED(ident.value):
                    assert (ident.type, ident.value) in truth, (name, ident.type)


def test_segment_output_is_deterministic(tmp_path: Path) -> None:
    generate(tmp_path / "a", people=30, days=7, seed=9)
    generate(tmp_path / "b", people=30, days=7, seed=9)
    for name in (*FILES, "ground_truth.csv", "events_truth.csv", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


# ---- identity realism and ground truth -----------------------------------------------


@pytest.fixture(scope="module")
def realistic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("realistic")
    generate(out, people=160, days=21, seed=4, end=END, malformed_share=0.0)
    return out


def _truth(folder: Path) -> dict[str, str]:
    with (folder / "ground_truth.csv").open(newline="") as fh:
        return {
            f"{r['identifier_type']}:{r['identifier_value']}": r["person"]
            for r in csv.DictReader(fh)
        }


def _all_touchpoints(folder: Path) -> list[Touchpoint]:
    return [tp for name in FILES for tp in _replay(folder / name)[0]]


def _keys(tp: Touchpoint) -> list[str]:
    return [f"{i.type}:{i.value}" for i in tp.identifiers]


def test_every_source_event_has_a_true_owner_that_owns_its_identifiers(realistic: Path) -> None:
    truth = _truth(realistic)
    with (realistic / "events_truth.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    events = {(r["source"], r["source_event_id"]): r["person"] for r in rows}
    assert len(events) == len(rows), "a source_event_id is written twice"
    manifest = json.loads((realistic / "manifest.json").read_text())
    assert len(rows) == sum(manifest["files"].values()) == manifest["truth"]["events"]
    shared = {k for k, owner in truth.items() if owner.startswith(("household-", "kiosk-"))}
    touchpoints = _all_touchpoints(realistic)
    for tp in touchpoints:
        owner = events[(tp.source, tp.source_event_id or "")]
        for key in _keys(tp):
            if key in shared or key.startswith("click_id:") or BLOCKED(key.split(":", 1)[1]):
                continue
            assert truth[key] == owner, (tp.source, key.split(":")[0])
    # ground truth holds only identifiers that some record carries
    carried = {key for tp in touchpoints for key in _keys(tp)}
    assert set(truth) <= carried


def test_family_tablets_are_shared_by_two_account_holders(realistic: Path) -> None:
    truth = _truth(realistic)
    tablets = {k for k, owner in truth.items() if owner.startswith("household-")}
    assert tablets and all(k.startswith("anonymous_id:") for k in tablets)
    users: dict[str, set[str]] = {k: set() for k in tablets}
    for tp in _replay(realistic / "segment.jsonl")[0]:
        keys = _keys(tp)
        for key in tablets.intersection(keys):
            users[key].update(k for k in keys if k.startswith("user_id:") and not BLOCKED(k[8:]))
    for key, seen in users.items():
        assert len(seen) == 2, key
        assert len({truth[u] for u in seen}) == 2


def test_kiosks_see_more_customers_than_the_super_node_threshold(realistic: Path) -> None:
    truth = _truth(realistic)
    kiosks = {k: owner for k, owner in truth.items() if owner.startswith("kiosk-")}
    assert len(kiosks) == 3 and all(k.startswith("device_id:") for k in kiosks)
    users: dict[str, set[str]] = {k: set() for k in kiosks}
    for tp in _replay(realistic / "segment.jsonl")[0]:
        keys = _keys(tp)
        for key in users.keys() & set(keys):
            users[key].update(k for k in keys if k.startswith("user_id:"))
    threshold = IdentityRules().super_node_threshold
    assert all(len(seen) > threshold for seen in users.values())


def test_typos_are_the_customers_own_linkable_identifiers(realistic: Path) -> None:
    truth = _truth(realistic)
    manifest = json.loads((realistic / "manifest.json").read_text())
    emails: dict[str, set[str]] = {}
    for key, owner in truth.items():
        if key.startswith("email_sha256:"):
            emails.setdefault(owner, set()).add(key)
    typo_owners = {owner for owner, keys in emails.items() if len(keys) > 1}
    assert typo_owners and manifest["identity"]["typos"] > 0
    typos: set[str] = set()
    for owner in typo_owners:
        n = int(owner[1:])
        real = f"email_sha256:{hash_email(_email_of(realistic, n))}"
        typos |= emails[owner] - {real}
    assert typos
    touchpoints = _all_touchpoints(realistic)
    sources = {tp.source for tp in touchpoints if typos.intersection(_keys(tp))}
    assert sources <= {"pos", "shopify"}
    for tp in touchpoints:  # always beside another identifier of the same customer
        keys = _keys(tp)
        for typo in typos.intersection(keys):
            assert any(k != typo and truth.get(k) == truth[typo] for k in keys), tp.source


def _email_of(folder: Path, n: int) -> str:
    """The real address of customer *n*, from the sign-up identify calls."""
    for line in (folder / "segment.jsonl").read_text().splitlines():
        msg = json.loads(line)
        email = msg.get("traits", {}).get("email", "")
        if email.startswith(f"customer{n}."):
            return str(email)
    raise AssertionError(f"customer {n} never identified")


def test_junk_identifiers_occur_and_are_nobodys(realistic: Path) -> None:
    truth = _truth(realistic)
    junk: set[str] = set()
    for tp in _all_touchpoints(realistic):
        junk.update(k for k in _keys(tp) if BLOCKED(k.split(":", 1)[1]))
    assert {"user_id:null", "user_id:undefined", "user_id:0", "anonymous_id:undefined"} & junk
    assert f"email_sha256:{hash_email('test@test.com')}" in junk
    assert f"phone_sha256:{hash_phone('(555) 555-5555')}" in junk
    assert not junk & set(truth)


def test_bots_are_anonymous_and_busy(realistic: Path) -> None:
    truth = _truth(realistic)
    bots = {k for k, owner in truth.items() if owner.startswith("bot-")}
    assert bots and all(k.startswith("anonymous_id:") for k in bots)
    views = dict.fromkeys(bots, 0)
    for tp in _replay(realistic / "segment.jsonl")[0]:
        keys = _keys(tp)
        for key in bots.intersection(keys):
            assert keys == [key], "a bot never identifies"
            views[key] += 1
    assert min(views.values()) >= 100


def test_truth_files_hold_no_raw_email_or_phone(realistic: Path) -> None:
    for name in ("ground_truth.csv", "events_truth.csv", "manifest.json"):
        text = (realistic / name).read_text()
        assert "@" not in text, name
        assert "+1" not in text and "(555)" not in text, name
