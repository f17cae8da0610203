"""Geo lookup of the client IP in a MaxMind DB file.

Works with MaxMind GeoIP2/GeoLite2 City and Country and with DB-IP's
Lite databases, which use the same file format and a subset of the same
record layout. What is read from a record:

=================  ================================  =================
Geo field          record path                       DB-IP City Lite
=================  ================================  =================
``country``        ``country.iso_code``              present
``continent``      ``continent.code``                present
``region``         ``subdivisions[0].iso_code``      absent, so ""
``region_name``    ``subdivisions[0].names.en``      present
``city``           ``city.names.en``                 present
``postal_code``    ``postal.code``                   absent, so ""
``time_zone``      ``location.time_zone``            absent, so ""
=================  ================================  =================

``registered_country`` (where the network is registered) is never used:
it often differs from where the user is (81.2.69.160 is in GB, registered
in the US).

``subdivisions`` runs from the largest to the smallest, so the first one is
the state or region that GA4 and Meta expect. Names are the English ones,
kept as UTF-8 ("Linköping").

A record with neither a country nor a continent (MaxMind stores some
networks with only ``traits``) is not a location: :meth:`GeoReader.lookup`
returns None for it, as for an address the database does not hold. A record
with only a continent gives a :class:`~proxy.model.Geo` with just
``continent`` set, which is still enough for a rule on "visitors in Europe".
"""

from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import maxminddb

from proxy.model import Geo
from proxy.settings import SettingsError

from .client_ip import normalize_ip

__all__ = ["GeoDatabaseError", "GeoReader", "geo_from_record"]

log = logging.getLogger("proxy.enrich")

# MaxMind and DB-IP products that share the file format but hold no location.
_NOT_A_LOCATION_DB = re.compile(
    r"ASN|ISP|Anonymous|Connection-Type|Domain|IP-Risk|User-Count|Static-IP",
    re.IGNORECASE,
)


class GeoDatabaseError(SettingsError):
    """The configured geo database cannot be used; the message says which and why."""


class MaxMindReader:
    """One MaxMind DB file, opened once with the C extension (memory-mapped).

    The shared part of :class:`GeoReader` and :class:`proxy.enrich.bots.ASNReader`:
    subclasses say which setting names the file, which error to raise, which
    database types they take, and how to read one record.
    """

    setting = "geo_db"
    kind = "geo"
    error: type[SettingsError] = SettingsError
    expected = "a MaxMind DB"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        shown = f"{self.setting} {str(self.path)!r}"
        try:
            self._reader = maxminddb.open_database(str(self.path), maxminddb.MODE_MMAP_EXT)
        except FileNotFoundError:
            raise self.error(f"{shown}: no such file") from None
        except maxminddb.InvalidDatabaseError:
            raise self.error(f"{shown}: not a MaxMind DB file (expected {self.expected} .mmdb)") from None
        except ValueError as exc:
            # open_database raises ValueError when MODE_MMAP_EXT is asked for
            # and the C extension did not import; the pure-Python reader is
            # an order of magnitude slower per lookup, so we refuse it.
            raise self.error(
                f"{shown}: the maxminddb C extension is not available ({exc}); "
                "install a maxminddb wheel built for this platform"
            ) from None
        except OSError as exc:
            raise self.error(f"{shown}: cannot be read: {exc.strerror}") from None

        self.database_type: str = self._reader.metadata().database_type
        problem = self.unsuitable(self.database_type)
        if problem:
            self._reader.close()
            raise self.error(f"{shown}: database type {self.database_type!r} {problem}")
        self._closed = False
        self._warned_corrupt = False
        log.info("%s database opened: %s (%s)", self.kind, self.path, self.database_type)

    def unsuitable(self, database_type: str) -> str:
        """Why a database of this type cannot serve here, or ""."""
        return ""

    def record(self, ip: str) -> Any:
        """The raw record for ``ip``, or None.

        None without touching the database for anything that is not a
        public address (private, loopback, link-local, CGNAT, documentation
        ranges) or not an address at all. ``::ffff:a.b.c.d`` is looked up
        as ``a.b.c.d``.
        """
        if self._closed:
            raise RuntimeError(f"{self.kind} database {str(self.path)!r} is closed")
        normal = normalize_ip(ip) if isinstance(ip, str) else None
        if normal is None or not ipaddress.ip_address(normal).is_global:
            return None
        try:
            return self._reader.get(normal)
        except ValueError:
            # An IPv6 address in an IPv4-only database.
            return None
        except maxminddb.InvalidDatabaseError:
            if not self._warned_corrupt:
                self._warned_corrupt = True
                log.error(
                    "%s database %s is corrupt: events carry no %s data until the file is replaced and tagrelay"
                    " restarted (set by TAGRELAY_%s)",
                    self.kind, self.path, self.kind, self.setting.upper(),
                )
            return None

    def close(self) -> None:
        """Unmap the file. Lookups after this raise RuntimeError."""
        if not self._closed:
            self._closed = True
            self._reader.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class GeoReader(MaxMindReader):
    """A City or Country database (GeoLite2, GeoIP2, DB-IP Lite).

    Raises :class:`GeoDatabaseError` if the file is missing, is not a MaxMind
    DB, holds no location data (an ASN or anonymous-IP database), or if the
    ``maxminddb`` C extension is not installed.
    """

    error = GeoDatabaseError
    expected = "a GeoLite2/GeoIP2 City or Country or a DB-IP Lite"

    def unsuitable(self, database_type: str) -> str:
        if _NOT_A_LOCATION_DB.search(database_type):
            return "holds no location data; use a City or Country database"
        return ""

    def lookup(self, ip: str) -> Geo | None:
        """Where ``ip`` is, or None when unknown."""
        return geo_from_record(self.record(ip))


def geo_from_record(record: Any) -> Geo | None:
    """The :class:`~proxy.model.Geo` in one database record (see the module table)."""
    if not isinstance(record, Mapping):
        return None
    country = _text(record, "country", "iso_code")
    continent = _text(record, "continent", "code")
    if not country and not continent:
        return None

    subdivisions = record.get("subdivisions")
    first: Any = (
        subdivisions[0] if isinstance(subdivisions, list) and subdivisions else {}
    )
    return Geo(
        country=country,
        region=_text(first, "iso_code"),
        region_name=_text(first, "names", "en"),
        city=_text(record, "city", "names", "en"),
        postal_code=_text(record, "postal", "code"),
        continent=continent,
        time_zone=_text(record, "location", "time_zone"),
    )


def _text(node: Any, *path: str) -> str:
    """The string at ``path`` under ``node``; "" if a step is missing or not text."""
    for key in path:
        if not isinstance(node, Mapping):
            return ""
        node = node.get(key)
    return node if isinstance(node, str) else ""
