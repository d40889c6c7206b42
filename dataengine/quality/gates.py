"""Quality gates: Great Expectations 1.x suites run directly on a pandas table of masks or submissions.

A gate returns a `GateResult`; it never raises on a failed expectation, so the caller (an operator) decides
to fail the task, and the report (JSON + data docs HTML) is saved either way. `great_expectations` is
imported inside the functions: importing it costs about two seconds.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Check:
    """One expectation: the GX class name (without the module) and its keyword arguments."""

    expectation: str
    kwargs: dict
    why: str = ""

    def describe(self) -> str:
        """Return `expectation(column, bounds)` for messages."""
        args = ", ".join(f"{k}={v}" for k, v in self.kwargs.items())
        return f"{self.expectation}({args})"


@dataclass
class GateResult:
    """Outcome of a gate: success, one line per failed expectation, and the full GX result (JSON-able)."""

    suite: str
    success: bool
    rows: int
    failures: list[dict] = field(default_factory=list)
    statistics: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    html: str = ""

    def message(self) -> str:
        """Return a readable summary naming each failed expectation and its offending rows."""
        if self.success:
            return f"quality gate {self.suite!r} passed: {self.statistics.get('successful_expectations')} " \
                   f"expectations on {self.rows} rows"
        lines = [f"quality gate {self.suite!r} failed on {self.rows} rows:"]
        for f in self.failures:
            lines.append(f"  - {f['expectation']}: {f['unexpected_count']} offending rows"
                         + (f" ({f['why']})" if f.get("why") else ""))
        return "\n".join(lines)

    def summary(self) -> dict:
        """Return a small JSON-able summary for XCom, the catalog and the manifest."""
        return {"suite": self.suite, "success": self.success, "rows": self.rows, "failures": self.failures,
                "statistics": self.statistics}


def run_gate(table, checks: list[Check], suite: str) -> GateResult:
    """Validate `table` (a pandas DataFrame) against `checks`; return the result with its data docs HTML."""
    import great_expectations as gx
    import great_expectations.expectations as gxe
    from great_expectations.render.renderer import ValidationResultsPageRenderer
    from great_expectations.render.view import DefaultJinjaPageView

    context = gx.get_context(mode="ephemeral")
    try:
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context.variables.progress_bars = ProgressBarsConfig(globally=False)
    except Exception:  # progress bars are cosmetic
        pass
    batch = (context.data_sources.add_pandas(f"{suite}_source").add_dataframe_asset(f"{suite}_table")
             .add_batch_definition_whole_dataframe("whole_table"))
    expectations = [getattr(gxe, c.expectation)(**c.kwargs) for c in checks]
    gx_suite = context.suites.add(gx.ExpectationSuite(name=suite, expectations=expectations))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=f"{suite}_validation", data=batch, suite=gx_suite))
    result = validation.run(batch_parameters={"dataframe": table}, result_format={"result_format": "SUMMARY"})
    failures = []
    for check, outcome in zip(checks, _results_in_order(result, checks)):
        if not outcome.success:
            count = outcome.result.get("unexpected_count")
            if count is None:  # table-level expectations report an observed value instead
                count = len(table) if outcome.result.get("observed_value") is None else outcome.result["observed_value"]
            failures.append({"expectation": check.describe(), "unexpected_count": _plain(count), "why": check.why})
    report = json.loads(json.dumps(result.to_json_dict(), default=str))
    html = DefaultJinjaPageView().render(ValidationResultsPageRenderer().render(result))
    stats = {k: _plain(v) for k, v in result.statistics.items()}
    return GateResult(suite=suite, success=bool(result.success), rows=len(table), failures=failures,
                      statistics=stats, report=report, html=html)


def _results_in_order(result, checks):
    """GX may reorder results; match them back to the checks by expectation type and kwargs."""
    remaining = list(result.results)
    ordered = []
    for check in checks:
        for i, outcome in enumerate(remaining):
            cfg = outcome.expectation_config
            same_kwargs = all(cfg.kwargs.get(k) == v for k, v in check.kwargs.items())
            if cfg.type == _snake(check.expectation) and same_kwargs:
                ordered.append(remaining.pop(i))
                break
        else:  # pragma: no cover - GX returns one result per expectation
            raise RuntimeError(f"no validation result for {check.describe()}")
    return ordered


def _snake(name: str) -> str:
    out = []
    for ch in name:
        if ch.isupper() and out:
            out.append("_")
        out.append(ch.lower())
    return "".join(out)


def _plain(value):
    """Convert numpy scalars to Python numbers for JSON."""
    return value.item() if hasattr(value, "item") else value


def save_gate_report(store, prefix: str, gate: GateResult) -> dict:
    """Write `{prefix}/{suite}.json` and `{prefix}/{suite}.html` to the store; return their keys."""
    json_key = f"{prefix}/{gate.suite}.json"
    html_key = f"{prefix}/{gate.suite}.html"
    store.put_json(json_key, {"summary": gate.summary(), "validation": gate.report})
    store.put_bytes(html_key, gate.html.encode())
    return {"json": json_key, "html": html_key}
