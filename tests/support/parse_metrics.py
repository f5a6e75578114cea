"""Parses an OpenMetrics text exposition (stdin) with the Prometheus project's
own Python parser, which rejects anything malformed, and prints every sample as
JSON: [{"name": ..., "labels": {...}, "value": ...}, ...]. Used by tests/ops.rs.
"""
import json
import sys

try:
    from prometheus_client.openmetrics.parser import text_string_to_metric_families
except ImportError:
    sys.exit("parse_metrics.py: the Python package prometheus_client is missing; "
             "`make test` installs it (python3 -m pip install prometheus_client)")

text = sys.stdin.read()
try:
    samples = [
        {"name": s.name, "labels": s.labels, "value": s.value}
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]
except Exception as e:  # the parser raises ValueError and friends
    sys.exit(f"parse_metrics.py: not valid OpenMetrics: {e!r}")
json.dump(samples, sys.stdout)
