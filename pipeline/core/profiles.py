"""Person signals and profiles: what of a touchpoint matters to a customer profile.

:func:`classify` turns one person-keyed touchpoint into a compact :class:`Signal` (cart
add or remove, checkout, order, e-mail/SMS engagement, push, app screen, store visit,
QR-code scan, in-store Wi-Fi login) or ``None`` for what profiles ignore (page views,
deliveries). :class:`Profile` folds signals into the profile fields of
``journeys.persons``. Folding is commutative: a profile is a function of the *set* of
its signals, whatever their order (the open cart holds the cart events after the last
order, whichever arrived first). Pure: no I/O. See ``docs/segments.md``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.core.model import Touchpoint, to_millis

DAY_MS = 86_400_000

#: Signal kinds, in the order of the AudienceChange/PersonSignal docs.
SIGNAL_KINDS: tuple[str, ...] = (
    "cart_add",
    "cart_remove",
    "checkout",
    "order",
    "email_open",
    "email_click",
    "sms_click",
    "push",
    "app_screen",
    "store_visit",
    "qr_scan",
    "wifi_login",
)
CART_KINDS = frozenset({"cart_add", "cart_remove", "checkout"})

#: Event types (normalised: lower case, ``_`` for spaces and dashes) of each kind.
EVENT_KINDS: dict[str, str] = {
    **dict.fromkeys(("product_added", "add_to_cart", "cart_add", "added_to_cart"), "cart_add"),
    **dict.fromkeys(
        ("product_removed", "remove_from_cart", "cart_remove", "removed_from_cart"), "cart_remove"
    ),
    **dict.fromkeys(("checkout_started", "begin_checkout", "checkout"), "checkout"),
    **dict.fromkeys(
        ("purchase", "order_completed", "store_purchase", "marketplace_purchase"), "order"
    ),
    "email_open": "email_open",
    "email_click": "email_click",
    "sms_click": "sms_click",
    **dict.fromkeys(("push_open", "push_received", "push_click"), "push"),
    "store_visit": "store_visit",
    "qr_scan": "qr_scan",
    "wifi_login": "wifi_login",
}


class ProfileError(ValueError):
    """A signal or a stored profile cannot be used (names the field)."""


def _norm(value: str) -> str:
    return value.strip().lower().replace(" ", "_").replace("-", "_")


@dataclass(frozen=True, slots=True)
class Signal:
    """One event that matters to a profile, in the shape of ``schemas/PersonSignal.avsc``."""

    event_id: str
    person_id: str
    at_ms: int
    kind: str
    channel: str = ""
    platform: str = ""  # web, app, store, or the channel's medium (email, sms)
    device: str = ""  # device type: mobile, desktop, tablet, kiosk...
    value: float = 0.0  # the order's revenue or the cart line's value
    items: int = 0  # cart items added or removed
    order_id: str = ""
    store_id: str = ""
    bopis: bool = False  # an online order collected in a store

    def to_record(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "person_id": self.person_id,
            "at": self.at_ms,
            "kind": self.kind,
            "channel": self.channel,
            "platform": self.platform,
            "device": self.device,
            "value": self.value,
            "items": self.items,
            "order_id": self.order_id,
            "store_id": self.store_id,
            "bopis": self.bopis,
        }

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Signal:
        at = rec["at"]
        kind = str(rec["kind"])
        if kind not in SIGNAL_KINDS:
            raise ProfileError(f"kind: unknown signal kind {kind!r}")
        return cls(
            event_id=str(rec["event_id"]),
            person_id=str(rec["person_id"]),
            at_ms=at if isinstance(at, int) else to_millis(at),
            kind=kind,
            channel=str(rec.get("channel") or ""),
            platform=str(rec.get("platform") or ""),
            device=str(rec.get("device") or ""),
            value=float(rec.get("value") or 0.0),
            items=int(rec.get("items") or 0),
            order_id=str(rec.get("order_id") or ""),
            store_id=str(rec.get("store_id") or ""),
            bopis=bool(rec.get("bopis")),
        )


def _number(properties: Mapping[str, str], *names: str) -> float | None:
    for name in names:
        raw = properties.get(name)
        if raw:
            try:
                return float(raw)
            except ValueError:
                continue
    return None


def classify(tp: Touchpoint) -> Signal | None:
    """The profile signal of a person-keyed touchpoint, or ``None`` (page views etc.)."""
    etype = _norm(tp.event_type)
    props = tp.properties
    platform = props.get("platform", "")
    device = tp.device_type or ""
    kind = EVENT_KINDS.get(etype)
    signal = _norm(props.get("signal", ""))
    if signal in ("qr_scan", "wifi_login") and kind in (None, "store_visit"):
        kind = signal  # a store-signals row: a store visit that says how it was seen
    if kind is None:
        if etype in ("screen_view", "screen"):
            if device == "kiosk":
                kind = "store_visit"  # an in-store kiosk: a store signal, not an app user
            elif platform == "app":
                kind = "app_screen"
        if kind is None:
            return None
    if tp.channel == "store" or kind in ("store_visit", "qr_scan", "wifi_login"):
        platform = "store"
    elif not platform:
        platform = tp.channel if tp.channel in ("email", "sms") else ""
    quantity = _number(props, "quantity")
    items = int(quantity) if quantity is not None and quantity > 0 else 1
    if kind == "order":
        value = float(tp.revenue or 0.0)
        items = 0
    elif kind in CART_KINDS:
        price = _number(props, "price", "value")
        if tp.revenue is not None:
            value = float(tp.revenue)
        else:
            value = price * items if price is not None else 0.0
        if kind == "checkout":
            items = 0
    else:
        value, items = 0.0, 0
    return Signal(
        event_id=tp.event_id,
        person_id=tp.person_id or "",
        at_ms=to_millis(tp.occurred_at),
        kind=kind,
        channel=tp.channel,
        platform=platform,
        device=device,
        value=round(float(value), 2),
        items=items,
        order_id=tp.order_id or "",
        store_id=tp.store_id or props.get("store_id", "") or "",
        bopis=props.get("fulfillment") == "pickup",
    )


def _bump(counts: dict[str, int], key: str, by: int = 1) -> None:
    if key:
        counts[key] = counts.get(key, 0) + by


_COUNTERS = {
    "email_open": "email_opens",
    "email_click": "email_clicks",
    "sms_click": "sms_clicks",
    "push": "push_opens",
    "app_screen": "app_screens",
    "store_visit": "store_visits",
    "qr_scan": "qr_scans",
    "wifi_login": "wifi_logins",
    "checkout": "checkouts",
}


@dataclass
class Profile:
    """The folded signals of one person: the fields of ``journeys.persons``.

    ``cart`` holds ``[at_ms, kind, items, value]`` of the cart events after the last
    order (on any device), ``recent`` holds ``[at_ms, kind]`` of the signals within the
    longest window a segment rule looks at (both bounded by the caller).
    """

    first_seen_ms: int = 0
    last_seen_ms: int = 0
    signals: int = 0
    channels: dict[str, int] = field(default_factory=dict)
    devices: dict[str, int] = field(default_factory=dict)
    platforms: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    orders: int = 0
    revenue: float = 0.0
    bopis_orders: int = 0
    first_order_ms: int = 0
    last_order_ms: int = 0
    cart: list[list[Any]] = field(default_factory=list)
    recent: list[list[Any]] = field(default_factory=list)

    # -- folding ---------------------------------------------------------------------

    def add(self, s: Signal) -> None:
        """Fold one signal in (the caller deduplicates by event id)."""
        self.signals += 1
        self.first_seen_ms = s.at_ms if not self.first_seen_ms else min(self.first_seen_ms, s.at_ms)
        self.last_seen_ms = max(self.last_seen_ms, s.at_ms)
        _bump(self.channels, s.channel)
        _bump(self.devices, s.device)
        _bump(self.platforms, s.platform)
        counter = _COUNTERS.get(s.kind)
        if counter:
            _bump(self.counts, counter)
        bisect.insort(self.recent, [s.at_ms, s.kind])
        if s.kind == "order":
            self.orders += 1
            self.revenue = round(self.revenue + s.value, 2)
            self.bopis_orders += 1 if s.bopis else 0
            self.first_order_ms = (
                s.at_ms if not self.first_order_ms else min(self.first_order_ms, s.at_ms)
            )
            if s.at_ms > self.last_order_ms:
                self.last_order_ms = s.at_ms
                self.cart = [c for c in self.cart if c[0] > s.at_ms]
        elif s.kind in CART_KINDS and s.at_ms > self.last_order_ms:
            self.cart.append([s.at_ms, s.kind, s.items, s.value])

    def merge(self, other: Profile) -> None:
        """Fold another person's profile in (a merge of two persons)."""
        self.signals += other.signals
        firsts = [v for v in (self.first_seen_ms, other.first_seen_ms) if v]
        self.first_seen_ms = min(firsts) if firsts else 0
        self.last_seen_ms = max(self.last_seen_ms, other.last_seen_ms)
        for mine, theirs in (
            (self.channels, other.channels),
            (self.devices, other.devices),
            (self.platforms, other.platforms),
            (self.counts, other.counts),
        ):
            for key, n in theirs.items():
                _bump(mine, key, n)
        self.orders += other.orders
        self.revenue = round(self.revenue + other.revenue, 2)
        self.bopis_orders += other.bopis_orders
        orders = [v for v in (self.first_order_ms, other.first_order_ms) if v]
        self.first_order_ms = min(orders) if orders else 0
        self.last_order_ms = max(self.last_order_ms, other.last_order_ms)
        self.cart = sorted(
            (c for c in [*self.cart, *other.cart] if c[0] > self.last_order_ms),
            key=lambda c: (c[0], c[1]),
        )
        self.recent = sorted([*self.recent, *other.recent])

    def trim(self, now_ms: int, keep_ms: int, max_items: int) -> None:
        """Bound the lists: recent signals older than *keep_ms* before *now_ms* go, and
        neither list keeps more than *max_items* (the oldest go first)."""
        self.recent = [r for r in self.recent if r[0] >= now_ms - keep_ms]
        if len(self.recent) > max_items:
            self.recent = sorted(self.recent)[-max_items:]
        if len(self.cart) > max_items:
            self.cart = sorted(self.cart, key=lambda c: (c[0], c[1]))[-max_items:]

    # -- derived fields --------------------------------------------------------------

    def count(self, name: str) -> int:
        return self.counts.get(name, 0)

    @property
    def cart_items(self) -> int:
        return max(0, sum(int(c[2]) * (-1 if c[1] == "cart_remove" else 1) for c in self.cart))

    @property
    def cart_value(self) -> float:
        total = sum(float(c[3]) * (-1 if c[1] == "cart_remove" else 1) for c in self.cart)
        return round(max(0.0, total), 2) if self.cart_items else 0.0

    @property
    def cart_since_ms(self) -> int:
        """Time of the add that opened the current cart: the oldest since the last order
        or since the cart was last emptied (0: no open cart)."""
        items, since = 0, 0
        for at, kind, n, _value in sorted(self.cart, key=lambda c: (c[0], c[1])):
            if kind == "cart_add":
                since = since or int(at)
                items += int(n)
            elif kind == "cart_remove":
                items = max(0, items - int(n))
            if items == 0:
                since = 0  # emptied: the next add opens a new cart
        return since

    @property
    def aov(self) -> float:
        return round(self.revenue / self.orders, 2) if self.orders else 0.0

    @property
    def mean_days_between_orders(self) -> float:
        if self.orders < 2:
            return 0.0
        span = self.last_order_ms - self.first_order_ms
        return round(span / DAY_MS / (self.orders - 1), 3)

    def purchase_frequency(self, now_ms: int) -> float:
        """Orders per 30 days since the person was first seen (at least 30 days, so a
        customer who bought yesterday does not count as buying 30 times a month)."""
        if not self.orders:
            return 0.0
        days = max(30.0, (now_ms - self.first_seen_ms) / DAY_MS)
        return round(self.orders * 30.0 / days, 3)

    @property
    def preferred_channel(self) -> str:
        if not self.channels:
            return ""
        return min(self.channels.items(), key=lambda kv: (-kv[1], kv[0]))[0]

    @property
    def app_user(self) -> bool:
        return self.platforms.get("app", 0) > 0

    def value_of(self, name: str, now_ms: int) -> float | bool:
        """A field by name, for segment conditions (see :data:`FIELDS`)."""
        if name in _COUNTERS.values():
            return self.count(name)
        if name == "days_since_last_order":
            return (now_ms - self.last_order_ms) / DAY_MS if self.last_order_ms else 1e9
        if name == "days_since_first_seen":
            return (now_ms - self.first_seen_ms) / DAY_MS if self.first_seen_ms else 0.0
        if name == "purchase_frequency":
            return self.purchase_frequency(now_ms)
        if name == "channel_count":
            return len(self.channels)
        if name == "device_count":
            return len(self.devices)
        value = getattr(self, name)
        return value if isinstance(value, bool) else float(value)

    # -- storage ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return {
            "first_seen": self.first_seen_ms,
            "last_seen": self.last_seen_ms,
            "signals": self.signals,
            "channels": dict(self.channels),
            "devices": dict(self.devices),
            "platforms": dict(self.platforms),
            "counts": dict(self.counts),
            "orders": self.orders,
            "revenue": self.revenue,
            "bopis_orders": self.bopis_orders,
            "first_order": self.first_order_ms,
            "last_order": self.last_order_ms,
            "cart": [list(c) for c in self.cart],
            "recent": [list(r) for r in self.recent],
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Profile:
        try:
            return cls(
                first_seen_ms=int(raw["first_seen"]),
                last_seen_ms=int(raw["last_seen"]),
                signals=int(raw["signals"]),
                channels={str(k): int(v) for k, v in raw["channels"].items()},
                devices={str(k): int(v) for k, v in raw["devices"].items()},
                platforms={str(k): int(v) for k, v in raw["platforms"].items()},
                counts={str(k): int(v) for k, v in raw["counts"].items()},
                orders=int(raw["orders"]),
                revenue=float(raw["revenue"]),
                bopis_orders=int(raw["bopis_orders"]),
                first_order_ms=int(raw["first_order"]),
                last_order_ms=int(raw["last_order"]),
                cart=[[int(c[0]), str(c[1]), int(c[2]), float(c[3])] for c in raw["cart"]],
                recent=[[int(r[0]), str(r[1])] for r in raw["recent"]],
            )
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise ProfileError(f"stored profile unreadable: {exc!r}") from exc


#: Numeric and yes/no fields a segment's ``where`` may test.
FIELDS: frozenset[str] = frozenset(
    {
        *_COUNTERS.values(),
        "orders",
        "revenue",
        "aov",
        "bopis_orders",
        "cart_items",
        "cart_value",
        "mean_days_between_orders",
        "purchase_frequency",
        "days_since_last_order",
        "days_since_first_seen",
        "channel_count",
        "device_count",
        "signals",
        "app_user",
    }
)
BOOL_FIELDS = frozenset({"app_user"})


def fold(signals: Iterable[Signal]) -> Profile:
    """The profile of *signals* (a helper for tests and tools)."""
    profile = Profile()
    for s in signals:
        profile.add(s)
    return profile
