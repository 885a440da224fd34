"""``journeys collect``: the HTTP collector (Segment Tracking API and vendor webhooks)."""

from __future__ import annotations

import argparse

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from cli.commands._common import console, fail, ingest_with_rules, settings
from cli.commands._help import HelpFormatter

EPILOG = """\
routes:
  POST /v1/track /v1/page /v1/screen /v1/identify /v1/alias /v1/group /v1/batch
                                      Segment HTTP Tracking API (write key)
  POST /v1/t /v1/p /v1/s /v1/i /v1/a /v1/g, /v1/b /v1/import
                                      Segment's short paths (analytics.js, mobile SDKs)
  GET  /v1/projects/{writeKey}/settings, /projects/{writeKey}/settings
                                      the settings document the SDKs load at start-up
  POST /v1/m                          the SDKs' delivery metrics (counted, dropped)
  POST /webhooks/sendgrid             SendGrid Event Webhook (signed)
  POST /webhooks/twilio               Twilio status callbacks, inbound SMS (signed)
  POST /webhooks/shopify              Shopify orders/create (HMAC)
  POST /webhooks/interactions         chat / call-centre interactions (write key)
  GET  /healthz

environment:
  JOURNEYS_WRITE_KEYS                 accepted write keys, comma-separated (default: dev)
  JOURNEYS_COLLECTOR_HOST / _PORT     listen address (default 127.0.0.1:8088)
  JOURNEYS_COLLECTOR_MAX_BODY_BYTES   request size limit (default 524288)
  JOURNEYS_COLLECTOR_PUBLIC_URL       public base URL (https://collect.example.com): Twilio
                                      signatures and the SDK settings' apiHost behind a proxy
  JOURNEYS_COLLECTOR_ALLOWED_ORIGINS  browser origins allowed by CORS on the Segment paths,
                                      comma-separated; https://*.example.com works (default *)
  JOURNEYS_SENDGRID_VERIFICATION_KEY  SendGrid signed-webhook public key
  JOURNEYS_TWILIO_AUTH_TOKEN          Twilio auth token (X-Twilio-Signature)
  JOURNEYS_SHOPIFY_WEBHOOK_SECRET     Shopify app client secret (X-Shopify-Hmac-Sha256)
  JOURNEYS_METRICS_HOST / _PORT       Prometheus GET /metrics on its own address (default:
                                      off; see docs/metrics.md)

examples:
  journeys collect
  curl -u dev: -H 'Content-Type: application/json' localhost:8088/v1/track \\
       -d '{"userId": "u1", "event": "Order Completed", "properties": {"revenue": 25}}'

A request is answered once the broker acknowledged its touchpoints and dead letters.
"""


