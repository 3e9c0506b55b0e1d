"""The audit log as operations meet it: rotated by Debian's logrotate under a running gateway,
and a disk that refuses the record.

A rotation (rename; the gateway makes the new file) needs no signal: before each write the gateway checks
that the path still names the file it holds, and opens the path anew when it does not. Records
written before the rotation stay in the rotated file, those after it go to the new one; none is
lost or split. When a record cannot be written, a login fails closed (503,
`audit_unavailable`) rather than go unaudited.
"""

import subprocess

import pytest

import testbed
from flows import login, new_client


@pytest.fixture(scope="module")
def own(bed):
    g = testbed.IdpAndGateway(testbed.fresh_work(bed.work, "audit-rotation"), bed.streamlit.port,
                              bed.gateway.binary)
    try:
        yield g
    finally:
        g.stop()


def events(path):
    """The (event, user) pairs of the audit file at `path`, in order."""
    reader = testbed.AuditReader()
    reader.audit_path = path
    return [(r["event"], r.get("user")) for r in reader.audit_since(0)]


def test_logrotate_renames_and_the_next_records_go_to_the_new_file(own):
    login(new_client(), own.url, "alice", "alice-pass")
    before = events(own.audit_path)
    assert ("login_success", "alice") in before, before

    config = own.work / "logrotate.conf"
    # As docs/configuration.md recommends: the gateway makes the new file itself.
    config.write_text(f"{own.audit_path} {{\n  rotate 2\n  nocreate\n"
                      "  nocompress\n  missingok\n}\n")
    subprocess.run(["logrotate", "--force", "--state", own.work / "logrotate.state", config],
                   check=True, capture_output=True)
    rotated = own.audit_path.with_name(own.audit_path.name + ".1")
    assert events(rotated) == before
    assert not own.audit_path.exists()

    login(new_client(), own.url, "bob", "bob-pass")
    after = events(own.audit_path)
    assert after == [("login_start", None), ("login_success", "bob")], after
    assert own.audit_path.stat().st_mode & 0o777 == 0o640
    # The rotated file got nothing more.
    assert events(rotated) == before
    assert "audit log reopened after rotation" in testbed.log_tail(own.gateway.log_path, 200)


def test_a_record_that_cannot_be_written_fails_the_login_closed(bed):
    # /dev/full takes the file open but refuses every write (ENOSPC), as a full disk would.
    work = testbed.fresh_work(bed.work, "audit-full")
    port = testbed.free_port()
    text = testbed.gateway_config(bed.work, port, bed.streamlit.port)
    text = text.replace(f"file: {bed.work.resolve()}/audit.jsonl", "file: /dev/full")
    assert "file: /dev/full" in text
    with testbed.Gateway(bed.gateway.binary, text, work).start() as gateway:
        r = new_client().get(gateway.base_url + "/saml/login", allow_redirects=False)
        assert r.status_code == 503, r.text
        assert "audit_unavailable" in r.text
        assert "Location" not in r.headers
        log = testbed.log_tail(gateway.log_path, 200)
        assert "cannot write the audit log" in log and "/dev/full" in log
