"""Geo lookup against MaxMind's published test databases.

Expected values are from the tables in ``tests/data/geo/README.md`` (read
back from these exact files). The DB-IP Lite record shape is the one DB-IP
documents for its City Lite MMDB (city/subdivision names, no subdivision
codes, no postal code, no time zone).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import maxminddb
import pytest

from proxy.enrich.geo import GeoDatabaseError, GeoReader, geo_from_record
from proxy.model import Geo
from proxy.settings import SettingsError

DATA = Path(__file__).parent / "data" / "geo"
CITY = DATA / "GeoIP2-City-Test.mmdb"
LITE_CITY = DATA / "GeoLite2-City-Test.mmdb"
COUNTRY = DATA / "GeoIP2-Country-Test.mmdb"


@pytest.fixture(scope="module")
def city():
    with GeoReader(CITY) as reader:
        yield reader


class TestCityRecords:
    def test_city_with_one_subdivision(self, city):
        """81.2.69.160 is London, England, GB, Europe/London, with no postal code."""
        assert city.lookup("81.2.69.160") == Geo(
            country="GB",
            region="ENG",
            region_name="England",
            city="London",
            postal_code="",
            continent="EU",
            time_zone="Europe/London",
        )

    def test_first_of_two_subdivisions_is_the_region(self, city):
        """2.125.160.216 lists ENG then WBK; the region is the larger one, ENG."""
        geo = city.lookup("2.125.160.216")

        assert (geo.region, geo.region_name, geo.city, geo.postal_code) == (
            "ENG",
            "England",
            "Boxford",
            "OX1",
        )

    def test_country_not_registered_country(self, city):
        """2.125.160.216 is located in GB though registered to FR: country is GB."""
        assert city.lookup("2.125.160.216").country == "GB"

    def test_non_ascii_names_are_kept(self, city):
        """89.160.20.128 is Linköping in Östergötland County, SE."""
        geo = city.lookup("89.160.20.128")

        assert (geo.country, geo.region, geo.region_name, geo.city) == (
            "SE",
            "E",
            "Östergötland County",
            "Linköping",
        )

    def test_us_state_code(self, city):
        """216.160.83.56 is Milton, WA 98354, US, America/Los_Angeles."""
        geo = city.lookup("216.160.83.56")

        assert (geo.country, geo.region, geo.city, geo.postal_code, geo.time_zone) == (
            "US",
            "WA",
            "Milton",
            "98354",
            "America/Los_Angeles",
        )

    def test_postal_without_city(self, city):
        """202.196.224.1 has country PH and postal 34021 but no subdivision or city."""
        geo = city.lookup("202.196.224.1")

        assert (geo.country, geo.region, geo.city, geo.postal_code, geo.time_zone) == (
            "PH",
            "",
            "",
            "34021",
            "Asia/Manila",
        )

    def test_country_only(self, city):
        """67.43.156.1 is BT with no region, city or postal code."""
        geo = city.lookup("67.43.156.1")

        assert (geo.country, geo.region, geo.city, geo.postal_code, geo.time_zone) == (
            "BT",
            "",
            "",
            "",
            "Asia/Thimphu",
        )

    def test_any_address_in_the_network_gives_the_record(self, city):
        """81.2.69.161 is in the same /27 as 81.2.69.160: London."""
        assert city.lookup("81.2.69.161").city == "London"

    @pytest.mark.parametrize(
        ("ip", "country", "city_name"),
        [
            ("2001:480:10::1", "US", "San Diego"),
            ("2001:218::1", "JP", ""),
            ("2a02:d180::1", "DE", ""),
        ],
    )
    def test_ipv6(self, city, ip, country, city_name):
        """IPv6 networks in the test DB resolve to their country (and city where present)."""
        geo = city.lookup(ip)

        assert (geo.country, geo.city) == (country, city_name)

    def test_ipv4_mapped_ipv6_is_looked_up_as_ipv4(self, city):
        """::ffff:81.2.69.160 gives the London record of 81.2.69.160."""
        assert city.lookup("::ffff:81.2.69.160") == city.lookup("81.2.69.160")


class TestNoAnswer:
    @pytest.mark.parametrize("ip", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
    def test_public_address_not_in_db(self, city, ip):
        """Real public addresses absent from the test DB give None."""
        assert city.lookup(ip) is None

    @pytest.mark.parametrize(
        "ip",
        [
            "10.0.0.1",
            "127.0.0.1",
            "192.168.1.1",
            "::1",
            "fe80::1",
            "100.64.0.1",
            "2001:db8::1",
            "::ffff:127.0.0.1",
        ],
    )
    def test_non_public_address_is_none(self, city, ip):
        """Private, loopback, link-local, CGNAT and documentation addresses give None."""
        assert city.lookup(ip) is None

    @pytest.mark.parametrize("ip", ["", "garbage", "999.1.1.1", "81.2.69", "<script>"])
    def test_invalid_address_is_none(self, city, ip):
        """A value that is not an IP address gives None, not an exception."""
        assert city.lookup(ip) is None

    def test_record_with_only_traits_is_none(self, city):
        """214.1.1.1 holds only traits.is_anycast: not a location."""
        assert city.lookup("214.1.1.1") is None

    def test_record_with_only_continent_keeps_the_continent(self, city):
        """2.3.3.1 holds only continent EU: a Geo with just the continent."""
        assert city.lookup("2.3.3.1") == Geo(continent="EU")


class TestOtherDatabases:
    def test_geolite2_city(self):
        """GeoLite2-City-Test gives the same London record as GeoIP2-City-Test."""
        with GeoReader(LITE_CITY) as reader:
            geo = reader.lookup("81.2.69.160")

        assert (geo.country, geo.region, geo.city) == ("GB", "ENG", "London")

    def test_geolite2_city_lacks_geoip2_only_networks(self):
        """214.78.120.5 (San Diego in GeoIP2-City-Test) is not in GeoLite2-City-Test."""
        with GeoReader(LITE_CITY) as reader:
            assert reader.lookup("214.78.120.5") is None

    def test_country_database_fills_country_only(self):
        """GeoIP2-Country-Test has no subdivisions, city, postal or location."""
        with GeoReader(COUNTRY) as reader:
            geo = reader.lookup("2.125.160.216")

        assert geo == Geo(country="GB", continent="EU")

    def test_dbip_lite_city_record(self):
        """A DB-IP City Lite record (names only, no codes) fills country, region name and city."""
        record = {
            "city": {"names": {"en": "Sydney"}},
            "continent": {
                "code": "OC",
                "geoname_id": 6255151,
                "names": {"en": "Oceania"},
            },
            "country": {
                "geoname_id": 2077456,
                "is_in_european_union": False,
                "iso_code": "AU",
                "names": {"en": "Australia"},
            },
            "location": {"latitude": -33.8688, "longitude": 151.209},
            "subdivisions": [{"names": {"en": "New South Wales"}}],
        }

        assert geo_from_record(record) == Geo(
            country="AU",
            region="",
            region_name="New South Wales",
            city="Sydney",
            continent="OC",
        )

    @pytest.mark.parametrize(
        "record", [None, {}, [], "GB", {"country": "GB"}, {"country": {"iso_code": 44}}]
    )
    def test_malformed_record_is_none(self, record):
        """Records of an unexpected shape give None instead of raising."""
        assert geo_from_record(record) is None


class TestOpening:
    def test_missing_file_names_the_path(self, tmp_path):
        """A missing file is a GeoDatabaseError naming the path."""
        path = tmp_path / "nope.mmdb"

        with pytest.raises(GeoDatabaseError, match=r"nope\.mmdb.*no such file"):
            GeoReader(path)

    def test_not_a_maxmind_db_names_the_path(self, tmp_path):
        """A file that is not a MaxMind DB is a GeoDatabaseError naming the path."""
        path = tmp_path / "city.mmdb"
        path.write_text("not a database\n")

        with pytest.raises(GeoDatabaseError, match=r"city\.mmdb.*not a MaxMind DB"):
            GeoReader(path)

    def test_directory_is_refused(self, tmp_path):
        """A directory in place of the file is refused with the path in the message."""
        with pytest.raises(GeoDatabaseError, match=str(tmp_path.name)):
            GeoReader(tmp_path)

    def test_asn_database_is_refused(self):
        """GeoLite2-ASN holds no location, so configuring it is an error naming its type."""
        with pytest.raises(GeoDatabaseError, match="GeoLite2-ASN"):
            GeoReader(DATA / "GeoLite2-ASN-Test.mmdb")

    def test_missing_c_extension_is_refused(self, monkeypatch):
        """Without the maxminddb C extension the reader refuses to open (no slow fallback)."""
        # The only way to reach this branch here: hide the extension that is installed.
        monkeypatch.setattr(maxminddb, "_extension", None)

        with pytest.raises(GeoDatabaseError, match="C extension"):
            GeoReader(CITY)

    def test_error_is_a_settings_error(self, tmp_path):
        """A bad geo database is reported like any other bad setting."""
        with pytest.raises(SettingsError):
            GeoReader(tmp_path / "nope.mmdb")

    def test_uses_the_c_extension(self, city):
        """The opened reader is the C extension's."""
        assert type(city._reader).__module__ == "maxminddb.extension"

    def test_lookup_after_close_is_an_error(self, tmp_path):
        """Using a closed reader is a programming error with a clear message."""
        path = tmp_path / "copy.mmdb"
        shutil.copyfile(CITY, path)
        reader = GeoReader(path)
        reader.close()

        with pytest.raises(RuntimeError, match="closed"):
            reader.lookup("81.2.69.160")


def test_a_database_corrupt_inside_gives_no_geo_and_one_error_saying_what_to_do(tmp_path, caplog):
    """Lookups give None, and one ERROR line names the file, the effect and the setting to fix."""
    data = bytearray((DATA / "GeoIP2-City-Test.mmdb").read_bytes())
    data[:4000] = b"\xff" * 4000  # the search tree; the metadata at the end still opens
    path = tmp_path / "corrupt.mmdb"
    path.write_bytes(bytes(data))
    reader = GeoReader(path)
    assert reader.lookup("81.2.69.142") is None and reader.lookup("2.125.160.216") is None
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1 and str(path) in errors[0] and "TAGRELAY_GEO_DB" in errors[0] and "replaced" in errors[0]
