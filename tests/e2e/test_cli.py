"""The command line beside `serve`: checks that write nothing, and errors that name the file
and the key."""

import subprocess
from pathlib import Path

from conftest import ROOT

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
