"""AWS clients for every part of ftm that talks to AWS, and what their errors mean to a user.

One place builds boto3 clients, so that the region (aws.region), the SDK's retries and the
endpoint are the same everywhere. Retries are botocore's "standard" mode: exponential backoff
with jitter on throttling (TooManyRequestsException, 429) and 5xx, which is what AWS Batch's
DescribeJobs and SubmitJob need at fan-out. The endpoint is the SDK's own AWS_ENDPOINT_URL
(tests point it at moto's server on 127.0.0.1); production leaves it unset.
"""

from __future__ import annotations

from typing import Any

from ftm.errors import FtmError, SettingsError
from ftm.settings import AwsSettings

# Attempts per call, the first included; standard mode waits up to 20 s between them.
MAX_ATTEMPTS = 8


def client(service: str, settings: AwsSettings) -> Any:
    """A boto3 client for `service` in the configured region, with throttling retries."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS})
    try:
        return boto3.client(service, region_name=settings.region, config=config)
    except Exception as error:  # NoRegionError and kin: a settings problem, said plainly
        raise explain(error, f"creating an AWS {service} client") from None


def error_code(error: BaseException) -> str | None:
    """The AWS error code of a ClientError ('ThrottlingException', 'ValidationError'), else None."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        return response.get("Error", {}).get("Code")
    return None


def explain(error: BaseException, doing: str) -> FtmError:
    """An AWS SDK error as an ftm error that says what to do: credentials and region problems are
    settings errors (exit 4); everything else is an error naming the call and AWS's message."""
    from botocore.exceptions import (
        ClientError,
        NoCredentialsError,
        NoRegionError,
        PartialCredentialsError,
        TokenRetrievalError,
    )

    if isinstance(error, NoRegionError):
        return SettingsError(
            f"{doing}: no AWS region is set: set aws.region in ftm.toml, FTM_AWS__REGION, or AWS_REGION"
        )
    if isinstance(error, (NoCredentialsError, PartialCredentialsError, TokenRetrievalError)):
        return SettingsError(
            f"{doing}: no usable AWS credentials ({error}): run `aws configure` or `aws sso login`, "
            "or set AWS_PROFILE; then `ftm doctor` checks them"
        )
    if isinstance(error, ClientError):
        code = error_code(error) or "error"
        message = error.response.get("Error", {}).get("Message", str(error))
        if code in (
            "ExpiredToken",
            "ExpiredTokenException",
            "InvalidClientTokenId",
            "UnrecognizedClientException",
            "SignatureDoesNotMatch",
            "AccessDenied",
            "AccessDeniedException",
            "UnauthorizedOperation",
        ):
            return SettingsError(
                f"{doing}: AWS refused the credentials ({code}: {message}); renew them or use a role "
                "allowed to do this, then `ftm doctor` checks them"
            )
        return FtmError(f"{doing}: AWS said {code}: {message}")
    return FtmError(f"{doing}: {type(error).__name__}: {error}")
