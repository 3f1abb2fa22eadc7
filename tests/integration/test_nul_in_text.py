"""A NUL character in some text reaches PostgreSQL, which can store none: the API answers 422
``invalid_text`` instead of a 500. The refusal is PostgreSQL's own, through the engine the API uses."""

from __future__ import annotations

import httpx
import sqlalchemy as sa
from fastapi import FastAPI

from api.errors import install_error_handlers
from devstack.cluster import Cluster
from infra.metadata.engine import make_engine


async def test_a_nul_postgresql_refuses_is_a_422(cluster: Cluster) -> None:
    engine = make_engine(cluster.superuser_dsn(), pool_size=1)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/echo")
    async def echo(text: str) -> str:
        async with engine.connect() as conn:
            return str((await conn.execute(sa.select(sa.literal(text, sa.Text)))).scalar_one())

    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as http:
            assert (await http.get("/echo", params={"text": "fine"})).json() == "fine"
            refused = await http.get("/echo", params={"text": "a\x00b"})
    finally:
        await engine.dispose()
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["code"] == "invalid_text"
