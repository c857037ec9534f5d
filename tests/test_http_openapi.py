"""openapi.yaml against the real server: the spec covers every route and error, its examples
satisfy its schemas, live answers satisfy them too, and the examples are what the shipped
models/default really answers (regenerate with `python3 tests/openapi_examples.py --write`)."""
import pytest

import openapi_examples as ox
from checkpoints import REPO
from http_helpers import shared_checkpoint
from test_http_concurrency import same_answer

ROUTES = {"/v1/fill-mask": "post", "/v1/next-sentence": "post", "/v1/tokenize": "post",
          "/v1/decode": "post", "/v1/score": "post",
          "/v1/models": "get", "/healthz": "get", "/readyz": "get", "/metrics": "get",
          "/openapi.json": "get", "/openapi.yaml": "get", "/docs": "get", "/": "get"}


@pytest.fixture(scope="module")
def spec():
    return ox.load_spec()


def test_spec_covers_every_route_and_error(spec):
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == set(ROUTES)
    for path, method in ROUTES.items():
        assert set(spec["paths"][path]) == {method}, path
    # /v1/tokenize, /v1/decode and /v1/score are queued for the workers too, so they can
    # time out (504)
    for path in ("/v1/fill-mask", "/v1/next-sentence", "/v1/tokenize", "/v1/decode",
                 "/v1/score"):
        statuses = set(spec["paths"][path]["post"]["responses"])
        assert statuses == {"200", "400", "401", "413", "415", "422", "503", "504"}, path
    for name in ("NotFound", "MethodNotAllowed"):
        assert name in spec["components"]["responses"]
    # every documented case's status has a home in the spec
    for c in ox.CASES:
        assert ox.response_slot(spec, c)["content"]["application/json"]["schema"]


def iter_response_examples(spec):
    slots = []
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, resp in op["responses"].items():
                slots.append((f"{method.upper()} {path} {status}", ox.resolve(spec, resp)))
    for name, resp in spec["components"]["responses"].items():
        slots.append((f"components/responses/{name}", resp))
    seen = set()
    for where, resp in slots:
        content = resp.get("content", {}).get("application/json")
        if not content or id(content) in seen:
            continue
        seen.add(id(content))
        for name, ex in content.get("examples", {}).items():
            yield where, name, content["schema"], ex["value"]


def test_every_response_example_matches_its_schema(spec):
    n = 0
    for where, name, schema, value in iter_response_examples(spec):
        errors = [e.message for e in ox.validator(spec, schema).iter_errors(value)]
        assert not errors, (where, name, errors)
        n += 1
    assert n >= len(ox.CASES)


def test_every_request_example_matches_its_schema(spec):
    n = 0
    for path, ops in spec["paths"].items():
        for op in ops.values():
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if not body:
                continue
            for name, ex in body.get("examples", {}).items():
                errors = [e.message for e in
                          ox.validator(spec, body["schema"]).iter_errors(ex["value"])]
                assert not errors, (path, name, errors)
                n += 1
    assert n >= 10


def test_live_answers_match_schemas(spec, tmp_path, tmp_path_factory):
    """Every case, errors included, against the small test checkpoint."""
    model_dir = shared_checkpoint(tmp_path_factory)
    results = ox.collect(model_dir, tmp_path)
    assert len(results) == len(ox.CASES)
    for c, status, body in results:
        assert status == c["status"], (c["name"], status, body)
        assert not ox.schema_errors(spec, c, body), (c["name"], ox.schema_errors(spec, c, body))


def test_examples_are_live_answers_of_the_default_model(spec, tmp_path):
    """Final examples must be exactly what models/default answers. While models/default is
    a partially trained checkpoint, its answers change with every save: then the examples
    must be marked provisional instead, and are compared once training has finished."""
    model = REPO / "models" / "default"
    assert spec["info"]["x-examples-model"] == "default", \
        "openapi.yaml examples must come from models/default: run tests/openapi_examples.py --write"
    assert (model / "model.safetensors").exists()
    provisional, step = ox.training_state(model)
    if provisional:
        assert spec["info"]["x-examples-provisional"] is True, (
            f"models/default is a partial checkpoint (step {step}) but openapi.yaml's examples "
            "claim to be final")
        return
    assert spec["info"]["x-examples-provisional"] is False, \
        "models/default is final: regenerate the examples (tests/openapi_examples.py --write)"
    results = ox.collect(model, tmp_path)
    for c, status, body in results:
        slot = ox.response_slot(spec, c)
        example = slot["content"]["application/json"]["examples"][c["name"]]["value"]
        assert status == c["status"]
        # /v1/models names the kernels of the CPU it runs on ("onednn brg:avx512_core" here,
        # "openblas sgemm" without AVX-512): that one field is the machine's, not the model's
        for m in (body.get("data", []) if isinstance(body, dict) else []):
            if isinstance(m, dict) and "kernel" in m:
                m["kernel"] = example["data"][0]["kernel"]
        # float32 answers of different builds (gcc or clang, with or without sanitizers, the
        # oneDNN or the OpenBLAS path) differ by ~1e-6; parity with transformers is 1e-4
        assert same_answer(body, example, abs_=2e-6), (
            f"{c['name']}: models/default now answers differently from openapi.yaml's example;"
            " regenerate with python3 tests/openapi_examples.py --write", body, example)
