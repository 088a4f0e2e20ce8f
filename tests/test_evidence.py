"""Evidence: measured, recorded, then asserted; no data is never a pass; secrets never shown."""

import math

import pytest

from releasegate.analysis.thresholds import Verdict, judge
from releasegate.evidence import Checker, Evidence, GateFailure
from releasegate.redaction import redact, register_secret


@pytest.mark.parametrize(
    ("value", "comparator", "threshold", "verdict"),
    [
        (3.0, "<=", 5, Verdict.PASS),
        (5.0, "<=", 5, Verdict.PASS),
        (5.1, "<=", 5, Verdict.FAIL),
        (0, ">=", 1, Verdict.FAIL),
        (None, "<=", 5, Verdict.NO_DATA),
        (math.nan, "<=", 5, Verdict.NO_DATA),
        ("12", "<=", 5, Verdict.NO_DATA),
        (True, "<=", 5, Verdict.NO_DATA),
        ("healthy", "==", "healthy", Verdict.PASS),
        ("unhealthy", "==", "healthy", Verdict.FAIL),
        (None, "==", None, Verdict.NO_DATA),
        ("a", "in", ["a", "b"], Verdict.PASS),
    ],
)
def test_judge(value, comparator, threshold, verdict):
    assert judge(value, comparator, threshold) is verdict


def test_a_check_records_before_it_asserts():
    sink: list[Evidence] = []
    check = Checker(sink.append, "gates/test_40_verify.py::test_x", "verify")
    check.at_most("p95 latency", 120.0, 200, unit="ms", source="histogram_quantile(...)")
    with pytest.raises(GateFailure) as failure:
        check.at_most("p99 latency", 750.0, 500, unit="ms", source="histogram_quantile(0.99, ...)")
    assert [e.verdict for e in sink] == [Verdict.PASS, Verdict.FAIL]
    assert str(failure.value) == "p99 latency: 750 ms <= 500 ms: fail [histogram_quantile(0.99, ...)]"
    assert sink[1].gate == "gates/test_40_verify.py::test_x" and sink[1].phase == "verify"


def test_no_data_fails_even_where_nothing_looks_wrong():
    sink: list[Evidence] = []
    check = Checker(sink.append)
    with pytest.raises(GateFailure, match="no data"):
        check.at_most("error ratio", None, 0.001)
    assert sink[0].verdict is Verdict.NO_DATA


def test_inconclusive_is_allowed_outside_production_only():
    Checker(lambda e: None).at_most("error ratio", None, 0.001, on_no_data="inconclusive")
    with pytest.raises(GateFailure, match="inconclusive"):
        Checker(lambda e: None, production=True).at_most(
            "error ratio", None, 0.001, on_no_data="inconclusive"
        )


def test_evidence_never_carries_a_secret():
    register_secret("pa55-w0rd-XYZ")
    sink: list[Evidence] = []
    check = Checker(sink.append)
    check.record(
        "dsn",
        "postgresql://app:pa55-w0rd-XYZ@db:5432/x",
        source="psql -W pa55-w0rd-XYZ",
        detail="token=abcdef123",
    )
    text = repr(sink[0].to_dict())
    assert "pa55-w0rd-XYZ" not in text and "abcdef123" not in text
    assert "postgresql://app:***@db:5432/x" in text


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("postgresql://u:pw@h/db", "postgresql://u:***@h/db"),
        ("redis://:topsecret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("Authorization: Bearer abc.def.ghi", "Authorization: ***"),
        ("password=hunter2 host=x", "password=*** host=x"),
        ('{"api_key": "k-123"}', '{"api_key": "***"}'),
        ("nothing to hide", "nothing to hide"),
    ],
)
def test_redaction_patterns(text, shown):
    assert redact(text) == shown
