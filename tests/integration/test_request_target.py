"""What a client sees for request-targets RFC 9112 §3.2 does not allow: a fragment or raw
non-ASCII bytes get a 400 from the real server, and the app never runs; the same characters
percent-encoded reach the app untouched. (The parser's side is in tests/requests/.)"""

from __future__ import annotations

import json

import pytest

from httpclient import exchange


@pytest.mark.parametrize("target", [b"/environ?a=1#frag", b"/environ#top", b"/environ\xc3\xa9",
                                    b"/environ?q=\xe9"])
def test_fragment_or_raw_non_ascii_target_is_a_400(start_server, target):
    server = start_server("basic:app", workers=1)
    [response] = exchange(server.port, b"GET " + target + b" HTTP/1.1\r\nHost: t\r\n\r\n")
    assert response.status == 400
    assert response.header("Connection") == "close"


def test_encoded_fragment_and_non_ascii_reach_the_app_as_sent(start_server):
    server = start_server("basic:app", workers=1)
    response = server.get("/environ?a=1%23frag&q=%C3%A9")
    environ = json.loads(response.content)
    assert (environ["QUERY_STRING"], environ["RAW_URI"]) == ("a=1%23frag&q=%C3%A9",
                                                             "/environ?a=1%23frag&q=%C3%A9")