class CollectorSettings(BaseSettings):
    """The collector's settings, from ``JOURNEYS_*`` variables (read here, at the edge)."""

    model_config = SettingsConfigDict(env_prefix="JOURNEYS_", frozen=True, extra="ignore")

    write_keys: SecretStr = Field(
        SecretStr("dev"), description="Accepted write keys, separated by commas."
    )
    collector_host: str = "127.0.0.1"
    collector_port: int = Field(8088, ge=0, le=65535)
    collector_max_body_bytes: int = Field(512 * 1024, ge=1024)
    collector_public_url: str | None = None
    collector_allowed_origins: str = Field(
        "*", description="Origins browsers may call the Segment paths from, comma-separated."
    )
    sendgrid_verification_key: SecretStr | None = None
    twilio_auth_token: SecretStr | None = None
    shopify_webhook_secret: SecretStr | None = None

    def keys(self) -> tuple[SecretStr, ...]:
        raw = self.write_keys.get_secret_value()
        return tuple(SecretStr(k.strip()) for k in raw.split(",") if k.strip())


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "collect",
        help="run the HTTP collector (Segment API, SendGrid/Twilio/Shopify webhooks)",
        description="Receive Segment Tracking API calls and vendor webhooks over HTTP, map "
        "them to touchpoints and publish them to Kafka; invalid requests become dead letters.",
        epilog=EPILOG,
        formatter_class=HelpFormatter,
    )
    p.add_argument("--host", default=None, help="listen address (JOURNEYS_COLLECTOR_HOST)")
    p.add_argument("--port", type=int, default=None, help="port (JOURNEYS_COLLECTOR_PORT)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from aiohttp import web
    from pydantic import ValidationError

    from connectors.collector import (
        AckingPublisher,
        CollectorConfig,
        CollectorError,
        CollectorStats,
        collector_metrics,
        create_collector,
    )
    from connectors.collector_http import origins_setting
    from connectors.publisher import Publisher
    from pipeline.broker import kafka_answers
    from pipeline.metrics import MetricsError, MetricsServer
    from pipeline.rules import RulesFileError
    from pipeline.serde import AvroSerde
    from pipeline.topics import ensure_topics

    cfg = settings()
    try:
        ingest_with_rules(cfg)
    except RulesFileError as exc:
        return fail(str(exc))
    try:
        env = CollectorSettings()
        config = CollectorConfig(
            host=args.host or env.collector_host,
            port=env.collector_port if args.port is None else args.port,
            write_keys=env.keys(),
            max_body_bytes=env.collector_max_body_bytes,
            public_url=env.collector_public_url,
            sendgrid_verification_key=env.sendgrid_verification_key,
            twilio_auth_token=env.twilio_auth_token,
            shopify_webhook_secret=env.shopify_webhook_secret,
            allowed_origins=origins_setting(env.collector_allowed_origins),
        )
    except ValidationError as exc:
        return fail(f"invalid collector settings: {exc}", 2)
    if not config.write_keys:
        return fail("JOURNEYS_WRITE_KEYS is empty: no client could authenticate", 2)
    if not kafka_answers(cfg.kafka_bootstrap, client_config=cfg.kafka_config()):
        return fail(
            f"no Kafka broker answers on {cfg.kafka_bootstrap}; start `journeys run` "
            "(or `journeys broker`) first"
        )
    ensure_topics(cfg)
    publisher = AckingPublisher(
        Publisher(cfg, AvroSerde.from_dir(cfg.schemas_dir, cfg.schema_registry_url))
    )
    stats = CollectorStats()
    try:
        app = create_collector(config, publisher, stats)
    except CollectorError as exc:
        publisher.close()
        return fail(str(exc), 2)
    metrics: MetricsServer | None = None
    if cfg.metrics_port is not None:
        try:
            metrics = MetricsServer(
                collector_metrics(stats), cfg.metrics_host, cfg.metrics_port
            ).start()
        except MetricsError as exc:
            publisher.close()
            return fail(str(exc))

    async def on_cleanup(_app: web.Application) -> None:
        publisher.close()

    app.on_cleanup.append(on_cleanup)
    n_keys = len(config.write_keys)
    console.print(
        f"collector listening on [bold]http://{config.host}:{config.port}[/] "
        f"({n_keys} write key{'s' if n_keys != 1 else ''}; Ctrl-C stops it)"
    )
    if config.accepts_dev_key():
        console.print(
            "[yellow]accepting the development write key 'dev'[/]: set JOURNEYS_WRITE_KEYS "
            "to your own keys outside a laptop"
        )
    for name, secret in (
        ("SendGrid signatures", config.sendgrid_verification_key),
        ("Twilio signatures", config.twilio_auth_token),
        ("Shopify HMACs", config.shopify_webhook_secret),
    ):
        state = "checked" if secret is not None else "[yellow]not checked (no secret set)[/]"
        console.print(f"  {name}: {state}")
    origins = ", ".join(config.allowed_origins)
    console.print(f"  browser origins (CORS on /v1/*): {origins}")
    if metrics is not None:
        console.print(f"  metrics: {metrics.url}")
    try:
        web.run_app(app, host=config.host, port=config.port, print=None, access_log=None)
    finally:
        if metrics is not None:
            metrics.stop()
    return 0
