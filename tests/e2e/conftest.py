"""Fixtures of the end-to-end suite: one test bed per run with real components on 127.0.0.1.

`bed` starts SimpleSAMLphp (the IdP), the demo Streamlit app and the saml-gateway binary
(`SAML_GATEWAY_BIN`, default target/debug/saml-gateway), in that order, with their work files
and logs under target/e2e/. Every test logs in with its own client, so tests do not share
sessions; they share the gateway's audit log, which `bed.audit_since()` reads from a mark.
"""

import os
import sys
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # tests/testbed.py

import deploy  # noqa: E402
import testbed  # noqa: E402

ROOT = testbed.ROOT
ARTIFACTS = ROOT / "target" / "e2e"


class Bed(testbed.AuditReader):
    """The running IdP, Streamlit app and gateway of one test run."""

    def __init__(self, work, idp, streamlit, gateway):
        self.work = work
        self.idp = idp
        self.streamlit = streamlit
        self.gateway = gateway

    @property
    def url(self):
        """The gateway's base URL."""
        return self.gateway.base_url

    @property
    def audit_path(self):
        return self.work / "audit.jsonl"

    def gateway_alive(self):
        return self.gateway.proc is not None and self.gateway.proc.poll() is None


def _gateway_binary():
    path = Path(os.environ.get("SAML_GATEWAY_BIN", ROOT / "target" / "debug" / "saml-gateway"))
    if not path.is_file():
        pytest.exit(f"{path} does not exist: build it with `cargo build` first", returncode=2)
    return path


@pytest.fixture(scope="session")
def gateway_binary():
    """The saml-gateway binary under test."""
    return _gateway_binary()


@pytest.fixture(scope="session")
def bed():
    work = ARTIFACTS / time.strftime("run-%Y%m%d-%H%M%S")
    work.mkdir(parents=True, exist_ok=True)
    gw_port, st_port = testbed.free_port(), testbed.free_port()
    entity_id, acs, slo = testbed.gateway_urls(gw_port)
    idp = testbed.Idp(work, entity_id, acs, slo_url=slo).start()
    idp.save_metadata(work / "idp-metadata.xml")
    st = testbed.demo_streamlit(work, st_port).start()
    gw = testbed.Gateway(_gateway_binary(), testbed.gateway_config(work, gw_port, st_port),
                         work).start()
    try:
        yield Bed(work, idp, st, gw)
    finally:
        for service in (gw, st, idp):
            service.stop()


@pytest.fixture(scope="module")
def deployment(bed, request):
    """A deployment (its own IdP) for this test module; replicas are started by the tests or
    by `pair`. Needs the Redis at REDIS_URL."""
    if not deploy.redis_answers(deploy.REDIS_URL):
        pytest.fail(f"no Redis answers at REDIS_URL={deploy.REDIS_URL}: start redis-server or set "
                    "REDIS_URL (scripts/test.sh does both)", pytrace=False)
    binary = bed.gateway.binary
    name = request.module.__name__.rsplit(".", 1)[-1]
    d = deploy.Deployment(bed.work / f"deploy-{name}", binary, bed.streamlit.port)
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture(scope="module")
def pair(deployment):
    """Replicas A (the public port) and B, both on the Redis at REDIS_URL."""
    return (deployment.replica("a", deploy.REDIS_URL),
            deployment.replica("b", deploy.REDIS_URL))
