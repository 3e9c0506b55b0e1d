"""The command line beside `serve`: checks that write nothing, and errors that name the file
and the key."""

import base64
import json
import subprocess
from pathlib import Path
from urllib.parse import quote

from conftest import ROOT
from flows import login_until_acs, new_client, post_to_acs

CONFIG = """public_url: http://127.0.0.1:8080
sp:
  key_file: sp.key
  cert_file: sp.crt
idp:
  metadata_file: idp.xml
routes:
  - path: /
    upstream: http://127.0.0.1:8501
audit:
  file: audit.jsonl
"""


def run(bed, *args):
    return subprocess.run([bed.gateway.binary, *map(str, args)], capture_output=True, text=True)


def folder(tmp_path, config=CONFIG):
    (tmp_path / "idp.xml").write_text((ROOT / "metadata" / "testbed-idp.xml").read_text())
    (tmp_path / "gateway.yaml").write_text(config)
    return tmp_path / "gateway.yaml"


def test_check_config_and_metadata_write_no_key_files(bed, tmp_path):
    config = folder(tmp_path)
    r = run(bed, "check-config", "--config", config)
    assert r.returncode == 0, r.stderr
    assert "serve` will generate them" in r.stdout
    r = run(bed, "metadata", "--config", config)
    assert r.returncode == 1
    assert f"{config}: sp.key_file:" in r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gateway.yaml", "idp.xml"]

    assert run(bed, "keygen", "--key", tmp_path / "sp.key", "--cert", tmp_path / "sp.crt") \
        .returncode == 0
    r = run(bed, "metadata", "--config", config)
    assert r.returncode == 0 and "<md:EntityDescriptor" in r.stdout


def test_bad_config_names_file_key_and_problem(bed, tmp_path):
    config = folder(tmp_path, CONFIG.replace("upstream: http://127.0.0.1:8501",
                                             "upstream: ftp://127.0.0.1:8501"))
    r = run(bed, "check-config", "--config", config)
    assert r.returncode == 1
    assert f"{config}: routes[0].upstream:" in r.stderr
    r = run(bed, "serve", "--config", config)
    assert r.returncode == 1
    assert f"{config}: routes[0].upstream:" in r.stderr


def decode(bed, response_text, *args, tmp_path, name="response.txt"):
    """Runs `saml-gateway decode` on `response_text` with the test bed's config."""
    path = tmp_path / name
    path.write_text(response_text)
    return run(bed, "decode", "--config", bed.gateway.config_path, "--response", path, *args)


def test_decode_shows_the_verdict_without_using_the_response(bed, tmp_path):
    client = new_client()
    form = login_until_acs(client, bed.url, "alice", "alice-pass")
    value = form.fields["SAMLResponse"]
    mark = bed.audit_mark()

    r = decode(bed, value, tmp_path=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "<samlp:Response" in r.stdout and "verdict: accepted" in r.stdout
    assert "  user: alice" in r.stdout and "  groups: analytics, staff" in r.stdout
    assert "  authn context: urn:oasis:names:tc:SAML:2.0:ac:classes:Password" in r.stdout
    assert "check audience: ok" in r.stdout and "check issuer: ok" in r.stdout
    assert "(matches a trusted certificate;" in r.stdout, r.stdout

    # A HAR file exported by the browser, holding the POST to the ACS.
    har = {"log": {"entries": [{"request": {"method": "POST", "url": form.action, "postData": {
        "mimeType": "application/x-www-form-urlencoded",
        "params": [{"name": "SAMLResponse", "value": quote(value, safe="")},
                   {"name": "RelayState", "value": form.fields["RelayState"]}]}}}]}}
    r = decode(bed, json.dumps(har), tmp_path=tmp_path, name="login.har")
    assert r.returncode == 0 and "verdict: accepted" in r.stdout, r.stdout

    # Nothing was stored: no audit record, and the response still logs in once.
    assert bed.audit_since(mark) == []
    assert post_to_acs(client, form).status_code == 303

    # The login URL the gateway sent the browser to: its AuthnRequest, decoded.
    location = new_client().get(bed.url + "/saml/login?return_to=/",
                                allow_redirects=False).headers["Location"]
    r = decode(bed, location, tmp_path=tmp_path, name="login-url.txt")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "== SAMLRequest 1 of 1" in r.stdout and "<samlp:AuthnRequest" in r.stdout
    assert "SAMLResponse" not in r.stdout


def test_decode_names_the_failed_check(bed, tmp_path):
    client = new_client()
    form = login_until_acs(client, bed.url, "bob", "bob-pass")
    value = form.fields["SAMLResponse"]

    r = decode(bed, value, "--at", "2099-01-01T00:00:00Z", tmp_path=tmp_path)
    assert r.returncode == 1
    # The first time check to fail is the IssueInstant's age.
    assert "verdict: refused: issue_instant_invalid" in r.stdout, r.stdout
    assert "check clock: the response was issued" in r.stdout

    xml = base64.b64decode(value).decode()
    forged = base64.b64encode(xml.replace(">bob<", ">alice<").encode()).decode()
    r = decode(bed, forged, tmp_path=tmp_path)
    assert r.returncode == 1
    assert "verdict: refused: signature_invalid" in r.stdout, r.stdout
    assert "verdict: accepted" not in r.stdout

    r = decode(bed, "not base64 at all!", tmp_path=tmp_path)
    assert r.returncode == 1 and "verdict: refused:" in r.stdout
