"""Bearer tokens: signed JWTs in distribution's token-spec shape, checked with pyjwt directly."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import jwt
import pytest

from metahub import errors
from metahub.auth.tokens import MAX_TOKEN_LENGTH, Principal, TokenService

KEY = b"k" * 32
OTHER_KEY = b"o" * 32
NULL = object()  # a claim present with the value null, as `issue` writes for some principals


@pytest.fixture
def service() -> TokenService:
    return TokenService(KEY, ttl=300)


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    value: dict[str, Any] = {
        "iss": "metahub",
        "sub": "gpu-login",
        "aud": "metahub",
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
        "jti": "abc",
        "access": [{"type": "repository", "name": "library/ubuntu", "actions": ["pull"]}],
        "mt": "gpu",
        "cid": NULL,
        "cv": NULL,
    }
    value.update(overrides)
    return {k: None if v is NULL else v for k, v in value.items() if v is not None}


def forge(payload: dict[str, Any], key: bytes = KEY, algorithm: str = "HS256") -> str:
    return jwt.encode(payload, key, algorithm=algorithm)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def test_round_trip(service: TokenService) -> None:
    issued = service.issue(Principal("gpu-login", "gpu"), ["library/ubuntu", "org/app"])
    principal = service.verify(issued.token)
    assert principal == Principal("gpu-login", "gpu", frozenset({"library/ubuntu", "org/app"}))
    assert not principal.unfiltered


def test_claims_follow_the_token_spec(service: TokenService) -> None:
    before = int(time.time())
    issued = service.issue(Principal("gpu-login", "gpu"), ["library/ubuntu", "org/app"])
    after = int(time.time())
    decoded = jwt.decode(issued.token, KEY, algorithms=["HS256"], audience="metahub")
    assert jwt.get_unverified_header(issued.token)["alg"] == "HS256"
    assert decoded["iss"] == "metahub"
    assert decoded["sub"] == "gpu-login"
    assert decoded["aud"] == "metahub"
    assert decoded["mt"] == "gpu"
    assert decoded["access"] == [
        {"type": "repository", "name": "library/ubuntu", "actions": ["pull"]},
        {"type": "repository", "name": "org/app", "actions": ["pull"]},
    ]
    assert before <= decoded["iat"] <= after
    assert decoded["exp"] - decoded["iat"] == 300
    assert decoded["nbf"] <= decoded["iat"]
    assert decoded["jti"]


def test_every_token_is_unique(service: TokenService) -> None:
    principal = Principal("a", "gpu")
    first = jwt.decode(
        service.issue(principal, []).token, KEY, algorithms=["HS256"], audience="metahub"
    )
    second = jwt.decode(
        service.issue(principal, []).token, KEY, algorithms=["HS256"], audience="metahub"
    )
    assert first["jti"] != second["jti"]


def test_issued_token_fields(service: TokenService) -> None:
    issued = service.issue(Principal("a", "gpu"), [])
    assert issued.expires_in == 300
    when = datetime.strptime(issued.issued_at, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs(when.timestamp() - time.time()) < 5


def test_ttl_is_used() -> None:
    service = TokenService(KEY, ttl=60)
    issued = service.issue(Principal("a", "gpu"), [])
    decoded = jwt.decode(issued.token, KEY, algorithms=["HS256"], audience="metahub")
    assert decoded["exp"] - decoded["iat"] == 60
    assert issued.expires_in == 60


def test_unfiltered_principal_round_trip(service: TokenService) -> None:
    issued = service.issue(Principal("anonymous", None), ["library/ubuntu"])
    principal = service.verify(issued.token)
    assert principal is not None
    assert principal.unfiltered
    assert principal.machine_type is None
    assert principal.subject == "anonymous"


def test_another_service_with_the_same_key_accepts(service: TokenService) -> None:
    issued = service.issue(Principal("a", "gpu"), ["x"])
    assert TokenService(KEY, ttl=60).verify(issued.token) is not None


def test_forged_token_with_the_right_key_is_accepted(service: TokenService) -> None:
    principal = service.verify(forge(claims()))
    assert principal == Principal("gpu-login", "gpu", frozenset({"library/ubuntu"}))


def _now() -> int:
    return int(time.time())


@pytest.mark.parametrize(
    "make_token",
    [
        pytest.param(lambda: forge(claims(exp=_now() - 10, iat=_now() - 400)), id="expired"),
        pytest.param(lambda: forge(claims(nbf=_now() + 3600)), id="not-yet-valid"),
        pytest.param(lambda: forge(claims(), key=OTHER_KEY), id="wrong-key"),
        pytest.param(lambda: forge(claims(aud="registry.docker.io")), id="wrong-audience"),
        pytest.param(lambda: forge(claims(aud=None)), id="no-audience"),
        pytest.param(lambda: forge(claims(iss="someone-else")), id="wrong-issuer"),
        pytest.param(lambda: forge(claims(iss=None)), id="no-issuer"),
        pytest.param(lambda: forge(claims(sub=None)), id="no-subject"),
        pytest.param(lambda: forge(claims(exp=None)), id="no-expiry"),
        pytest.param(lambda: forge(claims(iat=None)), id="no-issued-at"),
        pytest.param(lambda: forge(claims(nbf=None)), id="no-not-before"),
        pytest.param(lambda: forge(claims(jti=None)), id="no-token-id"),
        pytest.param(lambda: forge(claims(mt=None)), id="no-machine-type"),
        pytest.param(lambda: forge(claims(cid=None)), id="no-credential-id"),
        pytest.param(lambda: forge(claims(cv=None)), id="no-credential-tag"),
        pytest.param(lambda: forge(claims(access=None)), id="no-access"),
        pytest.param(lambda: forge(claims(mt=None, cid=None)), id="no-machine-type-no-credential"),
        pytest.param(lambda: forge(claims(mt=5)), id="machine-type-not-a-string"),
        pytest.param(lambda: forge(claims(cid=["c"])), id="credential-id-not-a-string"),
        pytest.param(lambda: forge(claims(cv=7)), id="credential-tag-not-a-string"),
        pytest.param(lambda: forge(claims(access="repository:a:pull")), id="access-not-a-list"),
        pytest.param(lambda: forge(claims(sub=5)), id="subject-not-a-string"),
        pytest.param(
            lambda: forge(claims(), algorithm="HS512"),
            id="other-algorithm",
            marks=pytest.mark.filterwarnings("ignore:The HMAC key is"),
        ),
        pytest.param(lambda: "", id="empty"),
        pytest.param(lambda: "not.a.token", id="garbage"),
        pytest.param(lambda: "a.b", id="two-parts"),
    ],
)
def test_verify_rejects(service: TokenService, make_token: Callable[[], str]) -> None:
    assert service.verify(make_token()) is None


def test_expired_token_of_this_service_is_rejected(service: TokenService) -> None:
    """Same key, same claim shape as `issue`, but the ttl has run out."""
    issued = service.issue(Principal("a", "gpu"), ["x"])
    decoded = jwt.decode(issued.token, KEY, algorithms=["HS256"], audience="metahub")
    decoded["iat"] -= 1000
    decoded["nbf"] -= 1000
    decoded["exp"] = int(time.time()) - 1
    assert service.verify(forge(decoded)) is None


def test_unsigned_token_is_rejected(service: TokenService) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    payload = b64(json.dumps(claims()).encode())
    assert service.verify(f"{header}.{payload}.") is None


def test_tampered_payload_is_rejected(service: TokenService) -> None:
    issued = service.issue(Principal("cpu-login", "cpu"), ["x"])
    header, payload, signature = issued.token.split(".")
    decoded = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    decoded["mt"] = "gpu"
    decoded["access"].append({"type": "repository", "name": "secret", "actions": ["pull"]})
    assert service.verify(f"{header}.{b64(json.dumps(decoded).encode())}.{signature}") is None


def test_tampered_signature_is_rejected(service: TokenService) -> None:
    token = service.issue(Principal("a", "gpu"), ["x"]).token
    header, payload, signature = token.split(".")
    flipped = ("A" if signature[0] != "A" else "B") + signature[1:]
    assert service.verify(f"{header}.{payload}.{flipped}") is None


@pytest.mark.parametrize(
    ("access", "granted"),
    [
        ([], frozenset()),
        ([{"type": "repository", "name": "a", "actions": ["push"]}], frozenset()),
        ([{"type": "repository", "name": "a", "actions": ["push", "pull"]}], frozenset({"a"})),
        ([{"type": "registry", "name": "catalog", "actions": ["pull"]}], frozenset()),
        ([{"type": "repository", "name": "a"}], frozenset()),
        (["repository:a:pull"], frozenset()),
        (
            [
                {"type": "repository", "name": "a", "actions": ["pull"]},
                {"type": "repository", "name": "b", "actions": ["pull"]},
            ],
            frozenset({"a", "b"}),
        ),
    ],
)
def test_only_repository_pull_grants_count(
    service: TokenService, access: Any, granted: frozenset[str]
) -> None:
    principal = service.verify(forge(claims(access=access)))
    assert principal is not None
    assert principal.repositories == granted


@pytest.mark.parametrize(
    "principal",
    [
        Principal("gpu-login", "gpu", credential_id="c-1", credential_tag="t"),  # a credential
        Principal("anonymous", "bw"),  # anonymous, served as a machine type
        Principal("anonymous", None),  # anonymous and unfiltered
        Principal("acct/cpu=zen2", "acct/cpu=zen2"),  # a profile login
    ],
    ids=["credential", "anonymous", "anonymous-unfiltered", "profile-login"],
)
def test_every_kind_of_principal_round_trips(service: TokenService, principal: Principal) -> None:
    """What `verify` requires, `issue` writes for every principal MetaHub issues tokens to."""
    verified = service.verify(service.issue(principal, ["x"]).token)
    assert verified is not None
    assert (verified.subject, verified.machine_type) == (principal.subject, principal.machine_type)
    assert (verified.credential_id, verified.credential_tag) == (
        principal.credential_id,
        principal.credential_tag,
    )
    assert verified.repositories == frozenset({"x"})


def test_an_absurdly_long_token_is_refused_before_decoding(
    service: TokenService, monkeypatch: pytest.MonkeyPatch
) -> None:
    decoded: list[str] = []
    real_decode = jwt.decode

    def counting_decode(token: str, *args: Any, **kwargs: Any) -> Any:
        decoded.append(token)
        return real_decode(token, *args, **kwargs)

    monkeypatch.setattr(jwt, "decode", counting_decode)
    padding = [{"type": "repository", "name": f"r{n:05}", "actions": ["push"]} for n in range(200)]
    long_token = forge(claims(access=padding))
    assert len(long_token) > MAX_TOKEN_LENGTH
    assert service.verify(long_token) is None
    assert decoded == []
    assert service.verify(forge(claims())) is not None
    assert len(decoded) == 1


def test_a_token_too_long_to_be_sent_back_is_not_issued(service: TokenService) -> None:
    names = [f"organisation/repository-{n:05}" for n in range(300)]
    with pytest.raises(errors.TooLarge):
        service.issue(Principal("a", "gpu"), names)
    fits = service.issue(Principal("a", "gpu"), names[:20])
    assert len(fits.token) <= MAX_TOKEN_LENGTH


def test_verified_tokens_are_cached_within_a_byte_budget() -> None:
    service = TokenService(KEY, cache_size=1000, cache_bytes=4000)
    tokens = [service.issue(Principal("a", "gpu"), [f"repo-{n}"]).token for n in range(40)]
    for token in tokens:
        assert service.verify(token) is not None
    assert service.cached_bytes <= 4000
    assert service.cached_bytes == sum(len(t) for t in service._verified)
    assert 0 < len(service._verified) < 40
    assert tokens[-1] in service._verified  # the newest are kept


def test_cache_bytes_are_given_back_when_a_token_expires() -> None:
    service = TokenService(KEY, ttl=60)
    token = service.issue(Principal("a", "gpu"), ["x"]).token
    assert service.verify(token) is not None
    assert service.cached_bytes == len(token)
    service._verified[token] = (service._verified[token][0], 0.0)  # as if its time ran out
    assert service.verify(token) is not None  # decoded again, and cached again
    assert service.cached_bytes == len(token)


@pytest.mark.parametrize(
    ("repositories", "name", "expected"),
    [
        (None, "anything", True),
        (None, "", True),
        (frozenset({"library/ubuntu"}), "library/ubuntu", True),
        (frozenset({"library/ubuntu"}), "library/debian", False),
        (frozenset({"library/ubuntu"}), "library", False),
        (frozenset({"library/ubuntu"}), "library/ubuntu/x", False),
        (frozenset(), "library/ubuntu", False),
    ],
)
def test_may_pull(repositories: frozenset[str] | None, name: str, expected: bool) -> None:
    assert Principal("a", "gpu", repositories).may_pull(name) is expected


def test_principal_unfiltered() -> None:
    assert Principal("anonymous", None).unfiltered
    assert not Principal("a", "gpu").unfiltered
