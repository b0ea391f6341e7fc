"""A fixed fleet and queries with their expected results, written out by hand.

The same table checks the reference evaluator (test_query_reference.py) and SQL on both
stores (test_query_sql.py), so each semantic rule is pinned in one place.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from query_fixtures import T0, Certificate, Device

FLEET = [
    Device(
        "d1",
        connection_state="Connected",
        last_activity_at=T0,
        tags={"site": "north", "floor": 1, "flag": True, "nested": {"x": 1}},
        desired={"interval": 30},
        reported={"certificate": {"validUntil": "2026-03-01T00:00:00Z"}, "temp": 20.5, "fw": "1.2"},
    ),
    Device(
        "d2",
        status="disabled",
        status_reason="revoked",
        tags={"site": "south", "floor": "1", "flag": False},
        reported={"certificate": {"validUntil": "2026-12-01T00:00:00Z"}, "temp": 25, "fw": None},
        version=2,
    ),
    Device(
        "d3",
        last_activity_at=T0 + dt.timedelta(days=2, microseconds=5),
        tags={"site": "North", "floor": None, "list": [1, 2], "name": "café"},
        reported={"temp": "hot"},
    ),
    Device(
        "d4",
        tags={"quote": 'it\'s "q"'},
        reported={"certificate": {"validUntil": "2027-06-01"}, "temp": -5},
        version=3,
    ),
]

CERTIFICATES = [
    Certificate("0a", "d1", T0 + dt.timedelta(days=30)),
    Certificate("0b", "d1", T0 + dt.timedelta(days=60), state="superseded"),
    Certificate("1c", "d2", T0 + dt.timedelta(days=90), requested_via="hub", policy="short"),
]


def ids(*names: str) -> list[dict[str, Any]]:
    return [{"deviceId": n} for n in names]


def where(condition: str) -> str:
    return f"SELECT deviceId FROM devices WHERE {condition}"


def case(text: str, expected: list[dict[str, Any]], name: str) -> Any:
    return pytest.param(text, expected, id=name)


DEVICE_CASES = [
    # undefined: a missing path never compares, and NOT keeps it undefined
    case(where("tags.missing = 1"), [], "undefined/compare"),
    case(where("NOT (tags.missing = 1)"), [], "undefined/not"),
    case(where("tags.missing != 1"), [], "undefined/not-equal"),
    case(where("IS_DEFINED(tags.floor)"), ids("d1", "d2", "d3"), "undefined/is-defined"),
    case(where("NOT IS_DEFINED(tags.floor)"), ids("d4"), "undefined/not-is-defined"),
    case(where("nothing.at.all = undefined"), [], "undefined/literal"),
    # types: only string/string, number/number, bool/bool compare
    case(where("tags.floor = 1"), ids("d1"), "types/number-not-string"),
    case(where("tags.floor = '1'"), ids("d2"), "types/string-not-number"),
    case(where("tags.floor != 1"), [], "types/mismatch-is-not-inequality"),
    case(where("properties.reported.temp > 0"), ids("d1", "d2"), "types/number-order"),
    case(where("properties.reported.temp > 'a'"), ids("d3"), "types/string-order"),
    case(where("tags.flag = 1"), [], "types/bool-not-number"),
    case(where("tags.nested = tags.nested"), [], "types/object-not-comparable"),
    case(where("tags.floor = 0x1"), ids("d1"), "types/hex-constant"),
    # null: comparisons with null are undefined; IS_NULL finds it
    case(where("tags.floor = null"), [], "null/equals-is-undefined"),
    case(where("statusReason = null"), [], "null/column-equals"),
    case(where("IS_NULL(tags.floor)"), ids("d3"), "null/is-null-json"),
    case(where("IS_NULL(properties.reported.fw)"), ids("d2"), "null/is-null-reported"),
    case(where("IS_NULL(statusReason)"), ids("d1", "d3", "d4"), "null/is-null-column"),
    case(where("IS_NULL(tags.missing)"), [], "null/undefined-is-not-null"),
    # three-valued logic
    case(where("tags.missing = 1 OR status = 'enabled'"), ids("d1", "d3", "d4"), "logic/or"),
    case(
        where("NOT (tags.missing = 1 AND status = 'disabled')"),
        ids("d1", "d3", "d4"),
        "logic/false-and-undefined",
    ),
    case(where("tags.flag"), ids("d1"), "logic/bare-bool"),
    case(where("NOT tags.flag"), ids("d2"), "logic/not-bool"),
    case(where("tags.site"), [], "logic/bare-string"),
    case(where("tags.flag < true"), ids("d2"), "logic/bool-order"),
    case(where("true"), ids("d1", "d2", "d3", "d4"), "logic/constant-true"),
    case(where("1"), [], "logic/constant-number"),
    # IN / NIN
    case(where("tags.site IN ['north', 'south']"), ids("d1", "d2"), "in/strings"),
    case(where("tags.site NIN ['north']"), ids("d2", "d3"), "nin/strings"),
    case(where("tags.floor IN [1, 'x']"), ids("d1"), "in/mixed-types"),
    case(where("tags.floor NIN [1]"), ids("d2"), "nin/other-type-matches-none"),
    case(where("tags.floor IN []"), [], "in/empty"),
    case(where("tags.floor NIN []"), ids("d1", "d2"), "nin/empty"),
    case(where("tags.floor IN [null]"), [], "in/null-never-matches"),
    case(where("properties.reported.temp IN [-5, 25]"), ids("d2", "d4"), "in/negative"),
    # functions
    case(where("STARTSWITH(tags.site, 'no')"), ids("d1"), "fn/startswith"),
    case(where("STARTS_WITH(tags.site, 'no')"), ids("d1"), "fn/starts-with"),
    case(where("ENDSWITH(tags.site, 'th')"), ids("d1", "d2", "d3"), "fn/endswith"),
    case(where("ends_with(tags.site, 'uth')"), ids("d2"), "fn/ends-with"),
    case(where("CONTAINS(tags.site, 'ort')"), ids("d1", "d3"), "fn/contains"),
    case(where("STARTSWITH(tags.floor, '1')"), ids("d2"), "fn/startswith-needs-string"),
    case(where("NOT STARTSWITH(tags.site, 'no')"), ids("d2", "d3"), "fn/not-startswith"),
    case(where("LOWER(tags.site) = 'north'"), ids("d1", "d3"), "fn/lower"),
    case(where("UPPER(status) = 'ENABLED'"), ids("d1", "d3", "d4"), "fn/upper"),
    case(where("UPPER(tags.name) = 'CAFé'"), ids("d3"), "fn/upper-ascii-only"),
    case(where("LENGTH(tags.site) = 5"), ids("d1", "d2", "d3"), "fn/length"),
    case(where("LENGTH(tags.name) = 4"), ids("d3"), "fn/length-characters"),
    case(where("IS_STRING(tags.floor)"), ids("d2"), "fn/is-string"),
    case(where("IS_NUMBER(tags.floor)"), ids("d1"), "fn/is-number"),
    case(where("IS_BOOL(tags.flag)"), ids("d1", "d2"), "fn/is-bool"),
    case(where("IS_OBJECT(tags.nested)"), ids("d1"), "fn/is-object"),
    case(where("IS_OBJECT(properties)"), ids("d1", "d2", "d3", "d4"), "fn/is-object-assembled"),
    case(where("IS_ARRAY(tags.list)"), ids("d3"), "fn/is-array"),
    case(where("IS_PRIMITIVE(tags.floor)"), ids("d1", "d2", "d3"), "fn/is-primitive"),
    # arithmetic
    case(where("properties.reported.temp * 2 > 45"), ids("d2"), "arith/multiply"),
    case(where("properties.reported.temp + 0.5 = 21"), ids("d1"), "arith/add"),
    case(where("properties.reported.temp % 2 = 1"), ids("d2"), "arith/modulo"),
    case(where("properties.reported.temp % 2 = -1"), ids("d4"), "arith/modulo-truncates"),
    case(where("properties.reported.temp / 2 = 12.5"), ids("d2"), "arith/divide"),
    case(where("properties.desired.interval / 0 = 0"), [], "arith/divide-by-zero"),
    case(where("-properties.reported.temp = 5"), ids("d4"), "arith/negate"),
    case(where("version - 1 = 1"), ids("d2"), "arith/column"),
    case(where("LENGTH(tags.site) + version = 7"), ids("d2"), "arith/function-and-column"),
    # strings and names
    case(where("tags.quote = 'it\\'s \"q\"'"), ids("d4"), "escape/single-quoted"),
    case(where('tags.quote = "it\'s \\"q\\""'), ids("d4"), "escape/double-quoted"),
    case(where("tags.name = 'caf\\u00e9'"), ids("d3"), "escape/unicode"),
    case(where("tags.site = \"x' OR '1'='1\""), [], "escape/quotes-stay-in-the-string"),
    case(
        "select DEVICEID from DEVICES where STATUS = 'enabled' and TAGS.site = 'north'",
        ids("d1"),
        "names/upper-case",
    ),
    case(
        "select DeviceId from DEVICES where Status = 'enabled' and Tags.site = 'north'",
        ids("d1"),
        "names/case-insensitive",
    ),
    case(where("tags.Site = 'north'"), [], "names/nested-case-sensitive"),
    case(where("properties.Reported.temp = 25"), ids("d2"), "names/properties-section"),
    # timestamps and the certificate filter
    case(where("lastActivityTime > '2026-01-02'"), ids("d3"), "time/after"),
    case(where("lastActivityTime = '2026-01-01T00:00:00.000000Z'"), ids("d1"), "time/format"),
    case(where("IS_NULL(lastActivityTime)"), ids("d2", "d4"), "time/never-active"),
    case(
        where("properties.reported.certificate.validUntil < '2026-12-01'"),
        ids("d1"),
        "cert/valid-until-before",
    ),
    case(
        where("properties.reported.certificate.validUntil <= '2026-12-01T00:00:00Z'"),
        ids("d1", "d2"),
        "cert/valid-until-inclusive",
    ),
    # TOP and projections
    case("SELECT TOP 2 deviceId FROM devices", ids("d1", "d2"), "top/first-by-key"),
    case(
        "SELECT TOP 10 deviceId FROM devices WHERE status = 'enabled'",
        ids("d1", "d3", "d4"),
        "top/larger-than-result",
    ),
    case(
        "SELECT deviceId, properties.reported.certificate.validUntil FROM devices"
        " WHERE status = 'disabled'",
        [{"deviceId": "d2", "validUntil": "2026-12-01T00:00:00Z"}],
        "projection/leaf-name",
    ),
    case(
        "SELECT tags.site AS place, version AS v FROM devices WHERE deviceId = 'd4'",
        [{"v": 3}],
        "projection/alias-and-undefined",
    ),
    case(
        "SELECT tags.nested, tags.list FROM devices WHERE tags.site = 'north'",
        [{"nested": {"x": 1}}],
        "projection/object",
    ),
    case(
        "SELECT properties.reported.fw, statusReason FROM devices WHERE deviceId = 'd2'",
        [{"fw": None, "statusReason": "revoked"}],
        "projection/null",
    ),
    case(
        "SELECT properties FROM devices WHERE deviceId = 'd3'",
        [{"properties": {"desired": {}, "reported": {"temp": "hot"}}}],
        "projection/assembled-object",
    ),
    case(
        "SELECT lastActivityTime FROM devices WHERE deviceId = 'd3'",
        [{"lastActivityTime": "2026-01-03T00:00:00.000005Z"}],
        "projection/timestamp",
    ),
    # aggregates and GROUP BY
    case(
        "SELECT status, COUNT() AS numberOfDevices FROM devices GROUP BY status",
        [
            {"status": "disabled", "numberOfDevices": 1},
            {"status": "enabled", "numberOfDevices": 3},
        ],
        "group/count",
    ),
    case(
        "SELECT tags.floor, COUNT() AS n FROM devices GROUP BY tags.floor",
        [{"n": 1}, {"floor": None, "n": 1}, {"floor": 1, "n": 1}, {"floor": "1", "n": 1}],
        "group/mixed-types-ordered",
    ),
    case(
        "SELECT TOP 1 status, COUNT() AS n FROM devices GROUP BY status",
        [{"status": "disabled", "n": 1}],
        "group/top",
    ),
    case(
        "SELECT status, connectionState, COUNT() AS n FROM devices"
        " WHERE version < 3 GROUP BY status, connectionState",
        [
            {"status": "disabled", "connectionState": "Disconnected", "n": 1},
            {"status": "enabled", "connectionState": "Connected", "n": 1},
            {"status": "enabled", "connectionState": "Disconnected", "n": 1},
        ],
        "group/two-keys",
    ),
    case(
        "SELECT tags.nested, COUNT() AS n FROM devices GROUP BY tags.nested",
        [{"n": 4}],
        "group/objects-group-as-undefined",
    ),
    case(
        "SELECT status FROM devices GROUP BY status",
        [{"status": "disabled"}, {"status": "enabled"}],
        "group/distinct",
    ),
    case(
        "SELECT status, COUNT() AS n FROM devices WHERE tags.missing = 1 GROUP BY status",
        [],
        "group/no-rows",
    ),
    case(
        "SELECT COUNT() AS totalNumberOfDevices FROM devices",
        [{"totalNumberOfDevices": 4}],
        "aggregate/count",
    ),
    case(
        "SELECT COUNT() FROM devices WHERE tags.missing = 1",
        [{"$1": 0}],
        "aggregate/count-nothing-unnamed",
    ),
    case(
        "SELECT AVG(properties.reported.temp) AS avg, SUM(properties.reported.temp) AS sum,"
        " MIN(properties.reported.temp) AS min, MAX(properties.reported.temp) AS max,"
        " COUNT(properties.reported.temp) AS n FROM devices",
        [{"avg": 13.5, "sum": 40.5, "min": -5, "max": "hot", "n": 4}],
        "aggregate/mixed-values",
    ),
    case(
        "SELECT MAX(properties.reported.certificate.validUntil) AS latest,"
        " MIN(lastActivityTime) AS first FROM devices",
        [{"latest": "2027-06-01", "first": "2026-01-01T00:00:00.000000Z"}],
        "aggregate/strings",
    ),
    case("SELECT SUM(tags.site) AS s FROM devices", [{}], "aggregate/nothing-to-sum"),
    case(
        "SELECT SUM(version) AS s, AVG(version) AS a FROM devices",
        [{"s": 7, "a": 1.75}],
        "aggregate/column",
    ),
]

CERTIFICATE_CASES = [
    case(
        "SELECT serialNumber FROM certificates WHERE notAfter < '2026-02-15'",
        [{"serialNumber": "0a"}],
        "certificates/expiring",
    ),
    case(
        "SELECT deviceId, COUNT() AS n FROM certificates WHERE state = 'active' GROUP BY deviceId",
        [{"deviceId": "d1", "n": 1}, {"deviceId": "d2", "n": 1}],
        "certificates/group",
    ),
    case(
        "SELECT * FROM certificates WHERE issuedVia = 'hub'",
        [CERTIFICATES[2].document()],
        "certificates/star",
    ),
    case(
        "SELECT SerialNumber, Policy FROM certificates WHERE STARTSWITH(serialNumber, '0')",
        [{"serialNumber": "0a", "policy": "default"}, {"serialNumber": "0b", "policy": "default"}],
        "certificates/names",
    ),
]
