"""Each area's errors share one base, so a command catches one type and prints its message."""

from __future__ import annotations

import pytest

from metahub.host.authfiles import AuthFileError
from metahub.host.errors import HostError
from metahub.host.login import LoginError, LoginRefused
from metahub.images.errors import ImageError
from metahub.images.index import IndexBuildError
from metahub.images.members import MemberError
from metahub.images.spec import InvalidReference, SpecError
from metahub.publish.client import RegistryClientError
from metahub.publish.credentials import CredentialsError

PUBLISHER_ERRORS = [
    SpecError,
    InvalidReference,
    MemberError,
    IndexBuildError,
    CredentialsError,
    RegistryClientError,
]


@pytest.mark.parametrize("error", PUBLISHER_ERRORS)
def test_the_publishers_errors_are_image_errors(error: type[Exception]):
    assert issubclass(error, ImageError)


@pytest.mark.parametrize("error", [LoginError, LoginRefused, AuthFileError])
def test_the_host_tools_errors_are_host_errors(error: type[Exception]):
    assert issubclass(error, HostError)
