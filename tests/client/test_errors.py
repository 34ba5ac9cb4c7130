"""The factory that turns server answers back into ipubsub.errors classes."""

from __future__ import annotations

from typing import Any

import pytest

from ipubsub import errors
from ipubsub.errors import error_from_response


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (400, "bad_request", errors.BadRequest),
        (400, "persistence_not_configured", errors.PersistenceNotConfigured),
        (400, "invalid_token", errors.InvalidToken),
        (401, "unauthorized", errors.Unauthorized),
        (404, "not_found", errors.NotFound),
        (409, "wrong_cluster", errors.WrongCluster),
        (413, "message_too_large", errors.MessageTooLarge),
        (424, "receive_timeout", errors.ReceiveTimeout),
        (424, "send_timeout", errors.SendTimeout),
        (424, "stream_released", errors.StreamReleased),
        (503, "unavailable", errors.Unavailable),
        (503, "owner_unavailable", errors.OwnerUnavailable),
        (503, "storage_unavailable", errors.StorageUnavailable),
        (503, "node_draining", errors.NodeDraining),
        (503, "buffer_full", errors.BufferFull),
        (500, "internal_error", errors.IPubSubError),
    ],
)
def test_every_code_maps_to_its_class_with_the_server_text(status: int, code: str, cls: type) -> None:
    body = {"error": f"the server's own words about {code}", "code": code, "streamId": "s"}
    exc = error_from_response(status, body)
    assert type(exc) is cls
    assert exc.code == code
    assert exc.message == str(exc) == body["error"]
    assert exc.fields == {"streamId": "s"}
    assert exc.to_dict() == body


def test_class_specific_attributes_come_from_the_body() -> None:
    bad = error_from_response(400, {"error": "x", "code": "bad_request", "field": "streamId"})
    assert isinstance(bad, errors.BadRequest) and bad.field == "streamId"
    big = error_from_response(413, {"error": "x", "code": "message_too_large", "size": 9, "limit": 5})
    assert isinstance(big, errors.MessageTooLarge) and (big.size, big.limit) == (9, 5)
    released = error_from_response(424, {"error": "moved; retry", "code": "stream_released"})
    assert isinstance(released, errors.StreamReleased) and released.reason == "moved; retry"
    busy = error_from_response(503, {"error": "x", "code": "buffer_full"}, retry_after=7)
    assert isinstance(busy, errors.BufferFull) and busy.retry_after == 7
    assert error_from_response(503, {"error": "x", "code": "unavailable"}).retry_after == 1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (413, {"error": "too big"}, errors.MessageTooLarge, "message_too_large"),
        (503, None, errors.Unavailable, "unavailable"),
        (424, {"error": "later"}, errors.ReceiveTimeout, "receive_timeout"),
        (405, {"error": "no", "code": "method_not_allowed"}, errors.IPubSubError, "method_not_allowed"),
        (400, {"error": "odd", "code": "something_new"}, errors.BadRequest, "something_new"),
        (502, "<html>bad gateway</html>", errors.IPubSubError, "internal_error"),
    ],
)
def test_unknown_codes_fall_back_by_status_and_keep_the_server_code(
    status: int, body: Any, cls: type, code: str
) -> None:
    exc = error_from_response(status, body)
    assert type(exc) is cls
    assert exc.code == code
    assert exc.message  # never empty, even without a body
    assert type(exc).code == cls.code  # the class itself is untouched
