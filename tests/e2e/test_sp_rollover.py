"""SP key rollover with the real IdP: publish the next key pair, then promote it.

The IdP (SimpleSAMLphp) checks the gateway's AuthnRequest signatures (`validate.authnrequest`)
and encrypts assertions to the certificate its SP metadata names for encryption. During the
overlap the gateway publishes both certificates and decrypts with either key, so an IdP that
already encrypts to the next certificate keeps working; after the promotion the gateway signs
with the new key and publishes only it.
"""

import re
import shutil
import subprocess

import pytest

import testbed
from conftest import ARTIFACTS
from flows import cookie_header, login, login_until_acs, new_client, post_to_acs, run_app


def keygen(binary, work, name):
    key, cert = work / f"{name}.key", work / f"{name}.crt"
    subprocess.run([binary, "keygen", "--key", key, "--cert", cert], check=True,
                   capture_output=True)
    return key, cert


def pem_body(path):
    return "".join(l for l in path.read_text().splitlines() if not l.startswith("-----"))


@pytest.fixture(scope="module")
def rollover(bed):
    work = ARTIFACTS / (bed.work.name + "-sp-rollover")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    binary = bed.gateway.binary
    old = keygen(binary, work, "sp")
    new = keygen(binary, work, "sp-next")
    port = testbed.free_port()
    entity_id, acs, slo = testbed.gateway_urls(port)
    # The IdP checks signatures with the current certificate and already encrypts to the next.
    idp = testbed.Idp(work, entity_id, acs, slo_url=slo, sp_cert_pem=old[1].read_text(),
                      sp_encryption_cert_pem=new[1].read_text(),
                      validate_authnrequest=True, encrypt_assertions=True).start()
    idp.save_metadata(work / "idp-metadata.xml")
    base = testbed.gateway_config(work, port, bed.streamlit.port, sign_authn_requests=True)
    base = base.replace("  sign_authn_requests: true\n",
                        "  sign_authn_requests: true\n  encrypted_assertions: true\n")
    base = base.replace("idp:\n", "idp:\n  allow_cbc_encryption: true\n", 1)
    state = {"work": work, "idp": idp, "old": old, "new": new, "base": base, "gateway": None}

    def start(text):
        if state["gateway"]:
            state["gateway"].stop()
        state["gateway"] = testbed.Gateway(binary, text, work).start()
        return state["gateway"]

    state["start"] = start
    try:
        yield state
    finally:
        if state["gateway"]:
            state["gateway"].stop()
        idp.stop()


def key_descriptors(metadata, use):
    return re.findall(rf'<md:KeyDescriptor use="{use}">.*?<ds:X509Certificate>([^<]+)<', metadata,
                      re.S)


def signs_in(gateway, user="alice", password="alice-pass"):
    client = new_client()
    form = login_until_acs(client, gateway.base_url, user, password)
    r = post_to_acs(client, form)
    assert r.status_code == 303, r.text
    page = run_app(gateway.base_url, {"Cookie": cookie_header(client)})
    assert page.headers["x-auth-user"] == [user]


def test_overlap_publishes_both_and_decrypts_with_the_next_key(rollover):
    old, new = rollover["old"], rollover["new"]
    text = rollover["base"].replace(
        f"  cert_file: {old[1]}\n",
        f"  cert_file: {old[1]}\n  next_key_file: {new[0]}\n  next_cert_file: {new[1]}\n")
    gateway = rollover["start"](text)
    metadata = new_client().get(gateway.metadata_url).text
    assert key_descriptors(metadata, "signing") == [pem_body(old[1]), pem_body(new[1])]
    assert key_descriptors(metadata, "encryption") == [pem_body(old[1]), pem_body(new[1])]
    # No empty elements, and every KeyDescriptor says what it is for.
    assert not re.search(r"<((?:md|ds):\w+)[^>]*></\1>", metadata), metadata
    assert "<md:KeyDescriptor>" not in metadata
    log = gateway.log_path.read_text()
    assert "SP key rollover" in log
    # Signed with the current key (the IdP checks it), encrypted to the next: both work.
    signs_in(gateway)


def test_without_the_next_key_the_gateway_cannot_read_what_the_idp_encrypts(rollover):
    """The same IdP against the gateway before the rollover started: proves the test above
    needed the next key."""
    gateway = rollover["start"](rollover["base"])
    client = new_client()
    form = login_until_acs(client, gateway.base_url, "bob", "bob-pass")
    r = post_to_acs(client, form)
    assert r.status_code == 400 and "decryption_failed" in r.text, r.text


def test_promotion_signs_with_the_new_key(rollover):
    old, new, idp = rollover["old"], rollover["new"], rollover["idp"]
    text = rollover["base"].replace(f"  key_file: {old[0]}\n", f"  key_file: {new[0]}\n")
    text = text.replace(f"  cert_file: {old[1]}\n", f"  cert_file: {new[1]}\n")
    gateway = rollover["start"](text)
    metadata = new_client().get(gateway.metadata_url).text
    assert key_descriptors(metadata, "signing") == [pem_body(new[1])]
    # The IdP still holds the old certificate for signatures: it refuses the new signature...
    client = new_client()
    r = client.get(gateway.base_url + "/saml/login?return_to=/", allow_redirects=False)
    r = client.get(r.headers["Location"])
    assert "Unable to validate signature" in r.text, r.text[:500]
    # ...until it imports the new metadata; then logins work again.
    idp.set_sp_certificates(new[1].read_text())
    signs_in(gateway, "carol", "carol-pass")


def test_half_a_next_pair_or_a_mismatched_one_stops_start_up(rollover):
    old, new, work = rollover["old"], rollover["new"], rollover["work"]
    binary = rollover["gateway"].binary if rollover["gateway"] else None
    config = work / "check.yaml"
    for lines, says in (
        (f"  next_key_file: {new[0]}\n", "sp.next_cert_file"),
        (f"  next_key_file: {new[0]}\n  next_cert_file: {old[1]}\n",
         "sp.next_cert_file: the certificate does not belong to the key in sp.next_key_file"),
        (f"  next_key_file: {old[0]}\n  next_cert_file: {old[1]}\n", "is the current certificate"),
    ):
        config.write_text(rollover["base"].replace(
            f"  cert_file: {old[1]}\n", f"  cert_file: {old[1]}\n{lines}"))
        out = subprocess.run([binary, "check-config", "--config", config], capture_output=True,
                             text=True)
        assert out.returncode != 0 and says in out.stderr, (lines, out.stderr)
    # Before the first start (no current pair yet), a bad next pair is found too.
    text = rollover["base"].replace(f"  key_file: {old[0]}\n", f"  key_file: {work}/none.key\n")
    text = text.replace(f"  cert_file: {old[1]}\n", f"  cert_file: {work}/none.crt\n"
                        f"  next_key_file: {new[0]}\n  next_cert_file: {old[1]}\n")
    config.write_text(text)
    out = subprocess.run([binary, "check-config", "--config", config], capture_output=True,
                         text=True)
    assert out.returncode != 0 and "sp.next_cert_file" in out.stderr, out.stderr
    assert not (work / "none.key").exists()
