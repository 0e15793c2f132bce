"""The pure auth core: tokens from requests, verification with pinned algorithms, claims -> identity and
permissions, name patterns, the refresh command. No sockets, no event loop."""

from __future__ import annotations

import time
from pathlib import Path

import jwt
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from gateway.core.auth import (
    AuthError,
    Refresh,
    TokenPolicy,
    VerifyKey,
    algorithms_for,
    authenticate,
    choose_subprotocol,
    identity_from_claims,
    keys_from_jwks,
    keys_from_pem,
    parse_refresh,
    secret_key,
    token_from_request,
    verify_token,
)
from gateway.core.permissions import Grants, Pattern, Permissions
from shared.errors import FrameError
from shared.frames import ErrorCode
from tests.security.tokens import SECRET, TokenKit, ec_key, jwk, public_pem, rsa_key

POLICY = TokenPolicy()


@pytest.fixture(scope="module")
def kit() -> TokenKit:
    return TokenKit()


@pytest.fixture(scope="module")
def keys(kit: TokenKit) -> list[VerifyKey]:
    return [
        secret_key(kit.secret),
        *keys_from_pem(public_pem(kit.rsa_private) + public_pem(kit.ec_private), "keys.pem"),
    ]


# -- where the token comes from ----------------------------------------------------------------------------
def test_the_authorization_header_comes_first_then_the_query_then_the_subprotocol() -> None:
    assert token_from_request(["Bearer h"], {"token": ["q"]}, ["prism, prism.bearer.s"]) == "h"
    assert token_from_request(["bearer   h2 "], {}, []) == "h2"
    assert token_from_request([], {"token": ["q"]}, ["prism, prism.bearer.s"]) == "q"
    assert token_from_request([], {}, ["prism, prism.bearer.s"]) == "s"
    assert token_from_request([], {}, ["prism", "prism.bearer.s2"]) == "s2"
    assert token_from_request(["Basic dXNlcjpwYXNz"], {"user": ["alice"]}, ["chat"]) is None
    assert token_from_request(["Bearer "], {"token": [""]}, ["prism.bearer."]) is None


@pytest.mark.parametrize(
    ("authorization", "query", "protocols"),
    [
        (["Bearer a", "Bearer b"], {}, []),
        ([], {"token": ["a", "b"]}, []),
        ([], {}, ["prism.bearer.a, prism.bearer.b"]),
    ],
)
def test_two_tokens_in_one_place_are_refused(
    authorization: list[str], query: dict[str, list[str]], protocols: list[str]
) -> None:
    with pytest.raises(AuthError) as caught:
        token_from_request(authorization, query, protocols)
    assert caught.value.status == 401


def test_the_server_answers_prism_or_else_the_lone_bearer_subprotocol() -> None:
    assert choose_subprotocol(["prism.bearer.t", "prism"]) == "prism"
    assert choose_subprotocol(["prism.bearer.t"]) == "prism.bearer.t"
    assert choose_subprotocol(["chat"]) is None
    assert choose_subprotocol([]) is None


# -- keys and their algorithms ------------------------------------------------------------------------------
def test_each_key_type_verifies_only_its_own_algorithms(kit: TokenKit) -> None:
    assert algorithms_for(SECRET.encode()) == {"HS256"}  # 43 bytes: too short for HS384/HS512
    assert algorithms_for(b"x" * 64) == {"HS256", "HS384", "HS512"}
    assert algorithms_for(kit.rsa_private.public_key()) == {
        "RS256",
        "RS384",
        "RS512",
        "PS256",
        "PS384",
        "PS512",
    }
    assert algorithms_for(kit.ec_private.public_key()) == {"ES256"}
    assert algorithms_for(ed25519.Ed25519PrivateKey.generate().public_key()) == {"EdDSA"}
    assert algorithms_for(public_pem(kit.rsa_private)) == frozenset()  # a PEM is never an HMAC secret
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    assert algorithms_for(small.public_key()) == frozenset()


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 32"):
        secret_key("short")


