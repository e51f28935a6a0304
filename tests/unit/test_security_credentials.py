"""The credentials file parser (security/credentials.py): sections, tokens, permissions, errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelhost.security import CredentialsError, load_credentials
from modelhost.security.credentials import parse_credentials

GOOD = """
[admin]
aws_access_key_id = AKIDADMIN
aws_secret_access_key = s3cr3t=with%chars
region = eu-west-1

[app]
aws_access_key_id = AKIDAPP
aws_secret_access_key = app
aws_session_token = tok
permissions = sagemaker:InvokeEndpoint=arn:aws:sagemaker:*:*:endpoint/prod-*, sagemaker:Describe*
"""


def test_sections_become_users() -> None:
    keys = parse_credentials(GOOD, "111122223333")
    admin, app = keys.get("AKIDADMIN"), keys.get("AKIDAPP")
    assert admin is not None and app is not None and keys.get("nope") is None
    assert admin.arn == "arn:aws:iam::111122223333:user/admin"
    assert admin.secret_key == "s3cr3t=with%chars" and admin.token is None  # no interpolation
    assert admin.policy.allows("s3:PutObject", "arn:aws:s3:::b/k")  # no line: everything
    assert app.token == "tok"
    assert app.policy.allows("sagemaker:InvokeEndpoint", "arn:aws:sagemaker:us-east-1:1:endpoint/prod-a")
    assert not app.policy.allows("sagemaker:InvokeEndpoint", "arn:aws:sagemaker:us-east-1:1:endpoint/dev-a")
    assert app.policy.allows("sagemaker:DescribeEndpoint", "arn:aws:sagemaker:us-east-1:1:endpoint/dev-a")
    assert sorted(keys.names()) == ["admin", "app"] and len(keys) == 2
    assert admin.credentials.access_key == "AKIDADMIN"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no [section]"),
        ("aws_access_key_id = x\n", "not an INI credentials file"),
        ("[a]\naws_access_key_id = AK\n", "section [a]: aws_secret_access_key missing or empty"),
        ("[a]\naws_secret_access_key = s\n", "section [a]: aws_access_key_id missing or empty"),
        (
            "[a]\naws_access_key_id=AK\naws_secret_access_key=s\n[b]\naws_access_key_id=AK\naws_secret_access_key=t\n",
            "section [b]: aws_access_key_id AK is also the key of section [a]",
        ),
        ("[a]\naws_access_key_id=AK\naws_secret_access_key=s\npermissions = sagemaker\n", "permissions: bad action"),
        (
            "[a]\naws_access_key_id=AK\naws_secret_access_key=s\npermissions = s3:GetObject=bucket/*\n",
            "permissions: bad resource",
        ),
        ("[a]\naws_access_key_id=AK\naws_secret_access_key=s\npermissions = s3:GetObject,,\n", "empty entry"),
        ("[a b]\naws_access_key_id=AK\naws_secret_access_key=s\n", "section name is the user name"),
        ("[a]\n[a]\n", "not an INI credentials file"),
    ],
)
def test_bad_files_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(CredentialsError) as info:
        parse_credentials(text, "1", "creds.ini")
    assert message in str(info.value) and str(info.value).startswith("creds.ini")


def test_load_from_disk(tmp_path: Path) -> None:
    path = tmp_path / "credentials"
    with pytest.raises(CredentialsError, match="credentials file not found"):
        load_credentials(path, "1")
    path.write_text(GOOD)
    assert len(load_credentials(path, "1")) == 2
