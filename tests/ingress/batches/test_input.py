"""A batch's input file checked line by line (ingress/batches/input.py)."""

from __future__ import annotations

import json

from ingress.batches.input import MAX_ERRORS, InputCheck

URL = "/v1/chat/completions"


def _line(custom_id: str = "a", **over) -> bytes:
    line = {
        "custom_id": custom_id,
        "method": "POST",
        "url": URL,
        "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    }
    line.update(over)
    return json.dumps(line).encode()


def _check(raw: list[bytes], max_lines: int = 100) -> tuple[InputCheck, list[dict]]:
    check = InputCheck(URL, max_lines)
    rows = [json.loads(r) for r in check.check(raw)]
    return check, rows


def test_good_lines_become_rows_with_their_line_numbers():
    check, rows = _check([_line("a"), b"", _line("b")])
    assert not check.errors and check.lines == 2 and check.model == "m"
    assert [(r["i"], r["custom_id"]) for r in rows] == [(1, "a"), (3, "b")]
    assert json.loads(rows[0]["body"])["model"] == "m"  # the body kept as JSON text


def test_each_kind_of_bad_line_is_named_with_its_number():
    check, _ = _check(
        [
            b"{not json",
            b"[1, 2]",
            _line(""),
            _line("a"),
            _line("a"),
            _line("b", method="GET"),
            _line("c", url="/v1/embeddings"),
            _line("d", body="text"),
            _line("e", body={"messages": []}),
        ]
    )
    assert [(e["line"], e["code"]) for e in check.errors] == [
        (1, "invalid_json_line"),
        (2, "invalid_request"),
        (3, "invalid_custom_id"),
        (5, "duplicate_custom_id"),
        (6, "invalid_method"),
        (7, "mismatched_endpoint"),
        (8, "invalid_body"),
        (9, "missing_model"),
    ]


def test_lines_may_name_different_models():
    # A line whose model is unknown runs and lands in the error file (a 404 of its own).
    other = json.loads(_line("b"))
    other["body"]["model"] = "other"
    check, rows = _check([_line("a"), json.dumps(other).encode()])
    assert not check.errors and len(rows) == 2 and check.model == "m"


def test_too_many_lines_and_empty_files_fail():
    check, _ = _check([_line(str(i)) for i in range(4)], max_lines=3)
    assert check.errors[-1]["code"] == "too_many_lines"
    check, _ = _check([b"", b"  "])
    assert check.errors == [
        {
            "code": "empty_file",
            "message": "The input file holds no requests.",
            "param": None,
            "line": None,
        }
    ]


def test_errors_are_bounded_and_the_rest_counted():
    check, _ = _check([b"x"] * (MAX_ERRORS + 5))
    assert len(check.errors) == MAX_ERRORS
    assert check.errors[-1]["message"].endswith("(5 more errors not shown)")


def test_output_lines_are_openais_format():
    from ingress.batches.caller import output_line

    ok = output_line("a", "req-1", 200, {"id": "x"})
    assert ok["custom_id"] == "a" and ok["error"] is None and ok["id"].startswith("batch_req_")
    assert ok["response"] == {"status_code": 200, "request_id": "req-1", "body": {"id": "x"}}
    bad = output_line("b", "req-2", 404, {"error": {"message": "no", "code": "model_not_found"}})
    assert bad["error"] == {"code": "model_not_found", "message": "no"}
