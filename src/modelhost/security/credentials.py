"""The keys the server accepts: an AWS shared-credentials INI file.

    [deployer]
    aws_access_key_id = AKIAEXAMPLEADMIN
    aws_secret_access_key = ...
    permissions = *

    [app]
    aws_access_key_id = AKIAEXAMPLEAPP
    aws_secret_access_key = ...
    aws_session_token = ...            (optional: requests must then carry it as X-Amz-Security-Token)
    permissions = sagemaker:InvokeEndpoint=arn:aws:sagemaker:*:*:endpoint/prod-*
    role = modelhost                   (optional: STS then answers an assumed-role session of that role,
                                        so sagemaker.get_execution_role() works with this key)

Each section is one user, ``arn:aws:iam::<account>:user/<section name>``; ``permissions`` is the
comma list of ``permissions.Policy`` (default ``*``). Other options (``region``, ...) are ignored, so
the same file can be a client's ``~/.aws/credentials``. Any problem is a ``CredentialsError`` naming
the file, the section and what is wrong, raised at start-up.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from botocore.credentials import Credentials

from modelhost.security.permissions import Policy

ACCESS_KEY = "aws_access_key_id"
SECRET_KEY = "aws_secret_access_key"
TOKEN_OPTIONS = ("aws_session_token", "aws_security_token")


class CredentialsError(Exception):
    """The credentials file cannot be used (the message says why)."""


@dataclass(frozen=True)
class Key:
    name: str  # the section name: the IAM user name
    access_key: str
    secret_key: str
    account: str
    token: str | None = None
    policy: Policy = field(default_factory=lambda: Policy.parse(None), compare=False)
    role: str | None = None  # ``role = NAME``: STS answers the key as a session of that role (issue 14)

    @property
    def arn(self) -> str:
        return f"arn:aws:iam::{self.account}:user/{self.name}"

    @property
    def identity_arn(self) -> str:
        """What GetCallerIdentity answers: the user, or ``assumed-role/<role>/<user>`` with a role."""
        if self.role:
            return f"arn:aws:sts::{self.account}:assumed-role/{self.role}/{self.name}"
        return self.arn

    @cached_property
    def credentials(self) -> Credentials:
        """botocore's credentials object (what its signers take)."""
        return Credentials(self.access_key, self.secret_key, self.token)


class Keyring:
    """The accepted keys by access key id."""

    def __init__(self, keys: list[Key], source: str = "") -> None:
        self.source = source
        self._by_access_key = {k.access_key: k for k in keys}

    def get(self, access_key: str) -> Key | None:
        return self._by_access_key.get(access_key)

    def __len__(self) -> int:
        return len(self._by_access_key)

    def names(self) -> list[str]:
        return [k.name for k in self._by_access_key.values()]


def parse_credentials(text: str, account: str, source: str = "<credentials>") -> Keyring:
    parser = configparser.ConfigParser(interpolation=None, default_section="\0no-defaults")
    try:
        parser.read_string(text, source=source)
    except configparser.Error as exc:
        raise CredentialsError(f"{source}: not an INI credentials file: {exc}".replace("\n", " ")) from None
    keys: list[Key] = []
    seen: dict[str, str] = {}
    for name in parser.sections():
        section = parser[name]
        where = f"{source}: section [{name}]"
        if not name.strip() or any(c.isspace() or c in "/:*?" for c in name):
            raise CredentialsError(f"{where}: the section name is the user name; use letters, digits and +=,.@_-")
        access_key = section.get(ACCESS_KEY, "").strip()
        secret_key = section.get(SECRET_KEY, "").strip()
        if not access_key or not secret_key:
            missing = " and ".join(o for o, v in ((ACCESS_KEY, access_key), (SECRET_KEY, secret_key)) if not v)
            raise CredentialsError(f"{where}: {missing} missing or empty")
        if any(c.isspace() or c in "/," for c in access_key):
            raise CredentialsError(f"{where}: {ACCESS_KEY} must not contain spaces, '/' or ','")
        if access_key in seen:
            raise CredentialsError(
                f"{where}: {ACCESS_KEY} {access_key} is also the key of section [{seen[access_key]}]"
            )
        seen[access_key] = name
        token = next((section[o].strip() for o in TOKEN_OPTIONS if section.get(o, "").strip()), None)
        try:
            policy = Policy.parse(section.get("permissions"))
        except ValueError as exc:
            raise CredentialsError(f"{where}: permissions: {exc}") from None
        role = section.get("role", "").strip() or None
        if role is not None and any(c.isspace() or c in "/:*?" for c in role):
            raise CredentialsError(f"{where}: role must be an IAM role name (letters, digits and +=,.@_-)")
        keys.append(Key(name, access_key, secret_key, account, token, policy, role))
    if not keys:
        raise CredentialsError(f"{source}: no [section] with {ACCESS_KEY} and {SECRET_KEY}")
    return Keyring(keys, source)


def load_credentials(path: str | Path, account: str) -> Keyring:
    """The keys in the file at ``path`` (CredentialsError if it cannot be read or is not valid)."""
    path = Path(path).expanduser()
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(f"{path}: credentials file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(f"{path}: cannot read the credentials file: {exc}") from None
    return parse_credentials(text, account, str(path))
