"""Tests of the OpenAPI document against live nodes (conformance and fuzzing)."""
