"""Listen-address parsing: every form -b accepts, and the errors for what it refuses."""

import socket

import pytest

from prefork.config.binds import BindAddress, default_binds, parse_bind
from prefork.config.settings import ConfigError

VALID = [
    # text, expected address, canonical str, family
    ("127.0.0.1:8000", BindAddress("tcp", host="127.0.0.1", port=8000), "127.0.0.1:8000",
     socket.AF_INET),
    ("0.0.0.0:0", BindAddress("tcp", host="0.0.0.0", port=0), "0.0.0.0:0", socket.AF_INET),
    ("10.1.2.3:65535", BindAddress("tcp", host="10.1.2.3", port=65535), "10.1.2.3:65535",
     socket.AF_INET),
    ("[::1]:8080", BindAddress("tcp", host="::1", port=8080), "[::1]:8080", socket.AF_INET6),
    ("[::]:80", BindAddress("tcp", host="::", port=80), "[::]:80", socket.AF_INET6),
    ("[::1]", BindAddress("tcp", host="::1", port=8000), "[::1]:8000", socket.AF_INET6),
    ("[fe80::1%eth0]:80", BindAddress("tcp", host="fe80::1%eth0", port=80), "[fe80::1%eth0]:80",
     socket.AF_INET6),
    ("localhost:5000", BindAddress("tcp", host="localhost", port=5000), "localhost:5000",
     socket.AF_UNSPEC),
    ("localhost", BindAddress("tcp", host="localhost", port=8000), "localhost:8000",
     socket.AF_UNSPEC),
    ("127.0.0.1", BindAddress("tcp", host="127.0.0.1", port=8000), "127.0.0.1:8000",
     socket.AF_INET),
    ("web_1.internal:80", BindAddress("tcp", host="web_1.internal", port=80), "web_1.internal:80",
     socket.AF_UNSPEC),
    (":9000", BindAddress("tcp", host="0.0.0.0", port=9000), "0.0.0.0:9000", socket.AF_INET),
    ("  127.0.0.1:1  ", BindAddress("tcp", host="127.0.0.1", port=1), "127.0.0.1:1",
     socket.AF_INET),
    ("unix:/run/app.sock", BindAddress("unix", path="/run/app.sock"), "unix:/run/app.sock",
     socket.AF_UNIX),
    ("unix:///run/app.sock", BindAddress("unix", path="/run/app.sock"), "unix:/run/app.sock",
     socket.AF_UNIX),
    ("unix:relative.sock", BindAddress("unix", path="relative.sock"), "unix:relative.sock",
     socket.AF_UNIX),
    ("fd://3", BindAddress("fd", fd=3), "fd://3", None),
    ("fd://http", BindAddress("fd", name="http"), "fd://http", None),
    ("fd://web-1.admin", BindAddress("fd", name="web-1.admin"), "fd://web-1.admin", None),
]


@pytest.mark.parametrize(("text", "expected", "canonical", "family"), VALID,
                         ids=[case[0] for case in VALID])
def test_valid_addresses(text, expected, canonical, family):
    address = parse_bind(text)
    assert address == expected
    assert str(address) == canonical
    assert address.family == family
    assert parse_bind(str(address)) == address  # the canonical form parses back to itself


INVALID = [
    # text, the reason after "--bind: cannot parse '<text>': "
    ("localhost:http", "port must be a number 0-65535"),
    ("127.0.0.1:65536", "port must be a number 0-65535"),
    ("127.0.0.1:-1", "port must be a number 0-65535"),
    ("127.0.0.1:", "port must be a number 0-65535"),
    ("::1", "an IPv6 address needs brackets, as in [::1]:8000"),
    ("::1:8000", "an IPv6 address needs brackets, as in [::1]:8000"),
    ("[::1", "expected [IPv6]:PORT"),
    ("[::1]8000", "expected [IPv6]:PORT"),
    ("[127.0.0.1]:80", "'127.0.0.1' is not an IPv6 address"),
    ("[::1]:http", "port must be a number 0-65535"),
    ("8000", "a bare number is not an address; for a port write ':8000'"),
    ("300.1.1.1:80", "'300.1.1.1' is not an IPv4 address"),
    ("bad host:80", "'bad host' is not a valid host name"),
    ("-dash.example:80", "'-dash.example' is not a valid host name"),
    ("", "empty address"),
    ("   ", "empty address"),
    ("unix:", "missing socket path, as in unix:/run/app.sock"),
    ("unix://", "missing socket path, as in unix:/run/app.sock"),
    ("unix:/" + "x" * 107, "socket path longer than 107 bytes"),
    ("fd://", "expected fd://N (a number) or fd://NAME (systemd's FileDescriptorName=)"),
    ("fd://a:b", "expected fd://N (a number) or fd://NAME (systemd's FileDescriptorName=)"),
    ("fd://two words", "expected fd://N (a number) or fd://NAME (systemd's FileDescriptorName=)"),
    ("http://127.0.0.1:80", "unknown scheme 'http'; use HOST:PORT, unix:PATH or fd://N"),
    ("tcp://127.0.0.1:80", "unknown scheme 'tcp'; use HOST:PORT, unix:PATH or fd://N"),
]


@pytest.mark.parametrize(("text", "reason"), INVALID, ids=[case[0][:30] for case in INVALID])
def test_invalid_addresses_name_the_setting_and_value(text, reason):
    with pytest.raises(ConfigError) as caught:
        parse_bind(text)
    assert str(caught.value) == f"--bind: cannot parse {text!r}: {reason}"


def test_the_setting_name_in_errors_can_be_changed():
    with pytest.raises(ConfigError, match=r"^--metrics-bind: cannot parse 'x:y'"):
        parse_bind("x:y", "--metrics-bind")


def test_unix_path_at_the_length_limit_is_accepted():
    path = "/" + "x" * 106  # 107 bytes + NUL fills sun_path exactly
    assert parse_bind(f"unix:{path}").path == path


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, ["127.0.0.1:8000"]),
    ({"PORT": ""}, ["127.0.0.1:8000"]),
    ({"PORT": "5000"}, ["0.0.0.0:5000"]),
    ({"PORT": "0"}, ["0.0.0.0:0"]),
])
def test_default_binds_follow_port(environ, expected):
    assert default_binds(environ) == expected
    assert all(parse_bind(address) for address in expected)


@pytest.mark.parametrize("port", ["http", "70000", "-1", "80 "])
def test_bad_port_variable_is_reported(port):
    with pytest.raises(ConfigError) as caught:
        default_binds({"PORT": port})
    assert str(caught.value) == f"PORT: must be a port number 0-65535, got {port!r}"
