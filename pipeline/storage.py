"""Object storage for the corpus and the artifacts: s3:// and gs:// beside local paths.

Every read and write already goes through TFX's and Beam's filesystem layers
(tfx.dsl.io.fileio / tf.io.gfile, Beam FileSystems), so a bucket needs no
code path of its own. This module does the two things those layers do not:

* TF 2.16 has no built-in s3:// filesystem; tensorflow-io registers it, in
  each process that touches one (``register_filesystems``).
* A misspelt bucket, a closed endpoint or missing credentials must fail in
  seconds with one line, before a pipeline starts (``check_location``): the
  SDKs underneath retry such errors for minutes by default.

gs:// is TensorFlow's own GCS filesystem, which talks to Google Cloud Storage
only (its endpoint is compiled in: no emulator can stand in for it), so it is
checked here only as far as its URI goes; see README "Object storage".
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Iterable, Optional

S3, GCS = "s3", "gs"
SCHEMES = (S3, GCS)

# Defaults that bound the S3 SDKs' retries and waits (a user's own settings
# win): aws-sdk-cpp's legacy retry mode retries a refused connection for
# minutes, and its connect and request timeouts are 5 minutes each.
S3_ENVIRONMENT_DEFAULTS = {
    "AWS_RETRY_MODE": "standard",
    "AWS_MAX_ATTEMPTS": "3",
    "S3_CONNECT_TIMEOUT_MSEC": "10000",
    "S3_REQUEST_TIMEOUT_MSEC": "600000",
}
# botocore and tensorflow-io each read the endpoint from their own variable;
# a user sets botocore's (the documented AWS one) and TF's follows it.
S3_ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
TF_S3_ENDPOINT_VARIABLE = "S3_ENDPOINT"
CHECK_TIMEOUT_SECONDS = 5
# The schemes this run registered, exported to its Beam worker processes
# (pipeline/beam_worker.py registers them there).
FILESYSTEMS_VARIABLE = "MOONSHINE_TFX_FILESYSTEMS"


class StorageError(ValueError):
    """A URI the pipeline cannot use, said in one line."""


def scheme(uri: str) -> str:
    """"s3", "gs", another URI scheme, or "" for a local path."""
    head, sep, _ = uri.partition("://")
    return head.lower() if sep else ""


def split(uri: str):
    """(bucket, key) of an object-store URI."""
    bucket, _, key = uri.partition("://")[2].partition("/")
    return bucket, key


def configure_s3_environment() -> None:
    """Fills in the S3 settings a user did not set (see the defaults above)."""
    for name, value in S3_ENVIRONMENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    if TF_S3_ENDPOINT_VARIABLE not in os.environ:
        for name in S3_ENDPOINT_VARIABLES:
            if os.environ.get(name):
                os.environ[TF_S3_ENDPOINT_VARIABLE] = os.environ[name]
                break


def register_filesystems(*uris: Optional[str]) -> None:
    """Makes every scheme among ``uris`` usable by tf.io.gfile here."""
    if any(uri and scheme(uri) == S3 for uri in uris):
        configure_s3_environment()
        try:
            import tensorflow_io  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
        except ImportError:
            raise StorageError(
                f"{next(u for u in uris if u and scheme(u) == S3)}: s3:// "
                "needs tensorflow-io (its pinned version is in "
                "requirements.lock)") from None
        os.environ[FILESYSTEMS_VARIABLE] = S3


def _s3_endpoint() -> str:
    for name in S3_ENDPOINT_VARIABLES + (TF_S3_ENDPOINT_VARIABLE,):
        if os.environ.get(name):
            return os.environ[name]
    return "AWS's default endpoint"


def _s3_client():
    import boto3  # pylint: disable=import-outside-toplevel
    from botocore.config import Config  # pylint: disable=import-outside-toplevel
    return boto3.session.Session().client("s3", config=Config(
        connect_timeout=CHECK_TIMEOUT_SECONDS,
        read_timeout=CHECK_TIMEOUT_SECONDS,
        retries={"mode": "standard", "max_attempts": 2}))


def _check_s3(uri: str) -> None:
    from botocore import exceptions  # pylint: disable=import-outside-toplevel
    bucket, _ = split(uri)
    if not bucket:
        raise StorageError(f"{uri}: no bucket in the URI")
    try:
        _s3_client().head_bucket(Bucket=bucket)
    except exceptions.NoCredentialsError:
        raise StorageError(
            f"{uri}: no credentials for the object store (set "
            "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or "
            "run where a role provides them)") from None
    except (exceptions.EndpointConnectionError,
            exceptions.ConnectTimeoutError,
            exceptions.ReadTimeoutError) as e:
        raise StorageError(
            f"{uri}: object store at {_s3_endpoint()} is not reachable "
            f"({type(e).__name__})") from None
    except exceptions.ClientError as e:
        code = str(e.response.get("Error", {}).get("Code", ""))
        if code in ("404", "NoSuchBucket", "NotFound"):
            raise StorageError(
                f"{uri}: bucket {bucket!r} does not exist at "
                f"{_s3_endpoint()}") from None
        if code in ("403", "AccessDenied", "Forbidden"):
            raise StorageError(
                f"{uri}: access to bucket {bucket!r} denied (check the "
                "credentials and the bucket policy)") from None
        raise StorageError(f"{uri}: the object store answered {code}: "
                           f"{' '.join(str(e).split())}") from None


def check_location(uri: Optional[str]) -> None:
    """Raises StorageError (one line naming ``uri``) when the bucket behind
    ``uri`` cannot be reached, does not exist or refuses us; local paths and
    other schemes pass through (their own layer reports them)."""
    if not uri:
        return
    kind = scheme(uri)
    if kind == S3:
        configure_s3_environment()
        _check_s3(uri)
        register_filesystems(uri)
    elif kind == GCS and not split(uri)[0]:
        raise StorageError(f"{uri}: no bucket in the URI")


def check_locations(uris: Iterable[Optional[str]]) -> None:
    for uri in uris:
        check_location(uri)


def exit_process(code: int) -> None:
    """Ends the process with ``code``; after s3:// use, without C++ exit
    handlers.

    tensorflow-io 0.37.1 aborts the interpreter at a normal exit once its S3
    filesystem ran ("pure virtual method called", status 134: aws-sdk-cpp's
    metadata client outlives curl), which would turn every successful run
    into a failure. Returns normally when tensorflow-io was not imported.
    """
    if "tensorflow_io" not in sys.modules:
        return
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)  # pylint: disable=protected-access


def exit_quietly_at_exit() -> None:
    """For a process whose exit status nobody reads as a result (a Beam
    worker reports its work over gRPC): once tensorflow-io is loaded, end
    without the C++ exit handlers that would abort it (see exit_process)."""
    import atexit  # pylint: disable=import-outside-toplevel
    atexit.register(exit_process, 0)
