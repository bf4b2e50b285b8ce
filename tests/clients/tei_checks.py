"""Schemathesis hooks for test_tei.py: the check that schema-valid requests are accepted.

Schemathesis' own `positive_data_acceptance` wants a 2xx for every request its schema allows.
Some such requests no server can answer, for reasons TEI's schema cannot express and TEI's own
server refuses too (413/422): token ids outside the model's vocabulary (the schema allows any
int32), an input longer than the model's max length, more inputs than the server takes, a
prompt name the model does not define (the schema allows any string), an input with no tokens
at all. This check allows exactly those refusals, recognised by their message, and fails on
any other.
"""

import schemathesis
from schemathesis.specs.openapi.checks import is_unexpected_http_status_case

ALLOWED_REFUSALS = {
    413: ("longer than the model's", "are accepted per request"),
    422: (
        "outside the model's vocabulary",
        "outside the vocabulary",
        "has no tokens",
        "unknown prompt name",
        "cannot be applied to token-id inputs",
    ),
}


def error_message(response):
    try:
        body = response.json()
    except ValueError:
        return response.text
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message", ""))
    return str(error or "")


@schemathesis.check
def quiver_accepts_valid_requests(ctx, response, case):
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive:
        return None
    # Probes of methods or shapes the operation does not have: not requests the schema allows.
    if is_unexpected_http_status_case(case):
        return None
    status = response.status_code
    if 200 <= status < 300:
        return None
    message = error_message(response)
    if any(needle in message for needle in ALLOWED_REFUSALS.get(status, ())):
        return None
    raise AssertionError(f"a schema-valid request was refused with {status}: {message}")
