"""Service settings: where to listen, where things are, and the limits on input.

Settings come from defaults, then ``TAGRELAY_*`` environment variables, then
command-line flags. Rule files (destinations and routes) are separate: see
:mod:`proxy.rules`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

__all__ = ["Settings", "SettingsError"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message says which and why."""


@dataclass(slots=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8080
    rules_dir: Path = Path("rules")
    demo: bool = False
    # Paths the collector uses. Chosen so that no real ad-block list matches
    # them (tests/test_adblock.py checks every URL the demo page requests).
    script_path: str = "/assets/c.js"
    collect_path: str = "/e"
    # The optional drop-in pixel shims (fbq, gtag, ttq, ...); empty: not served.
    shims_path: str = "/assets/s.js"
    # The server events API for back ends, CRMs and apps; keys in api_keys.
    api_path: str = "/api/events"
    # "source:key,source2:key2" (keys of 16+ characters); empty: API off.
    api_keys: str = ""
    # GA4's collection protocol (gtag.js with server_container_url or
    # transport_url pointed at tagrelay); empty turns it off.
    ga4_path: str = "/g/collect"
    # Peers whose forwarding headers are believed (CIDR list). Empty: the
    # TCP peer is the client.
    trusted_proxies: tuple[IPNetwork, ...] = ()
    # The one header the trusted proxies set: x-forwarded-for, forwarded,
    # cf-connecting-ip, or auto (the first present of those, in that order
    # reversed; only safe when the proxy strips the headers it does not set).
    client_ip_header: str = "x-forwarded-for"
    # Domain for first-party cookies; empty means "the registrable domain of
    # the request host" (public suffix list), host-only for IPs and localhost.
    cookie_domain: str = ""
    cookie_secure: bool = True
    visitor_cookie: str = "trid"
    geo_db: Path | None = None
    # What "no consent signal" means, per region (needs geo_db to know the
    # region; without geo the strictest rule applies). See proxy.consent.
    consent_default: str = "EEA,GB,CH:denied;*:granted"
    # Sec-GPC: "veto" (denies ads purposes whatever else says), "fallback"
    # (counts only where nothing else decided), or "ignore".
    consent_gpc: str = "veto"
    # MaxMind ASN database (GeoLite2-ASN, DB-IP ASN Lite): data-centre networks
    # count towards the bot score.
    asn_db: Path | None = None
    # Limits on what one hit may carry.
    max_body_bytes: int = 64 * 1024
    max_events_per_hit: int = 50
    max_string_chars: int = 2048
    max_params: int = 100
    # Longest a hit's body may take to arrive once its headers have: a client
    # trickling one must not hold a connection (a file descriptor) forever.
    body_timeout_secs: float = 20.0
    # Accepted skew between client event time and server time.
    max_clock_skew_secs: int = 24 * 3600
    static_dir: Path = field(default_factory=lambda: Path(__file__).resolve().parent.parent / "static")
    # Outbound delivery.
    delivery_timeout_secs: float = 10.0
    delivery_concurrency: int = 4
    # Where the outbox, dead letters and ledger live (SQLite, WAL mode).
    data_dir: Path = Path("var")
    outbox_path: Path | None = None  # default: <data_dir>/outbox.sqlite3
    outbox_max_rows: int = 1_000_000
    ledger_retention_secs: int = 7 * 24 * 3600
    retry_max_attempts: int = 30
    retry_cap_secs: float = 600.0
    # Processes sharing the port (SO_REUSEPORT); 0 means one per CPU.
    workers: int = 0

    @property
    def outbox_file(self) -> Path:
        return self.outbox_path or self.data_dir / "outbox.sqlite3"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> "Settings":
        """Defaults, then ``TAGRELAY_<FIELD>`` variables, then ``overrides`` (not None)."""
        env = os.environ if env is None else env
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get("TAGRELAY_" + f.name.upper())
            if raw is not None:
                values[f.name] = _parse(f.name, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        for name in ("rules_dir", "static_dir", "geo_db", "asn_db", "data_dir", "outbox_path"):
            if isinstance(values.get(name), str):
                values[name] = Path(values[name]) if values[name] else None
        if isinstance(values.get("trusted_proxies"), (list, tuple)):
            values["trusted_proxies"] = _networks("trusted_proxies", ",".join(map(str, values["trusted_proxies"])))
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        """Refuse values the service cannot run with, naming the variable the user sets."""
        seen: dict[str, str] = {}
        for name in ("script_path", "collect_path", "ga4_path", "shims_path", "api_path"):
            value = getattr(self, name)
            if name in ("ga4_path", "shims_path", "api_path") and not value:
                continue  # turned off
            if not value.startswith("/") or "?" in value or "#" in value:
                raise SettingsError(f"{_var(name)} {value!r}: must be a path starting with '/', without query")
            if value in seen:
                raise SettingsError(f"{_var(name)} {value!r} is also {_var(seen[value])}: each path must differ")
            seen[value] = name
        from .events_api import parse_api_keys

        parse_api_keys(self.api_keys)  # raises SettingsError naming the problem, never the key
        if not 0 < self.port < 65536:
            raise SettingsError(f"{_var('port')} (--port) {self.port}: must be 1-65535")
        if self.client_ip_header not in ("x-forwarded-for", "forwarded", "cf-connecting-ip", "auto"):
            raise SettingsError(
                f"{_var('client_ip_header')} {self.client_ip_header!r}: must be x-forwarded-for, forwarded,"
                " cf-connecting-ip or auto (lower case)"
            )
        for name, least in (
            ("max_body_bytes", 1024),
            ("max_events_per_hit", 1),
            ("max_string_chars", 64),
            ("max_params", 1),
            ("delivery_concurrency", 1),
            ("retry_max_attempts", 1),
            ("outbox_max_rows", 1),
            ("ledger_retention_secs", 1),
            ("max_clock_skew_secs", 1),
        ):
            if getattr(self, name) < least:
                raise SettingsError(f"{_var(name)} {getattr(self, name)}: must be at least {least}")
        for name in ("delivery_timeout_secs", "retry_cap_secs", "body_timeout_secs"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise SettingsError(f"{_var(name)} {value}: must be a number of seconds more than 0")
        if self.workers < 0:
            raise SettingsError(f"{_var('workers')} (--workers) {self.workers}: must be 0 (one per CPU) or more")
        if not _TOKEN_RE.fullmatch(self.visitor_cookie):
            raise SettingsError(f"{_var('visitor_cookie')} {self.visitor_cookie!r}: must be a cookie name (letters, digits, '_' or '-')")
        from .consent import ConsentPolicy, PolicyError

        try:
            ConsentPolicy.parse(self.consent_default, gpc=self.consent_gpc)
        except (PolicyError, ValueError) as exc:
            raise SettingsError(
                f"{_var('consent_default')} {self.consent_default!r} / {_var('consent_gpc')} {self.consent_gpc!r}: {exc}"
            ) from None
        if self.asn_db is not None and not self.asn_db.is_file():
            raise SettingsError(f"{_var('asn_db')} {str(self.asn_db)!r}: no such file (a MaxMind ASN DB: GeoLite2-ASN)")
        if self.geo_db is not None and not self.geo_db.is_file():
            raise SettingsError(f"{_var('geo_db')} {str(self.geo_db)!r}: no such file (a MaxMind DB: GeoLite2-City or DB-IP Lite)")


_TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def _var(name: str) -> str:
    """The environment variable that sets ``name``."""
    return f"TAGRELAY_{name.upper()}"


_BOOL = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}


def _parse(name: str, raw: str) -> Any:
    kind = {f.name: f.type for f in dataclasses.fields(Settings)}[name]
    if name == "trusted_proxies":
        return _networks(f"TAGRELAY_{name.upper()}", raw)
    if kind == "bool" and raw.strip().lower() not in _BOOL:
        raise SettingsError(f"TAGRELAY_{name.upper()} {raw!r}: not true or false (use 1/0, true/false, yes/no, on/off)")
    try:
        if kind == "bool":
            return _BOOL[raw.strip().lower()]
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
    except ValueError:
        raise SettingsError(f"TAGRELAY_{name.upper()} {raw!r}: not a valid {kind}") from None
    return raw


def _networks(name: str, raw: str) -> tuple[IPNetwork, ...]:
    nets = []
    for part in raw.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise SettingsError(f"{name}: {part!r} is not an IP address or CIDR network (e.g. 10.0.0.0/8)") from None
    return tuple(nets)
