"""The API fuzzed from its own OpenAPI document (schemathesis) on a real server: every answer must be
a status the document lists for that operation, and never a 5xx."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests.service.stack import own_stack

pytestmark = [pytest.mark.slow, pytest.mark.service]

EXAMPLES = 25  # per operation and per mode (valid and invalid requests): bounded, and the same every run


def test_fuzzed_requests_get_documented_answers_and_no_server_error(
        tmp_path: Path, postgres_admin: str, redis_url: str, s3_endpoint: str) -> None:
    import schemathesis  # the test extra (pyproject.toml): missing is a failure, not a skip
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import status_code_conformance

    # No worker: a job the fuzzer gets accepted stays queued on a queue of its own.
    with own_stack(tmp_path, postgres_admin, redis_url, s3_endpoint, worker=False) as s:
        schema = schemathesis.openapi.from_url(s.url + "/openapi.json")
        answers: Counter[tuple[str, int]] = Counter()
        failures: dict[str, str] = {}
        auth = {"Authorization": f"Bearer {s.key}"}
        def fuzz(operation: object, mode: object) -> None:
            label = operation.label  # type: ignore[attr-defined]

            @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(operation.as_strategy(generation_mode=mode))  # type: ignore[attr-defined]
            def run(case: object) -> None:
                response = case.call(base_url=s.url, headers=auth, timeout=30)  # type: ignore[attr-defined]
                answers[(label, response.status_code)] += 1
                try:
                    case.validate_response(response, checks=[not_a_server_error,  # type: ignore[attr-defined]
                                                             status_code_conformance])
                except BaseException as exc:  # noqa: BLE001 - schemathesis' FailureGroup: collected, all operations run
                    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                        raise
                    failures.setdefault(f"{label} -> {response.status_code}",
                                        f"{exc}\n{case.as_curl_command(headers=auth)}"[:2000])  # type: ignore[attr-defined]

            try:
                run()
            except Unsatisfiable:  # nothing to get wrong (an operation without parameters, in negative mode)
                pass

        for result in schema.get_all_operations():
            for mode in schemathesis.GenerationMode:
                fuzz(result.ok(), mode)
        total = sum(answers.values())
        by_status = Counter()
        for (_, status), n in answers.items():
            by_status[status] += n
        print(f"\n[figure] schemathesis: {total} requests over {len({op for op, _ in answers})} operations; "
              f"answers {json.dumps(dict(sorted(by_status.items())))}")
        (tmp_path / "fuzz.json").write_text(json.dumps({f"{op} {st}": n for (op, st), n in sorted(answers.items())},
                                                       indent=1))
        assert not failures, "\n\n".join(f"{k}\n{v}" for k, v in failures.items()) + "\n" + s.log("api.log")
        assert "Traceback" not in s.log("api.log", tail=10**6)
