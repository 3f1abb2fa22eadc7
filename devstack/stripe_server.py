"""A local Stripe-compatible server for the tests and the local stack: the few endpoints pgplane
calls through the ``stripe`` SDK (customers, checkout and portal sessions, subscriptions, meter
events), answering with objects shaped like Stripe's. What Stripe itself would do (a customer
subscribes, a payment fails) is driven through ``/_local/...``. Run: ``python -m devstack.stripe_server PORT``.

It is a stand-in for a third party, not a model of Stripe's behaviour: what it proves is that
pgplane calls the SDK correctly and acts on what Stripe answers.
"""

from __future__ import annotations

import secrets
import sys
import time
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from fastapi import FastAPI, HTTPException, Request

app = FastAPI()
OBJECTS: dict[str, dict[str, Any]] = {}
METER_EVENTS: dict[str, dict[str, Any]] = {}


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


async def _form(request: Request) -> dict[str, str]:
    """Stripe's form encoding, flattened: ``line_items[0][price]`` stays that key."""
    return {key: values[-1] for key, values in parse_qs((await request.body()).decode()).items()}


def _metadata(form: dict[str, str]) -> dict[str, str]:
    return {key[len("metadata[") : -1]: value for key, value in form.items() if key.startswith("metadata[")}


@app.post("/v1/customers")
async def create_customer(request: Request) -> dict[str, Any]:
    form = await _form(request)
    customer = {
        "id": _id("cus"),
        "object": "customer",
        "email": form.get("email"),
        "name": form.get("name"),
        "metadata": _metadata(form),
        "created": int(time.time()),
    }
    OBJECTS[str(customer["id"])] = customer
    return customer


@app.post("/v1/checkout/sessions")
async def create_checkout(request: Request) -> dict[str, Any]:
    form = await _form(request)
    if form.get("customer") not in OBJECTS or not form.get("line_items[0][price]"):
        raise HTTPException(400, {"error": {"type": "invalid_request_error", "message": "customer and price needed"}})
    session_id = _id("cs_test")
    session = {
        "id": session_id,
        "object": "checkout.session",
        "mode": form.get("mode"),
        "customer": form["customer"],
        "client_reference_id": form.get("client_reference_id"),
        "success_url": form.get("success_url"),
        "cancel_url": form.get("cancel_url"),
        "url": f"{request.base_url}checkout/{session_id}",
        "status": "open",
        "subscription": None,
        "metadata": _metadata(form),
        "line_items_price": form["line_items[0][price]"],
    }
    OBJECTS[session_id] = session
    return session


@app.post("/v1/billing_portal/sessions")
async def create_portal(request: Request) -> dict[str, Any]:
    form = await _form(request)
    if form.get("customer") not in OBJECTS:
        raise HTTPException(400, {"error": {"type": "invalid_request_error", "message": "no such customer"}})
    session_id = _id("bps")
    return {
        "id": session_id,
        "object": "billing_portal.session",
        "customer": form["customer"],
        "return_url": form.get("return_url"),
        "url": f"{request.base_url}portal/{session_id}",
    }


@app.get("/v1/subscriptions/{subscription_id}")
async def read_subscription(subscription_id: str) -> dict[str, Any]:
    subscription = OBJECTS.get(subscription_id)
    if subscription is None:
        raise HTTPException(404, {"error": {"type": "invalid_request_error", "message": "No such subscription"}})
    return subscription


@app.post("/v1/billing/meter_events")
async def meter_event(request: Request) -> dict[str, Any]:
    """Stripe keeps one event per ``identifier``: a retry with it changes nothing."""
    form = await _form(request)
    identifier = form.get("identifier") or _id("mev")
    event = METER_EVENTS.setdefault(
        identifier,
        {
            "object": "billing.meter_event",
            "identifier": identifier,
            "event_name": form.get("event_name"),
            "payload": {k[len("payload[") : -1]: v for k, v in form.items() if k.startswith("payload[")},
            "timestamp": int(form.get("timestamp") or time.time()),
        },
    )
    return event


# --- what Stripe's side does on its own ------------------------------------------------------


@app.put("/_local/subscriptions/{subscription_id}")
async def put_subscription(subscription_id: str, request: Request) -> dict[str, Any]:
    """A subscription as Stripe holds it now: ``{"customer", "status", "price"}``."""
    body = await request.json()
    subscription = {
        "id": subscription_id,
        "object": "subscription",
        "customer": body["customer"],
        "status": body["status"],
        "items": {
            "object": "list",
            "data": [
                {"id": _id("si"), "object": "subscription_item", "price": {"id": body["price"], "object": "price"}}
            ],
        },
        "metadata": body.get("metadata", {}),
        "created": int(time.time()),
    }
    OBJECTS[subscription_id] = subscription
    return subscription


@app.get("/_local/meter_events")
async def meter_events() -> list[dict[str, Any]]:
    return list(METER_EVENTS.values())


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
