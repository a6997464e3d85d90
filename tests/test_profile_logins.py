"""Profile logins: `<account>/<key>=<value>,...` authenticates as a machine type made on the fly.

The parsing and validation rules are checked on ProfileLogins directly; the rest against a real
`metahub serve` in front of a real docker-registry holding a feature-tagged index, through the
token flow (`GET /token` with Basic credentials, then Bearer), plain Basic, and `docker login`
with a real dockerd. Expected digests come from the upstream registry directly.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from metahub.auth.profile_logins import (
    ProfileLoginError,
    ProfileLogins,
    parse_profile_login,
    platforms_run_by,
)
from metahub.config import AccountConfig, FeaturesConfig
from metahub.demo.images import FeatureImage, build_feature_images
from metahub.features.selection import MachineProfile
from metahub.oci.layout_writer import MEDIA_TYPE_IMAGE_INDEX, MEDIA_TYPE_IMAGE_MANIFEST
from metahub.oci.platform import parse_platform
from tests.support.metahub_server import MetaHubServer
from tests.support.push import Pusher
from tests.support.servers import Dockerd, RegistryServer

REPOSITORY = "hpc/app"
UPSTREAM_AUTH = ("upstream-user", "upstream-secret")
PASSWORD = "hpc-secret"
ADMIN_TOKEN = "profile-admin-token"
ACCEPT = f"{MEDIA_TYPE_IMAGE_INDEX}, {MEDIA_TYPE_IMAGE_MANIFEST}"


def accounts(**overrides: object) -> list[AccountConfig]:
    return [
        AccountConfig(login="hpc", password=PASSWORD, profile_logins=True, **overrides),
        AccountConfig(login="plain", password=PASSWORD),
    ]


def service(**overrides: object) -> ProfileLogins:
    types = {"gpu": MachineProfile.of("gpu", ["cpu:zen2", "driver:535.104"])}
    features = FeaturesConfig(matchers={"ht": "exact", "driver": "at-least"})
    return ProfileLogins(accounts(**overrides), features, lambda: types)


# -- parsing --------------------------------------------------------------------------------------


def test_a_profile_login_is_canonical_sorted_and_distinct() -> None:
    spec = parse_profile_login("hpc/nvcap=8.6,cpu=zen3,nvcap=8.6,nvcap=7.5")
    assert spec.account == "hpc"
    assert [str(f) for f in spec.features] == ["cpu:zen3", "nvcap:7.5", "nvcap:8.6"]
    assert spec.name == "hpc/cpu=zen3,nvcap=7.5,nvcap=8.6"
    assert parse_profile_login(spec.name).name == spec.name  # rebuilding from a token's mt


def test_the_platform_is_part_of_the_name_but_not_a_feature() -> None:
    spec = parse_profile_login("hpc/platform=linux/amd64/v3,cpu=zen3")
    assert spec.platform == parse_platform("linux/amd64/v3")
    assert [str(f) for f in spec.features] == ["cpu:zen3"]
    assert spec.name == "hpc/cpu=zen3,platform=linux/amd64/v3"


@pytest.mark.parametrize(
    ("login", "says"),
    [
        ("hpc", "expected ACCOUNT/KEY=VALUE"),
        ("/cpu=zen3", "expected ACCOUNT/KEY=VALUE"),
        ("hpc/cpu", "'cpu' is not key=value"),
        ("hpc/cpu=zen3,", "'' is not key=value"),
        ("hpc/cpu=", "'cpu=' is not key=value"),
        ("hpc/=zen3", "'=zen3' is not key=value"),
        ("hpc/9cpu=zen3", "9cpu=zen3 is not a valid feature"),
        ("hpc/platform=linux", "invalid platform 'linux'"),
        ("hpc/platform=linux/amd64,platform=linux/arm64", "more than one platform"),
    ],
)
def test_malformed_logins_are_refused_with_the_reason(login: str, says: str) -> None:
    with pytest.raises(ProfileLoginError) as refused:
        parse_profile_login(login)
    assert says in str(refused.value)


def test_platforms_run_by_a_host() -> None:
    def texts(platform: str) -> list[str]:
        return [str(p) for p in platforms_run_by(parse_platform(platform))]

    assert texts("linux/amd64/v3") == [
        "linux/amd64",
        "linux/amd64/v1",
        "linux/amd64/v2",
        "linux/amd64/v3",
    ]
    assert texts("linux/amd64") == ["linux/amd64", "linux/amd64/v1"]
    assert texts("linux/arm64/v8") == ["linux/arm64"]
    assert texts("linux/arm/v7") == ["linux/arm/v7", "linux/arm/v6", "linux/arm/v5"]
    assert texts("linux/ppc64le") == ["linux/ppc64le"]


# -- authentication and validation ----------------------------------------------------------------


async def test_a_good_profile_login_makes_a_machine_type() -> None:
    logins = service(mode="exact")
    profile = await logins.authenticate("hpc/nvcap=8.6,cpu=zen3,ht=off", PASSWORD)
    assert profile is not None
    assert profile.name == "hpc/cpu=zen3,ht=off,nvcap=8.6"
    assert [str(f) for f in profile.features] == ["cpu:zen3", "ht:off", "nvcap:8.6"]
    assert profile.mode == "exact"
    assert profile.platforms == ()
    # The token carries the canonical name; rebuilding from it gives the same profile.
    again = logins.profile(profile.name)
    assert again == profile and again.revision == profile.revision
    expected = MachineProfile.of(profile.name, ["cpu:zen3", "ht:off", "nvcap:8.6"], mode="exact")
    assert profile.revision == expected.revision


async def test_the_platform_becomes_the_platforms_the_host_runs() -> None:
    profile = await service().authenticate("hpc/cpu=zen3,platform=linux/amd64/v2", PASSWORD)
    assert profile is not None
    assert [str(p) for p in profile.platforms] == [
        "linux/amd64",
        "linux/amd64/v1",
        "linux/amd64/v2",
    ]
    assert str(profile.preferred_platform) == "linux/amd64"


async def test_an_account_s_platforms_narrow_the_host_s() -> None:
    logins = service(platforms=("linux/amd64", "linux/arm64"))
    profile = await logins.authenticate("hpc/cpu=zen3,platform=linux/amd64/v3", PASSWORD)
    assert profile is not None
    assert [str(p) for p in profile.platforms] == ["linux/amd64"]
    without = await logins.authenticate("hpc/cpu=zen3", PASSWORD)
    assert without is not None
    assert [str(p) for p in without.platforms] == ["linux/amd64", "linux/arm64"]
    with pytest.raises(ProfileLoginError, match="serves linux/amd64, linux/arm64, none of which"):
        await logins.authenticate("hpc/cpu=a64fx,platform=linux/ppc64le", PASSWORD)


async def test_wrong_passwords_and_unknown_accounts_say_nothing_more() -> None:
    logins = service()
    assert await logins.authenticate("hpc/cpu=zen3", "wrong") is None
    assert await logins.authenticate("nobody/cpu=zen3", PASSWORD) is None
    # A wrong password is refused before the login's features are even looked at.
    assert await logins.authenticate("hpc/bogus=1", "wrong") is None


async def test_an_account_without_profile_logins_is_refused() -> None:
    with pytest.raises(ProfileLoginError, match="account 'plain' does not take profile logins"):
        await service().authenticate("plain/cpu=zen3", PASSWORD)


async def test_unknown_keys_are_refused_naming_the_keys_the_server_knows() -> None:
    with pytest.raises(ProfileLoginError) as refused:
        await service().authenticate("hpc/cpu=zen3,colour=blue,mpi=openmpi", PASSWORD)
    error = refused.value
    known = ["cpu", "cpuflag", "cuda", "driver", "ht", "nvcap", "platform"]
    assert error.unknown_keys == ["colour", "mpi"]
    assert error.known_keys == known
    assert str(error) == (
        "profile login 'hpc/cpu=zen3,colour=blue,mpi=openmpi': unknown feature keys colour, mpi; "
        f"this server knows {', '.join(known)}"
    )
    assert error.detail == {"unknown_keys": ["colour", "mpi"], "known_keys": known}


async def test_keys_used_by_machine_types_are_known() -> None:
    types = {"mpi": MachineProfile.of("mpi", ["cpu:zen2", "mpi:openmpi"])}
    logins = ProfileLogins(accounts(), FeaturesConfig(), lambda: types)
    builtin = {"cpu", "cpuflag", "nvcap", "driver", "cuda", "platform"}
    assert logins.known_keys() == builtin | {"mpi"}
    profile = await logins.authenticate("hpc/mpi=openmpi", PASSWORD)
    assert profile is not None and [str(f) for f in profile.features] == ["mpi:openmpi"]
    types.clear()  # a machine type removed: its keys are no longer known to new logins
    with pytest.raises(ProfileLoginError, match="unknown feature key mpi"):
        await logins.authenticate("hpc/cpu=zen2,mpi=mpich", PASSWORD)


@pytest.mark.parametrize(
    ("login", "says"),
    [
        ("hpc/cpu=zen99", "cpu=zen99: 'zen99' is not a microarchitecture archspec knows"),
        ("hpc/nvcap=9.0a", "nvcap=9.0a: a machine's compute capability is MAJOR.MINOR"),
        ("hpc/nvcap=eight", "nvcap=eight: a machine's compute capability is MAJOR.MINOR"),
        ("hpc/driver=latest", "driver=latest: expected a dotted version"),
        ("hpc/cpuflag=AVX2", "cpuflag=AVX2: a cpu flag is lowercase letters, digits and _"),
        ("hpc/nvptx=8.0", "unknown feature key nvptx"),  # describes builds, not machines
    ],
)
async def test_values_the_key_s_matcher_cannot_use_are_refused(login: str, says: str) -> None:
    with pytest.raises(ProfileLoginError) as refused:
        await service().authenticate(login, PASSWORD)
    assert says in str(refused.value)


async def test_cpu_aliases_are_accepted() -> None:
    profile = await service().authenticate("hpc/cpu=coffeelake", PASSWORD)
    assert profile is not None and [str(f) for f in profile.features] == ["cpu:coffeelake"]


async def test_cpu_flags_are_accepted_with_the_cpu() -> None:
    profile = await service().authenticate("hpc/cpu=haswell,cpuflag=avx2", PASSWORD)
    assert profile is not None
    assert [str(f) for f in profile.features] == ["cpu:haswell", "cpuflag:avx2"]


async def test_configured_aliases_are_accepted_for_any_matcher() -> None:
    """Selection maps a machine's values through the key's aliases, so a login may name one."""
    features = FeaturesConfig(aliases={"cpu": {"lab-cpu": "zen3"}, "nvcap": {"a100": "8.0"}})
    logins = ProfileLogins(accounts(), features, dict)
    profile = await logins.authenticate("hpc/cpu=lab-cpu,nvcap=a100", PASSWORD)
    assert profile is not None
    assert [str(f) for f in profile.features] == ["cpu:lab-cpu", "nvcap:a100"]


async def test_built_profiles_are_cached_and_bounded() -> None:
    logins = ProfileLogins(accounts(), FeaturesConfig(), dict, cache_size=2)
    first = logins.profile("hpc/cpu=zen2")
    assert logins.profile("hpc/cpu=zen2") is first
    logins.profile("hpc/cpu=zen3")
    logins.profile("hpc/cpu=zen4")
    rebuilt = logins.profile("hpc/cpu=zen2")
    assert rebuilt is not first and rebuilt == first


# -- against a real server ------------------------------------------------------------------------


def _build(tag: str, *features: str) -> FeatureImage:
    named = ",".join(features) or "generic"
    return FeatureImage(tag, "x86-64", features, f">> {REPOSITORY} build for {named}")


BUILDS = {
    build.tag: build
    for build in (
        _build("haswell", "cpu:haswell"),
        _build("zen2", "cpu:zen2"),
        _build("zen3-nvcap86", "cpu:zen3", "nvcap:8.6"),
        _build("smt-off", "cpu:x86_64_v2", "ht:off"),
        _build("generic"),
    )
}
# A profile login and the build it must get.
EXPECTED = {
    "hpc/cpu=zen3,nvcap=8.6": "zen3-nvcap86",
    "hpc/cpu=zen3": "zen2",
    "hpc/cpu=icelake": "haswell",
    "hpc/cpu=ivybridge,ht=off": "smt-off",
    "hpc/cpu=ivybridge,ht=on": "generic",
}


@dataclass(frozen=True)
class Setup:
    hub: MetaHubServer
    digests: dict[str, str]  # tag -> digest, as the upstream registry serves it
    configs: dict[str, str]  # tag -> the image's config digest (docker's image ID)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    work = tmp_path_factory.mktemp("profile-logins")
    with RegistryServer(work / "upstream", htpasswd=dict([UPSTREAM_AUTH])) as upstream:
        build_feature_images(work / "layout", REPOSITORY, BUILDS.values())
        pusher = Pusher(upstream.url, UPSTREAM_AUTH)
        pusher.layout(work / "layout", REPOSITORY)
        pusher.close()
        digests: dict[str, str] = {}
        configs: dict[str, str] = {}
        with httpx.Client(base_url=upstream.url, auth=UPSTREAM_AUTH) as http:
            for tag in [*BUILDS, "latest"]:
                got = http.get(f"/v2/{REPOSITORY}/manifests/{tag}", headers={"accept": ACCEPT})
                got.raise_for_status()
                digests[tag] = "sha256:" + hashlib.sha256(got.content).hexdigest()
                if tag != "latest":
                    configs[tag] = got.json()["config"]["digest"]
        (work / "hub").mkdir()
        config = {
            "upstream": {
                "url": upstream.url,
                "username": UPSTREAM_AUTH[0],
                "password": UPSTREAM_AUTH[1],
            },
            "features": {"matchers": {"ht": "exact"}},
            "admin": {"tokens": [ADMIN_TOKEN]},
            "accounts": [
                {"login": "hpc", "password": PASSWORD, "profile_logins": True},
                {"login": "plain", "password": PASSWORD},
            ],
        }
        with MetaHubServer(work / "hub", config) as hub:
            yield Setup(hub, digests, configs)


@pytest.mark.parametrize("login", sorted(EXPECTED))
def test_explain_takes_a_profile_login_as_the_machine_type(setup: Setup, login: str) -> None:
    explained = httpx.get(
        f"{setup.hub.url}/api/v1/explain",
        params={"image": f"{REPOSITORY}:latest", "machine_type": login},
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert explained.status_code == 200, explained.text
    chosen = [e["digest"] for e in explained.json()["entries"] if e["chosen"]]
    assert chosen == [setup.digests[EXPECTED[login]]]


@pytest.mark.parametrize(
    ("login", "says"),
    [
        ("hpc/gpu=a100", "unknown feature key gpu"),
        ("plain/cpu=zen3", "does not take profile logins"),
    ],
)
def test_explain_names_what_is_wrong_with_a_profile_login(
    setup: Setup, login: str, says: str
) -> None:
    explained = httpx.get(
        f"{setup.hub.url}/api/v1/explain",
        params={"image": f"{REPOSITORY}:latest", "machine_type": login},
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert explained.status_code == 404
    assert says in explained.json()["errors"][0]["message"]


def token_for(hub: MetaHubServer, login: str, password: str = PASSWORD) -> httpx.Response:
    scope = f"repository:{REPOSITORY}:pull"
    return httpx.get(
        f"{hub.url}/token",
        params={"service": "metahub", "scope": scope, "account": login},
        auth=(login, password),
    )


def served_entries(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [m["digest"] for m in response.json()["manifests"]]


def jwt_claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    claims: dict[str, object] = json.loads(base64.urlsafe_b64decode(payload + "=="))
    return claims


@pytest.mark.parametrize("login", sorted(EXPECTED))
def test_the_token_flow_serves_the_entry_for_the_login_s_features(setup: Setup, login: str) -> None:
    issued = token_for(setup.hub, login)
    assert issued.status_code == 200, issued.text
    token = issued.json()["token"]
    assert jwt_claims(token)["mt"] == parse_profile_login(login).name
    manifest = httpx.get(
        f"{setup.hub.url}/v2/{REPOSITORY}/manifests/latest",
        headers={"authorization": f"Bearer {token}", "accept": ACCEPT},
    )
    assert served_entries(manifest) == [setup.digests[EXPECTED[login]]]
    assert manifest.headers["docker-content-digest"] != setup.digests["latest"]


@pytest.mark.parametrize("login", sorted(EXPECTED))
def test_plain_basic_serves_the_same_entry(setup: Setup, login: str) -> None:
    manifest = httpx.get(
        f"{setup.hub.url}/v2/{REPOSITORY}/manifests/latest",
        headers={"accept": ACCEPT},
        auth=(login, PASSWORD),
    )
    assert served_entries(manifest) == [setup.digests[EXPECTED[login]]]


def test_logins_in_any_order_share_one_machine_type_and_never_each_other_s_answer(
    setup: Setup,
) -> None:
    url = f"{setup.hub.url}/v2/{REPOSITORY}/manifests/latest"
    answers = {}
    for login in ["hpc/nvcap=8.6,cpu=zen3", "hpc/cpu=zen3", "hpc/cpu=zen3,nvcap=8.6"]:
        got = httpx.get(url, headers={"accept": ACCEPT}, auth=(login, PASSWORD))
        answers[login] = (served_entries(got), got.headers["docker-content-digest"])
    assert answers["hpc/nvcap=8.6,cpu=zen3"] == answers["hpc/cpu=zen3,nvcap=8.6"]
    assert answers["hpc/cpu=zen3"][0] == [setup.digests["zen2"]]


def test_the_login_s_platform_limits_what_is_served(setup: Setup) -> None:
    url = f"{setup.hub.url}/v2/{REPOSITORY}/manifests/latest"
    amd64 = httpx.get(
        url, headers={"accept": ACCEPT}, auth=("hpc/cpu=zen3,platform=linux/amd64/v3", PASSWORD)
    )
    assert served_entries(amd64) == [setup.digests["zen2"]]
    arm64 = httpx.get(
        url, headers={"accept": ACCEPT}, auth=("hpc/cpu=a64fx,platform=linux/arm64/v8", PASSWORD)
    )
    assert arm64.status_code == 404
    assert arm64.json()["errors"][0]["code"] == "MANIFEST_UNKNOWN"


BAD_LOGINS = [
    # (login, password, what the message says)
    ("hpc/cpu=zen3", "wrong", "invalid username or password"),
    ("nobody/cpu=zen3", PASSWORD, "invalid username or password"),
    ("plain/cpu=zen3", PASSWORD, "account 'plain' does not take profile logins"),
    ("hpc/cpu=zen3,colour=blue", PASSWORD, "unknown feature key colour; this server knows cpu"),
    ("hpc/cpu=zen3,nvcap", PASSWORD, "'nvcap' is not key=value"),
    ("hpc/cpu=zen99", PASSWORD, "'zen99' is not a microarchitecture archspec knows"),
]


@pytest.mark.parametrize(("login", "password", "says"), BAD_LOGINS)
def test_bad_profile_logins_get_no_token(
    setup: Setup, login: str, password: str, says: str
) -> None:
    refused = token_for(setup.hub, login, password)
    assert refused.status_code == 401
    error = refused.json()["errors"][0]
    assert error["code"] == "UNAUTHORIZED"
    assert says in error["message"]
    if "colour" in login:
        assert error["detail"]["unknown_keys"] == ["colour"]
        known = ["cpu", "cpuflag", "cuda", "driver", "ht", "nvcap", "platform"]
        assert error["detail"]["known_keys"] == known


@pytest.mark.parametrize(("login", "password", "says"), BAD_LOGINS)
def test_bad_profile_logins_get_no_manifest(
    setup: Setup, login: str, password: str, says: str
) -> None:
    refused = httpx.get(
        f"{setup.hub.url}/v2/{REPOSITORY}/manifests/latest",
        headers={"accept": ACCEPT},
        auth=(login, password),
    )
    assert refused.status_code == 401
    assert refused.headers["www-authenticate"].startswith('Bearer realm="')
    assert says in refused.json()["errors"][0]["message"]


@pytest.mark.e2e
def test_docker_logs_in_and_pulls_with_a_profile_login(
    setup: Setup, dockerd: Dockerd, docker_config: Path
) -> None:
    login = "hpc/cpu=zen3,nvcap=8.6"
    logged_in = dockerd.login(setup.hub.host, login, PASSWORD, docker_config)
    assert logged_in.returncode == 0, logged_in.stderr
    ref = f"{setup.hub.host}/{REPOSITORY}:latest"
    pulled = dockerd.docker("pull", ref, config_dir=docker_config)
    assert pulled.returncode == 0, pulled.stderr
    image_id = dockerd.docker("image", "inspect", "--format", "{{.Id}}", ref, check=True)
    assert image_id.stdout.strip() == setup.configs["zen3-nvcap86"]
    dockerd.docker("image", "rm", ref, config_dir=docker_config)


@pytest.mark.e2e
def test_docker_login_with_a_refused_profile_login_fails_with_the_reason(
    setup: Setup, dockerd: Dockerd, docker_config: Path
) -> None:
    refused = dockerd.login(setup.hub.host, "hpc/cpu=zen3,colour=blue", PASSWORD, docker_config)
    assert refused.returncode != 0
    assert "unknown feature key colour" in refused.stderr
