"""The contract and the pages the server serves: /openapi.json and /openapi.yaml are the
repository's openapi.yaml, and / and /docs work in a real browser (headless Chromium through
selenium), rendering what the API answers. The page tests wait on DOM conditions with
WebDriverWait, never on fixed sleeps."""
import json
import re
import shutil

import pytest
import requests
import yaml

from http_helpers import REPO, Server, default_config, shared_checkpoint

SPEC = yaml.safe_load((REPO / "openapi.yaml").read_text())
TOKEN = "page-test-token"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return shared_checkpoint(tmp_path_factory)


@pytest.fixture(scope="module")
def server(model_dir, tmp_path_factory):
    cfg = default_config(model_dir, server={"auth_token": TOKEN})
    srv = Server(tmp_path_factory.mktemp("pages"), model_dir, cfg)
    srv.start()
    yield srv
    assert srv.stop() == 0, srv.stderr()


def api(server, path, body):
    r = requests.post(server.url + path, json=body, headers={"Authorization": f"Bearer {TOKEN}"},
                      timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


# ---- the contract ----

def test_openapi_json_is_the_repository_spec(server):
    r = requests.get(server.url + "/openapi.json", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"] == "application/json"
    assert r.json() == SPEC


def test_openapi_yaml_is_the_repository_file_byte_for_byte(server):
    r = requests.get(server.url + "/openapi.yaml", timeout=10)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/yaml")
    assert r.content == (REPO / "openapi.yaml").read_bytes()


@pytest.mark.parametrize("path", ["/", "/docs", "/openapi.json", "/openapi.yaml"])
def test_public_without_token_and_head_works(server, path):
    get = requests.get(server.url + path, timeout=10)
    assert get.status_code == 200
    head = requests.head(server.url + path, timeout=10)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == len(get.content)
    assert get.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize("path", ["/", "/docs"])
def test_pages_load_nothing_from_elsewhere(server, path):
    r = requests.get(server.url + path, timeout=10)
    assert r.headers["Content-Type"] == "text/html; charset=utf-8"
    csp = r.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    # No external script, style, font or image: every src/href is local or an anchor.
    for ref in re.findall(r'(?:src|href)\s*=\s*"([^"]*)"', r.text):
        assert ref.startswith("/") or ref.startswith("#"), ref
    assert "http://" not in r.text and "https://" not in r.text


def test_pages_refuse_post(server):
    r = requests.post(server.url + "/", data=b"{}", timeout=10)
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "method_not_allowed"


# ---- a real browser ----

@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium")
    driver_bin = shutil.which("chromedriver")
    assert chromium and driver_bin, "apt-get install chromium chromium-driver (make deps)"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for a in ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1100,1400"]:
        opts.add_argument(a)
    drv = webdriver.Chrome(service=Service(driver_bin), options=opts)
    yield drv
    drv.quit()


def wait(browser, cond, timeout=30):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(cond)


def set_value(browser, element_id, text):
    el = browser.find_element("id", element_id)
    el.clear()
    el.send_keys(text)


def test_playground_fill_mask_renders_the_api_answer(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    set_value(browser, "token", TOKEN)
    text = "The man went to the [MASK] to buy milk."
    set_value(browser, "fm-text", text)
    set_value(browser, "fm-topk", "7")
    browser.find_element(By.ID, "fm-run").click()
    rows = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#fm-results .prediction"))
    want = api(server, "/v1/fill-mask", {"inputs": text, "parameters": {"top_k": 7}})
    got = [(r.get_attribute("data-token"), float(r.get_attribute("data-score"))) for r in rows]
    assert [t for t, _ in got] == [p["token_str"] for p in want]
    assert [s for _, s in got] == pytest.approx([p["score"] for p in want], abs=1e-12)
    # The bar shows the score: its width is score * 100 %.
    bar = rows[0].find_element(By.CSS_SELECTOR, ".bar span").get_attribute("style")
    assert f"{want[0]['score'] * 100:.2f}%" in bar
    assert browser.find_element(By.ID, "error").is_displayed() is False


def test_playground_multi_mask_has_one_group_per_mask(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    set_value(browser, "token", TOKEN)
    text = "The [MASK] sat on the [MASK]."
    set_value(browser, "fm-text", text)
    browser.find_element(By.ID, "fm-run").click()
    groups = wait(browser, lambda b: b.find_elements(By.CSS_SELECTOR, "#fm-results .mask"))
    want = api(server, "/v1/fill-mask", {"inputs": text, "parameters": {"top_k": 5}})
    assert len(groups) == len(want) == 2
    for g, w in zip(groups, want):
        toks = [r.get_attribute("data-token") for r in g.find_elements(By.CSS_SELECTOR, ".prediction")]
        assert toks == [p["token_str"] for p in w]


def test_playground_next_sentence_and_tokens(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    set_value(browser, "token", TOKEN)
    a, b = "It rained all day.", "The streets were wet."
    set_value(browser, "nsp-a", a)
    set_value(browser, "nsp-b", b)
    browser.find_element(By.ID, "nsp-run").click()
    prob = wait(browser, lambda d: d.find_elements(By.ID, "nsp-prob"))[0]
    want = api(server, "/v1/next-sentence", {"inputs": {"text": a, "text_pair": b}})
    assert float(prob.get_attribute("data-prob")) == pytest.approx(want["is_next_probability"],
                                                                   abs=1e-12)

    text = "Tokenization isn't hard."
    set_value(browser, "tok-text", text)
    browser.find_element(By.ID, "tok-run").click()
    chips = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#tok-result .token"))
    want = api(server, "/v1/tokenize", {"inputs": text})
    assert [int(c.get_attribute("data-id")) for c in chips] == want["ids"]


def test_playground_without_token_shows_the_api_error(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/")
    set_value(browser, "token", "wrong")
    browser.find_element(By.ID, "fm-run").click()
    box = browser.find_element(By.ID, "error")
    wait(browser, lambda d: box.is_displayed())
    assert box.text.startswith("401 unauthorized:")


def test_docs_page_lists_every_operation(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server.url + "/docs")
    ops = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "details.op"))
    want = [(m, p) for p, item in SPEC["paths"].items() for m in ("get", "post") if m in item]
    got = [(o.find_element(By.CSS_SELECTOR, ".method").text.lower(),
            o.find_element(By.CSS_SELECTOR, ".path").text) for o in ops]
    assert got == want
    assert browser.find_element(By.ID, "title").text == SPEC["info"]["title"] + " API"
    # Opening an operation shows its request schema and a live example.
    first = ops[0]
    first.find_element(By.TAG_NAME, "summary").click()
    text = first.text
    assert "REQUEST BODY" in text.upper() and "RESPONSES" in text.upper()
    ex = SPEC["paths"]["/v1/fill-mask"]["post"]["requestBody"]["content"]["application/json"]
    sample = next(iter(ex["examples"].values()))["value"]
    assert json.dumps(sample["inputs"])[1:20] in text