def test_pem_files_may_hold_several_keys_and_certificates_but_not_garbage(kit: TokenKit) -> None:
    keys = keys_from_pem(public_pem(kit.rsa_private) + b"\n" + public_pem(kit.ec_private), "two.pem")
    assert [k.algorithms for k in keys] == [algorithms_for(kit.rsa_private.public_key()), {"ES256"}]
    with pytest.raises(ValueError, match="no PEM public key"):
        keys_from_pem(b"nothing here", "empty.pem")
    with pytest.raises(ValueError, match="not a public key"):
        keys_from_pem(b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "bad.pem")


def test_jwks_keys_keep_their_kid_and_alg_and_unusable_entries_are_skipped(kit: TokenKit) -> None:
    document = {
        "keys": [
            jwk(kit.rsa_private, "r1"),
            jwk(kit.ec_private, "e1"),
            jwk(kit.rsa_private, "enc") | {"use": "enc"},
            {"kty": "nope"},
            "not an object",
        ]
    }
    keys = keys_from_jwks(orjson.dumps(document), "jwks.json")
    assert [(k.kid, set(k.algorithms)) for k in keys] == [("r1", {"RS256"}), ("e1", {"ES256"})]
    with pytest.raises(ValueError, match="no usable signing key"):
        keys_from_jwks(b'{"keys":[]}', "empty.json")
    with pytest.raises(ValueError, match="not JSON"):
        keys_from_jwks(b"{", "broken.json")


# -- verification ------------------------------------------------------------------------------------------
def test_valid_tokens_verify_with_every_key_type(kit: TokenKit, keys: list[VerifyKey]) -> None:
    for token in (kit.hs256("a"), kit.rs256("b"), kit.es256("c")):
        assert verify_token(token, keys, POLICY)["sub"] in "abc"


def test_every_hostile_token_is_refused_with_401(kit: TokenKit, keys: list[VerifyKey]) -> None:
    for name, token in kit.hostile().items():
        with pytest.raises(AuthError) as caught:
            verify_token(token, keys, POLICY)
        assert caught.value.status == 401, name


def test_algorithm_confusion_finds_no_key_when_only_public_keys_are_configured(kit: TokenKit) -> None:
    public_only = keys_from_pem(public_pem(kit.rsa_private), "rsa.pem")
    with pytest.raises(AuthError, match="no HS256 key"):
        verify_token(kit.hostile()["hs256_with_rsa_public_key"], public_only, POLICY)


def test_kid_picks_the_jwks_key(kit: TokenKit) -> None:
    other = TokenKit(rsa_private=rsa_key("other"), ec_private=ec_key("other"))
    document = {"keys": [jwk(kit.rsa_private, "k1"), jwk(other.rsa_private, "k2")]}
    keys = keys_from_jwks(orjson.dumps(document), "jwks.json")
    assert verify_token(other.rs256("x", kid="k2"), keys, POLICY)["sub"] == "x"
    assert verify_token(kit.rs256("y"), keys, POLICY)["sub"] == "y"  # no kid: every RS256 key is tried
    with pytest.raises(AuthError, match="signature verification failed"):
        verify_token(other.rs256("x", kid="k1"), keys, POLICY)
    with pytest.raises(AuthError, match="no RS256 key with kid 'k3'"):
        verify_token(other.rs256("x", kid="k3"), keys, POLICY)


def test_expiry_leeway_and_require_exp(kit: TokenKit, keys: list[VerifyKey]) -> None:
    just_expired = kit.hs256("a", ttl=-2)
    with pytest.raises(AuthError, match="token expired") as caught:
        verify_token(just_expired, keys, POLICY)
    assert caught.value.kind == "token_expired"
    assert verify_token(just_expired, keys, TokenPolicy(leeway=30))["sub"] == "a"
    no_exp = jwt.encode({"sub": "a"}, kit.secret, algorithm="HS256")
    assert verify_token(no_exp, keys, TokenPolicy(require_exp=False)) == {"sub": "a"}


