"""The HTTP API's OpenAPI schema, built from the FastAPI object without Ray or Serve: examples on every
``/v1`` endpoint, the closed set of error codes, and a scan of ``raypipe/serve`` for codes outside it."""
from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any, get_args

import pytest

import raypipe.serve
from raypipe.serve import schemas
from raypipe.serve.errors import _HTTP_CODES, ERROR_STATUS
from raypipe.serve.openapi import ANY_PATH, ENDPOINT_ERRORS, ERROR_DETAILS
from raypipe.serve.schemas import ErrorCode

SERVE_DIR = Path(raypipe.serve.__file__).parent
#: the unversioned paths and their /v1 twins
TWINS = {"/recommend": "/v1/recommend", "/items": "/v1/items", "/items/{item_id}": "/v1/items/{item_id}",
         "/domains": "/v1/domains", "/match": "/v1/match", "/events": "/v1/events", "/explain": "/v1/explain",
         "/healthz": "/v1/health"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    from raypipe.serve.app import api

    return api.openapi()


def operations(spec: dict, prefix: str = "/v1/"):
    for path, ops in sorted(spec["paths"].items()):
        if path.startswith(prefix):
            for method, op in ops.items():
                yield path, method, op


def model_of(spec: dict, schema: dict) -> type:
    name = schema["$ref"].rsplit("/", 1)[-1]
    assert name in spec["components"]["schemas"], name
    return getattr(schemas, name)


def test_every_v1_endpoint_has_request_and_success_examples(spec) -> None:
    paths = {p for p, _, _ in operations(spec)}
    assert paths == {"/v1/recommend", "/v1/rank", "/v1/items", "/v1/items/{item_id}", "/v1/items/{item_id}/similar",
                     "/v1/domains", "/v1/match", "/v1/events", "/v1/explain", "/v1/health"}
    bodies = 0
    for path, method, op in operations(spec):
        where = f"{method.upper()} {path}"
        if "requestBody" in op:
            bodies += 1
            media = op["requestBody"]["content"]["application/json"]
            model = model_of(spec, media["schema"])
            examples = spec["components"]["schemas"][model.__name__].get("examples") or []
            assert examples, f"{where}: no request example"
            for ex in examples:  # parsed as the app parses a body: strict, from JSON
                model.model_validate_json(json.dumps(ex))
        ok = [s for s in op["responses"] if s.startswith("2")]
        assert len(ok) == 1, where
        media = op["responses"][ok[0]]["content"]["application/json"]
        assert "example" in media, f"{where}: no example of its {ok[0]} answer"
        if "$ref" in media.get("schema", {}):
            model_of(spec, media["schema"]).model_validate(media["example"])
    assert bodies == 7  # recommend, rank, items, domains, match, events, explain


def test_error_responses_list_only_their_codes_with_examples(spec) -> None:
    for path, method, op in operations(spec, "/"):
        for status, resp in op["responses"].items():
            if status.startswith("2"):
                continue
            media = resp["content"]["application/json"]
            assert media["schema"]["$ref"].endswith("/ErrorResponse"), (path, method, status)
            codes = set(media["examples"])
            assert codes and all(ERROR_STATUS[c] == int(status) for c in codes), (path, method, status, codes)
            assert all(media["examples"][c]["value"]["error"] == c for c in codes)
    # the statuses each endpoint lists are those of its codes, nothing else (no FastAPI default 422)
    by_op = {(p, m): op for p, m, op in operations(spec)}
    endpoints = {("/v1/recommend", "post"): "recommend", ("/v1/rank", "post"): "rank",
                 ("/v1/items", "post"): "onboard", ("/v1/domains", "post"): "add_domain",
                 ("/v1/match", "post"): "match", ("/v1/events", "post"): "events", ("/v1/explain", "post"): "explain",
                 ("/v1/items/{item_id}/similar", "get"): "similar_items", ("/v1/items/{item_id}", "get"): "get_item",
                 ("/v1/items/{item_id}", "delete"): "delete_item", ("/v1/health", "get"): "health"}
    assert set(endpoints) == set(by_op)
    for key, name in endpoints.items():
        errors = {s for s in by_op[key]["responses"] if not s.startswith("2")}
        assert errors == {str(ERROR_STATUS[c]) for c in ENDPOINT_ERRORS[name]}, (key, errors)
    assert "HTTPValidationError" not in json.dumps(spec)


def _untitled(x: Any) -> Any:
    """A schema without its titles (FastAPI names an inline response schema after the path)."""
    if isinstance(x, dict):
        return {k: _untitled(v) for k, v in x.items() if k != "title"}
    return [_untitled(v) for v in x] if isinstance(x, list) else x


def test_unversioned_paths_keep_working_and_match_v1(spec) -> None:
    for old, new in TWINS.items():
        assert set(spec["paths"][old]) == set(spec["paths"][new]), old
        for method, op in spec["paths"][old].items():
            assert _untitled(op["responses"]) == _untitled(spec["paths"][new][method]["responses"]), (old, method)
            assert op.get("requestBody") == spec["paths"][new][method].get("requestBody"), (old, method)


def test_error_code_is_a_closed_enum(spec) -> None:
    codes = list(get_args(ErrorCode))
    error = spec["components"]["schemas"]["ErrorResponse"]["properties"]["error"]
    assert error["type"] == "string" and error["enum"] == codes
    assert len(codes) == len(set(codes)) and set(codes) == set(ERROR_STATUS) == set(ERROR_DETAILS)
    assert set(_HTTP_CODES.values()) <= set(codes)
    # every code is documented on an endpoint, answers any path (404/405/500) or maps a Starlette error
    documented = {c for errs in ENDPOINT_ERRORS.values() for c in errs}
    assert set(codes) == documented | set(ANY_PATH) | set(_HTTP_CODES.values())


# --- the scan: every error code string used in raypipe/serve is in ErrorCode ---------------------------

#: call → the position of its error-code argument
_EMITTERS = {"ApiError": 1, "error_result": 1, "error_body": 0}
#: code arguments that are not literals, where they pass on a code already checked where it was made
_PASS_THROUGH = {("errors.py", "exc.error"), ("errors.py", "str(e['error'])")}


def _strings(node: ast.AST, scope: list[ast.AST], module: ast.Module) -> set[str] | None:
    """The string constants an expression can evaluate to (a literal, a conditional, ``D.get(k, default)``
    of a module-level dict, a name assigned once in the function or module); None if unknown."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        a, b = _strings(node.body, scope, module), _strings(node.orelse, scope, module)
        return None if a is None or b is None else a | b
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
            and len(node.args) == 2:
        values = _strings(node.func.value, scope, module)
        default = _strings(node.args[1], scope, module)
        return None if values is None or default is None else values | default
    if isinstance(node, ast.Dict):
        out: set[str] = set()
        for v in node.values:
            got = _strings(v, scope, module)
            if got is None:
                return None
            out |= got
        return out
    if isinstance(node, ast.Name):
        for holder in [*reversed(scope), module]:
            for stmt in ast.walk(holder):
                if isinstance(stmt, (ast.Assign, ast.AnnAssign)):
                    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
                    if any(isinstance(t, ast.Name) and t.id == node.id for t in targets) and stmt.value is not None:
                        return _strings(stmt.value, scope, module)
    return None


def scan_error_codes(source: str, filename: str) -> tuple[dict[str, list[str]], list[str]]:
    """``({code: [where it is emitted, with its status when literal]}, [code arguments that are not
    resolvable literals])`` of one module's source."""
    module = ast.parse(source)
    found: dict[str, list[str]] = {}
    opaque: list[str] = []

    def visit(node: ast.AST, scope: list[ast.AST]) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            scope = [*scope, node]
        if isinstance(node, ast.Call):
            f = node.func
            name = f.id if isinstance(f, ast.Name) else f.attr if isinstance(f, ast.Attribute) else None
            if name in _EMITTERS:
                pos = _EMITTERS[name]
                arg = node.args[pos] if len(node.args) > pos else next(
                    (k.value for k in node.keywords if k.arg == "error"), None)
                if arg is not None:
                    codes = _strings(arg, scope, module)
                    status = node.args[0] if name != "error_body" and node.args else None
                    tag = f"{filename}:{node.lineno}"
                    if isinstance(status, ast.Constant):
                        tag += f" status={status.value}"
                    if codes is None:
                        if (filename, ast.unparse(arg)) not in _PASS_THROUGH:
                            opaque.append(f"{filename}:{node.lineno} {name}(... {ast.unparse(arg)} ...)")
                    else:
                        for c in codes:
                            found.setdefault(c, []).append(tag)
        if isinstance(node, ast.Dict):  # {"error": "<code>"} written by hand
            for k, v in zip(node.keys, node.values):
                if isinstance(k, ast.Constant) and k.value == "error" and isinstance(v, ast.Constant) \
                        and isinstance(v.value, str):
                    found.setdefault(v.value, []).append(f"{filename}:{node.lineno}")
        for child in ast.iter_child_nodes(node):
            visit(child, scope)

    visit(module, [])
    return found, opaque


def test_the_scan_finds_codes_and_flags_opaque_ones() -> None:
    src = '''
from raypipe.serve import errors
from raypipe.serve.errors import ApiError, error_result
CODES = {1: "from_a_table"}
def f(x, kind):
    if x:
        raise ApiError(418, "brand_new_code", "why")
    if kind:
        return errors.error_body("via_attribute")
    code = CODES.get(x, "fallback" if x else "other")
    errors.error_body(code)
    raise ApiError(400, kind)
def g():
    return error_result(409, error="by_keyword"), {"error": "by_hand"}
'''
    found, opaque = scan_error_codes(src, "new.py")
    assert set(found) == {"brand_new_code", "via_attribute", "from_a_table", "fallback", "other", "by_keyword",
                          "by_hand"}
    assert found["brand_new_code"] == ["new.py:7 status=418"]
    assert len(opaque) == 1 and "ApiError(... kind ...)" in opaque[0]


def test_every_error_code_in_the_serve_package_is_in_the_enum() -> None:
    found: dict[str, list[str]] = {}
    opaque: list[str] = []
    for path in sorted(SERVE_DIR.glob("*.py")):
        f, o = scan_error_codes(path.read_text(), path.name)
        for code, where in f.items():
            found.setdefault(code, []).extend(where)
        opaque += o
    assert not opaque, f"pass error codes as literals (or add the pass-through to _PASS_THROUGH): {opaque}"
    # the scan sees the app's codes (a scan that finds nothing would pass vacuously)
    assert {"unknown_item", "unknown_domain", "duplicate_item", "not_generative", "body_too_large", "malformed_json",
            "invalid_request", "internal_error", "not_found", "timeout", "unavailable"} <= set(found)
    unknown = {c: w for c, w in found.items() if c not in set(get_args(ErrorCode))}
    assert not unknown, f"error codes missing from schemas.ErrorCode and errors.ERROR_STATUS: {unknown}"
    # a literal status agrees with the code's documented status
    wrong = [(c, w) for c, where in found.items() for w in where
             if " status=" in w and int(w.split(" status=")[1]) != ERROR_STATUS[c]]
    assert not wrong, wrong
