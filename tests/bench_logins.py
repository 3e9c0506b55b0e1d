"""Times N scripted logins through the gateway against the SimpleSAMLphp test IdP.

    .venv/bin/python tests/bench_logins.py --count 20 [--gateway-bin target/release/saml-gateway]

Each login is the whole browser flow (see tests/e2e/flows.py). The time of each step is split
between the gateway's steps (the protected page's redirect, /saml/login, /saml/acs) and the
IdP's steps (SSO endpoint and its login form), so the gateway's share is a ratio against the IdP
measured in the same run. Prints the median and the 90th percentile of each. Not a test.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path
from urllib.parse import urljoin

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE / "e2e"))

import testbed  # noqa: E402
from flows import NAVIGATE, forms, new_client  # noqa: E402


def timed(clock, key, call):
    start = time.perf_counter()
    result = call()
    clock[key] = clock.get(key, 0.0) + time.perf_counter() - start
    return result


def one_login(gateway_url, user, password):
    """One login; returns seconds per step: gate, login, acs (the gateway's; "gateway" is their
    sum) and idp."""
    client, clock = new_client(), {}
    r = timed(clock, "gate", lambda: client.get(gateway_url + "/", headers=NAVIGATE,
                                                allow_redirects=False))
    login_url = urljoin(gateway_url, r.headers["Location"])
    r = timed(clock, "login", lambda: client.get(login_url, allow_redirects=False))
    r = timed(clock, "idp", lambda: client.get(r.headers["Location"]))
    form = [f for f in forms(r) if "password" in f.fields][0]
    fields = {**form.fields, "username": user, "password": password}
    r = timed(clock, "idp", lambda: client.post(form.action, data=fields))
    acs = [f for f in forms(r) if "SAMLResponse" in f.fields][0]
    r = timed(clock, "acs", lambda: client.post(acs.action, data=acs.fields,
                                                allow_redirects=False))
    if r.status_code != 303 or "saml-session" not in client.cookies:
        raise RuntimeError(f"login failed: HTTP {r.status_code}: {r.text[:300]}")
    clock["gateway"] = clock["gate"] + clock["login"] + clock["acs"]
    return clock


def summary(values):
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return statistics.median(ordered) * 1000, p90 * 1000


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=20)
    parser.add_argument("--gateway-bin", default=str(testbed.ROOT / "target/debug/saml-gateway"))
    args = parser.parse_args()
    work = testbed.ROOT / "target" / "bench-logins"
    work.mkdir(parents=True, exist_ok=True)
    gw_port, st_port = testbed.free_port(), testbed.free_port()
    entity_id, acs, slo = testbed.gateway_urls(gw_port)
    with testbed.Idp(work, entity_id, acs, slo_url=slo) as idp:
        idp.save_metadata(work / "idp-metadata.xml")
        with testbed.demo_streamlit(work, st_port), \
                testbed.Gateway(args.gateway_bin, testbed.gateway_config(work, gw_port, st_port),
                                work) as gw:
            one_login(gw.base_url, "alice", "alice-pass")  # warm-up: PHP opcache, pools
            runs = [one_login(gw.base_url, "alice", "alice-pass") for _ in range(args.count)]
    total = [r["gateway"] + r["idp"] for r in runs]
    print(f"{args.count} logins ({Path(args.gateway_bin).name} "
          f"{'release' if 'release' in args.gateway_bin else 'debug'} build)")
    for name, values in (("whole login", total), ("gateway steps", [r["gateway"] for r in runs]),
                         ("IdP steps", [r["idp"] for r in runs]),
                         ("  redirect", [r["gate"] for r in runs]),
                         ("  /saml/login", [r["login"] for r in runs]),
                         ("  /saml/acs", [r["acs"] for r in runs])):
        median, p90 = summary(values)
        print(f"  {name:14} median {median:7.1f} ms   p90 {p90:7.1f} ms")
    gw_med = statistics.median(r["gateway"] for r in runs)
    idp_med = statistics.median(r["idp"] for r in runs)
    print(f"  gateway / IdP time (medians): {gw_med / idp_med:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
