"""The OpenAPI document tells the truth: Schemathesis generates requests for every operation from
it and sends them to a running platform. Any server error, undocumented status, content type or
body, a request served without the token, an incomplete ``Allow`` on a 405, or a schema-valid
request refused fails the test (settings and the reasons for the two exceptions in
``schemathesis.toml``). The Swagger page works offline: its assets come from the API itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from devstack.stack import Stack
from tests.platform_client import PlatformClient
from tests.stacks import shared_stack

HERE = Path(__file__).parent


# Schemathesis sends wrong tokens on purpose (every route must refuse them): no throttling here,
# it has its own test. The other tests only read.
stack = shared_stack({"PGPLANE_AUTH_FAILURES_PER_MINUTE": "100000"})


def test_schemathesis_finds_nothing_undocumented(stack: Stack, tmp_path: Path) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    result = subprocess.run(
        [
            str(schemathesis),
            "--config-file",
            str(HERE / "schemathesis.toml"),
            "run",
            f"{stack.api_url}/api/openapi.json",
            "--header",
            f"Authorization: Bearer {stack.admin_token}",
            "--max-examples",
            "25",
            "--workers",
            "2",
        ],
        env=os.environ | {"SCHEMATHESIS_HOOKS": "tests.e2e.schemathesis_hooks", "PYTHONPATH": str(HERE.parent.parent)},
        cwd=tmp_path,  # its cache of failures stays out of the checkout
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", result.stdout)
    assert tested is not None and int(tested.group(1)) >= 25, result.stdout[-2000:]


async def test_the_docs_page_loads_its_assets_from_the_api(client: PlatformClient) -> None:
    page = await client.http.get(f"{client.stack.api_url}/api/docs")
    assert page.status_code == 200
    assets = re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css))["']""", page.text)
    assert assets and all(asset.startswith("/api/docs/assets/") for asset in assets), assets
    for asset in assets:
        response = await client.http.get(f"{client.stack.api_url}{asset}")
        assert response.status_code == 200 and len(response.content) > 1000, asset


async def test_a_405_names_every_method_of_the_path(client: PlatformClient) -> None:
    response = await client.http.patch("/databases/00000000-0000-0000-0000-000000000000")
    assert response.status_code == 405
    assert response.json()["error"]["code"] == "method_not_allowed"
    assert set(response.headers["allow"].split(", ")) == {"GET", "DELETE"}
