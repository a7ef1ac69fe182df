"""A real S3 server on localhost for the object_store tests: moto's server
mode (`python -m moto.server`), started as a child process on a free port.

`S3Server.env()` is what a process needs so that every client (tensorflow-io's
aws-sdk-cpp for tf.io.gfile, boto3 for Beam's S3 filesystem and our checks)
talks to this server and nowhere else: dummy keys, the endpoint, no profile,
no role, no instance-metadata probing, bounded retries. `None` = unset.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Dict, Iterator, List, Mapping, Optional

LOCALHOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        return s.getsockname()[1]


def closed_port() -> int:
    """A localhost port nothing listens on (bound, then released)."""
    return free_port()


def s3_env(endpoint: str, access_key: Optional[str] = "testing"
           ) -> Dict[str, Optional[str]]:
    """Client settings for an S3 endpoint on localhost; access_key None
    leaves the process without credentials."""
    keys = {"AWS_ACCESS_KEY_ID": access_key,
            "AWS_SECRET_ACCESS_KEY": access_key}
    return {
        **keys,
        "AWS_SESSION_TOKEN": None, "AWS_SECURITY_TOKEN": None,
        "AWS_PROFILE": None, "AWS_DEFAULT_PROFILE": None,
        "AWS_ROLE_ARN": None, "AWS_WEB_IDENTITY_TOKEN_FILE": None,
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": None,
        "AWS_CONTAINER_CREDENTIALS_FULL_URI": None,
        # Nothing from ~/.aws.
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_CONFIG_FILE": os.devnull,
        # Without it both SDKs ask 169.254.169.254 for credentials.
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
        # botocore's endpoint; pipeline.storage derives tensorflow-io's
        # S3_ENDPOINT from it, as it does for a user.
        "AWS_ENDPOINT_URL_S3": endpoint, "AWS_ENDPOINT_URL": endpoint,
        "S3_ENDPOINT": None,
        "S3_VERIFY_SSL": "0",
        "AWS_RETRY_MODE": "standard", "AWS_MAX_ATTEMPTS": "2",
        "S3_CONNECT_TIMEOUT_MSEC": "5000",
        "NO_PROXY": f"{LOCALHOST},localhost", "no_proxy": f"{LOCALHOST},localhost",
        # Beam imports google-auth: never probe a GCE metadata server.
        "NO_GCE_CHECK": "true",
        "GCE_METADATA_HOST": f"{LOCALHOST}:9",
        "GCE_METADATA_IP": f"{LOCALHOST}:9",
    }


def merged_env(env: Mapping[str, Optional[str]]) -> Dict[str, str]:
    """os.environ with `env` applied, for a child process."""
    out = dict(os.environ)
    for key, value in env.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def apply_env(env: Mapping[str, Optional[str]]) -> Dict[str, Optional[str]]:
    """Sets (value) or unsets (None) each variable; returns the old values."""
    previous = {k: os.environ.get(k) for k in env}
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    return previous


@contextlib.contextmanager
def applied_env(env: Mapping[str, Optional[str]]) -> Iterator[None]:
    previous = apply_env(env)
    try:
        yield
    finally:
        apply_env(previous)


class S3Server:
    """moto's S3 server on 127.0.0.1; its data lives in memory."""

    def __init__(self, bucket: str = "moonshine-test"):
        self.bucket = bucket
        self.port = free_port()
        self._process: Optional[subprocess.Popen] = None
        self._log = None
        self._client = None

    @property
    def endpoint(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    def env(self) -> Dict[str, Optional[str]]:
        return s3_env(self.endpoint)

    def uri(self, *parts: str) -> str:
        path = "/".join(p.strip("/") for p in parts if p.strip("/"))
        return f"s3://{self.bucket}" + (f"/{path}" if path else "")

    def start(self) -> "S3Server":
        self._log = tempfile.NamedTemporaryFile(prefix="moto-", suffix=".log")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOCALHOST,
             "-p", str(self.port)], stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT,
            env=merged_env({"NO_PROXY": "*", "no_proxy": "*"}),
            start_new_session=True)
        deadline = time.monotonic() + 60
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"moto server exited: {self.log_tail()}")
            try:
                with opener.open(self.endpoint + "/moto-api/", timeout=1):
                    break
            except urllib.error.HTTPError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto server not ready: {self.log_tail()}") from None
                time.sleep(0.1)
        self.client.create_bucket(Bucket=self.bucket)
        return self

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
        if self._log is not None:
            self._log.close()

    def log_tail(self, chars: int = 1500) -> str:
        self._log.flush()
        with open(self._log.name, "rb") as f:
            return f.read()[-chars:].decode("utf-8", "replace")

    def __enter__(self) -> "S3Server":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def client(self):
        """boto3, pointed at this server explicitly (endpoint and keys)."""
        if self._client is None:
            import boto3
            from botocore.config import Config
            self._client = boto3.session.Session().client(
                "s3", endpoint_url=self.endpoint, region_name="us-east-1",
                aws_access_key_id="testing", aws_secret_access_key="testing",
                config=Config(retries={"max_attempts": 2, "mode": "standard"}))
        return self._client

    def upload_tree(self, local_dir: str, uri: str,
                    keep=lambda rel: True) -> List[str]:
        """Every file under local_dir (whose relative path `keep` accepts)
        to uri/<relative path>; the URIs written."""
        bucket, _, prefix = uri[len("s3://"):].partition("/")
        written = []
        for root, dirs, files in os.walk(local_dir):
            dirs.sort()
            for name in sorted(files):
                rel = os.path.relpath(os.path.join(root, name), local_dir)
                if not keep(rel):
                    continue
                key = f"{prefix.rstrip('/')}/{rel}".lstrip("/")
                self.client.upload_file(os.path.join(root, name), bucket, key)
                written.append(f"s3://{bucket}/{key}")
        return written

    def list_uris(self, prefix_uri: str) -> List[str]:
        """The server's own listing of every object under prefix_uri."""
        bucket, _, prefix = prefix_uri[len("s3://"):].partition("/")
        out = []
        for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=prefix):
            out.extend(f"s3://{bucket}/{o['Key']}"
                       for o in page.get("Contents", []))
        return sorted(out)
