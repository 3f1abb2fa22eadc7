"""Webhook signatures checked with the Standard Webhooks reference library, the address guard fed
names and addresses through a resolver we control (nothing is ever connected to), the retry
schedule and Retry-After."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from standardwebhooks import Webhook

from consumers.webhooks.dispatcher import Schedule
from infra.address_guard import Refused, Resolver, check_url
from infra.webhook_sender import retry_after_seconds
from infra.webhook_signing import new_secret, signed_headers

BODY = b'{"type":"database.created","sequence":1}'


def test_signatures_verify_with_the_reference_library() -> None:
    secret = new_secret()
    assert secret.startswith("whsec_")
    now = int(datetime.now(UTC).timestamp())
    headers = signed_headers([secret], msg_id="evt-1", timestamp=now, body=BODY)
    assert Webhook(secret).verify(BODY, headers) == {"type": "database.created", "sequence": 1}
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(new_secret()).verify(BODY, headers)
    with pytest.raises(Exception, match="No matching signature"):
        Webhook(secret).verify(BODY.replace(b"1", b"2"), headers)


def test_during_a_rotation_either_secret_verifies() -> None:
    old, new = new_secret(), new_secret()
    now = int(datetime.now(UTC).timestamp())
    headers = signed_headers([new, old], msg_id="evt-2", timestamp=now, body=BODY)
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(old).verify(BODY, headers)
    Webhook(new).verify(BODY, headers)


def resolver(table: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]

    return resolve


NAMES = resolver(
    {
        "hooks.example.com": ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946"],
        "internal.example.com": ["10.0.0.7"],
        "mixed.example.com": ["93.184.216.34", "192.168.1.1"],
        "metadata.example.com": ["169.254.169.254"],
        "aws6.example.com": ["fd00:ec2::254"],
        "local.example.com": ["127.0.0.1"],
        "mapped.example.com": ["::ffff:10.1.2.3"],
        "cgnat.example.com": ["100.64.0.1"],
        "zero.example.com": ["0.0.0.0"],
    }
)


async def check(url: str, *, loopback: bool = False, http: bool = False) -> str:
    return (await check_url(url, allow_loopback=loopback, allow_http=http, resolver=NAMES)).address


async def test_a_public_https_name_passes_and_is_pinned_to_its_checked_address() -> None:
    assert await check("https://hooks.example.com/pgplane") == "93.184.216.34"
    assert await check("https://93.184.216.34:8443/x") == "93.184.216.34"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://internal.example.com/", "not a public address"),
        ("https://mixed.example.com/", "192.168.1.1 is not a public address"),
        ("https://metadata.example.com/", "metadata"),
        ("https://aws6.example.com/", "metadata"),
        ("http://169.254.169.254/latest/meta-data/", "must use https"),
        ("https://169.254.169.254/latest/meta-data/", "metadata"),
        ("https://local.example.com/", "loopback"),
        ("https://[::1]/", "loopback"),
        ("https://mapped.example.com/", "not a public address"),
        ("https://cgnat.example.com/", "not a public address"),
        ("https://zero.example.com/", "not a public address"),
        ("https://nowhere.example.com/", "does not resolve"),
        ("http://hooks.example.com/", "must use https"),
        ("ftp://hooks.example.com/", "https://"),
        ("https://user:pw@hooks.example.com/", "credentials"),
        ("https://hooks.example.com:99999/", "port"),
    ],
)
async def test_private_metadata_and_loopback_addresses_are_refused(url: str, reason: str) -> None:
    with pytest.raises(Refused, match=reason):
        await check(url)


async def test_loopback_and_http_only_where_the_deployment_allows_them() -> None:
    assert await check("http://127.0.0.1:8080/hook", loopback=True, http=True) == "127.0.0.1"
    assert await check("https://local.example.com/", loopback=True) == "127.0.0.1"
    with pytest.raises(Refused, match="not a public address"):
        await check("http://10.0.0.7/", loopback=True, http=True)  # loopback only, never private
    with pytest.raises(Refused, match="metadata"):
        await check("http://169.254.169.254/", loopback=True, http=True)


def test_the_schedule_gives_up_after_its_last_step() -> None:
    schedule = Schedule.parse("0,5,300")
    assert schedule.after_failure(1) is not None and 4.5 <= (schedule.after_failure(1) or 0) <= 5.5
    assert 270 <= (schedule.after_failure(2) or 0) <= 330
    assert schedule.after_failure(3) is None


def test_retry_after_is_seconds_or_a_date_capped_at_a_day() -> None:
    now = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("120", now) == 120
    assert retry_after_seconds("Wed, 02 Dec 2026 12:05:00 GMT", now) == 300
    assert retry_after_seconds(str(int(timedelta(days=9).total_seconds())), now) == 86400
    assert retry_after_seconds("soon", now) is None
    assert retry_after_seconds(None, now) is None
