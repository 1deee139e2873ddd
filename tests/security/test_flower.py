"""Flower as ``mmaker run`` starts it (its command line): loopback only, basic auth from ``FLOWER_BASIC_AUTH``."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import requests

from tests.security.helpers import Flower, listening_addresses, run_command


def test_mmaker_run_binds_flower_to_loopback_by_default() -> None:
    assert run_command("flower", {})[-2:] == ["--address=127.0.0.1", "--port=5555"]
    moved = run_command("flower", {"MMAKER_FLOWER_ADDRESS": "10.0.0.5", "MMAKER_FLOWER_PORT": "5600"})
    assert moved[-2:] == ["--address=10.0.0.5", "--port=5600"]


def test_flower_listens_on_loopback_only_and_requires_basic_auth(tmp_path: Path) -> None:
    password = secrets.token_hex(12)
    flower = Flower(os.environ, tmp_path, basic_auth=f"ops:{password}")
    try:
        flower.wait_ready()
        assert listening_addresses(flower.port) == {"127.0.0.1"}  # no 0.0.0.0, no ::, no other interface

        for page in ("/", "/workers", "/tasks", "/api/workers", "/api/tasks", "/broker"):
            anonymous = flower.get(page, auth=False)
            assert anonymous.status_code == 401, page
            if not page.startswith("/api/"):  # a browser is asked for the credentials
                assert anonymous.headers.get("WWW-Authenticate", "").startswith("Basic"), page
            wrong = requests.get(flower.url + page, auth=("ops", "not-" + password), timeout=10)
            assert wrong.status_code == 401, page
        for page in ("/", "/workers", "/tasks", "/api/tasks"):
            assert flower.get(page).status_code == 200, page
    finally:
        flower.stop()
    assert password not in flower.log()