def test_audience_and_issuer(kit: TokenKit, keys: list[VerifyKey]) -> None:
    policy = TokenPolicy(audience=("prism", "chat"), issuer="https://idp")
    assert verify_token(kit.hs256("a", aud=["x", "chat"], iss="https://idp"), keys, policy)["sub"] == "a"
    for token, message in (
        (kit.hs256("a", aud="x", iss="https://idp"), "wrong audience"),
        (kit.hs256("a", aud="prism", iss="https://other"), "wrong issuer"),
        (kit.hs256("a", iss="https://idp"), "no 'aud' claim"),
    ):
        with pytest.raises(AuthError, match=message):
            verify_token(token, keys, policy)
    # RFC 7519: a token that names an audience is refused by a verifier that is none of them.
    with pytest.raises(AuthError, match="wrong audience"):
        verify_token(kit.hs256("a", aud="prism"), keys, POLICY)


# -- claims -> identity --------------------------------------------------------------------------------------
def claims(**extra: object) -> dict[str, object]:
    return {"sub": "alice", "exp": time.time() + 60} | extra


def test_identity_from_claims_encodes_the_user_and_reads_the_permissions() -> None:
    identity = identity_from_claims(
        claims(sub="auth0|x", rooms=["lobby", "user-{user}"], events="chat.* profile.update"), POLICY, "/ws"
    )
    assert identity.user == "auth0=7Cx"
    assert identity.subject == "auth0|x"
    assert identity.expires_at is not None
    assert identity.permissions.may_join("user-auth0=7Cx")
    assert not identity.permissions.may_join("user-alice")
    assert identity.permissions.may_send("profile.update")


def test_claim_names_are_configurable() -> None:
    policy = TokenPolicy(user_claim="uid", rooms_claim="can_join", events_claim="can_send")
    identity = identity_from_claims({"uid": 42, "can_join": ["r"], "can_send": [">"]}, policy, "/ws")
    assert (identity.user, identity.expires_at) == ("42", None)
    assert identity.permissions.may_join("r")
    assert identity.permissions.may_send("any.thing")


@pytest.mark.parametrize(
    ("bad", "status", "message"),
    [
        ({"sub": None}, 401, "no 'sub' claim"),
        ({"sub": ""}, 401, "no 'sub' claim"),
        ({"sub": True}, 401, "no 'sub' claim"),
        ({"sub": "@" * 100}, 403, "once encoded"),
        ({"rooms": "lob by"}, 401, None),
        ({"rooms": ["a b"]}, 401, "claim 'rooms'"),
        ({"rooms": [1]}, 401, "list of strings"),
        ({"events": ["chat..send"]}, 401, "claim 'events'"),
        ({"events": ["a.>.b"]}, 401, "claim 'events'"),
        ({"rooms": ["r"] * 300}, 401, "more than 256"),
        ({"routes": ["/other"]}, 403, "route '/ws' not allowed"),
        ({"routes": "/other /more"}, 403, "route '/ws' not allowed"),
        ({"routes": 5}, 401, "list of paths"),
    ],
)
def test_malformed_or_forbidding_claims(bad: dict[str, object], status: int, message: str | None) -> None:
    if bad == {"rooms": "lob by"}:  # a string is a space-separated list: two valid patterns
        identity_from_claims(claims(**bad), POLICY, "/ws")
        return
    with pytest.raises(AuthError) as caught:
        identity_from_claims(claims(**bad), POLICY, "/ws")
    assert caught.value.status == status
    assert message is None or message in caught.value.message


def test_absent_claims_allow_nothing_and_absent_routes_allow_every_route() -> None:
    identity = identity_from_claims(claims(), POLICY, "/anything")
    assert identity.permissions == Permissions()
    assert not identity.permissions.may_join("lobby")
    assert not identity.permissions.may_send("chat.send")


def test_authenticate_refuses_a_valid_token_for_another_route(kit: TokenKit, keys: list[VerifyKey]) -> None:
    token = kit.hs256("a", routes=["/ws"])
    assert authenticate(token, keys, POLICY, "/ws").user == "a"
    with pytest.raises(AuthError) as caught:
        authenticate(token, keys, POLICY, "/admin")
    assert (caught.value.status, caught.value.error_code) == (403, ErrorCode.FORBIDDEN)


# -- patterns ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pattern", "room", "matches"),
    [
        ("lobby", "lobby", True),
        ("lobby", "lobby2", False),
        ("*", "anything", True),
        ("chat-*", "chat-1", True),
        ("chat-*", "chat-", True),
        ("chat-*", "chat", False),
        ("*-eu", "game-eu", True),
        ("*-eu", "game-us", False),
        ("a*b*c", "abc", True),
        ("a*b*c", "a-b-b-c", True),
        ("a*b*c", "acb", False),
        ("a*a", "a", False),
        ("a*a", "aa", True),
    ],
)
def test_room_patterns(pattern: str, room: str, matches: bool) -> None:
    assert Pattern.parse(pattern, dotted=False).matches(room, dotted=False) is matches


@pytest.mark.parametrize(
    ("pattern", "event", "matches"),
    [
        ("chat.send", "chat.send", True),
        ("chat.*", "chat.send", True),
        ("chat.*", "chat", False),
        ("chat.*", "chat.room.send", False),
        ("chat.>", "chat.room.send", True),
        ("chat.>", "chat", False),
        (">", "anything.at.all", True),
        ("*", "one", True),
        ("*", "one.two", False),
        ("*.send", "chat.send", True),
        ("game-*.move", "game-7.move", True),
        ("game-*.move", "game.move", False),
    ],
)
def test_event_patterns(pattern: str, event: str, matches: bool) -> None:
    assert Pattern.parse(pattern, dotted=True).matches(event, dotted=True) is matches


@pytest.mark.parametrize("bad", ["", "a b", "a.b", ">", "user-{user", "x" * 129, "a?", "[ab]"])
def test_invalid_room_patterns(bad: str) -> None:
    with pytest.raises(ValueError, match="room pattern"):
        Pattern.parse(bad, dotted=False)


@pytest.mark.parametrize("bad", ["", "a..b", ".a", "a.", "a.>.b", "a>", "a b"])
def test_invalid_event_patterns(bad: str) -> None:
    with pytest.raises(ValueError, match="event pattern"):
        Pattern.parse(bad, dotted=True)


def test_grants_keep_exact_names_apart_from_patterns() -> None:
    grants = Grants.parse("rooms", ["lobby", "user-{user}", "chat-*"], "bob", dotted=False)
    assert grants.exact == {"lobby", "user-bob"}
    assert len(grants.patterns) == 1
    assert grants.allows("chat-9", dotted=False)
    assert Grants.parse("rooms", None, "bob", dotted=False) == Grants()


# -- refresh ----------------------------------------------------------------------------------------------
def test_refresh_frames() -> None:
    assert parse_refresh('{"prism":"refresh","token":"t","ref":1}') == Refresh("t", 1)
    assert parse_refresh('{"token":"t","prism":"refresh"}') == Refresh("t", None)
    assert parse_refresh('{"prism":"join","room":"refresh"}') is None
    assert parse_refresh('{"event":"refresh"}') is None
    assert parse_refresh('"refresh"') is None
    assert parse_refresh(b'{"prism":"refresh","token":"t"}') is None  # binary frames are messages
    assert parse_refresh('{"prism":"refresh" oops') is None  # then parse_client_frame says invalid_json
    for bad, code in (
        ('{"prism":"refresh","ref":2}', ErrorCode.INVALID_TOKEN),
        ('{"prism":"refresh","token":5,"ref":2}', ErrorCode.INVALID_TOKEN),
        ('{"prism":"refresh","token":"t","ref":true}', ErrorCode.INVALID_REF),
        ('{"prism":"refresh","token":"t","ref":9007199254740993}', ErrorCode.INVALID_REF),
    ):
        with pytest.raises(FrameError) as caught:
            parse_refresh(bad)
        assert caught.value.code == code


def test_key_files_are_read_again_when_they_change(tmp_path: Path, kit: TokenKit) -> None:
    from gateway.io.auth import _KeyFile

    path = tmp_path / "keys.pem"
    path.write_bytes(public_pem(kit.rsa_private))
    file = _KeyFile(str(path), keys_from_pem)
    assert len(file.current()) == 1
    path.write_bytes(public_pem(kit.rsa_private) + public_pem(kit.ec_private))
    assert len(file.current()) == 2
    path.write_bytes(b"-----BEGIN PUBLIC KEY-----\nhalf written")  # a broken change keeps the keys
    assert len(file.current()) == 2
    path.unlink()  # gone for a moment (a rename in progress): keep the keys
    assert len(file.current()) == 2
