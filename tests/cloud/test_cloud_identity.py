"""Workload identity instead of static keys: the object stores take the pod's identity from the
environment the cloud's Kubernetes overlays give it (k3s/overlays/cloud/{aws,azure})."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud.config import load_config
from cloud.storage import open_store
from tests.cloud.cloud_services import moto_s3


@pytest.fixture
def no_static_keys(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No keys from the environment or the user's files, and no instance metadata to fall back on."""
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AZURE_CLIENT_SECRET",
        "AZURE_CLIENT_CERTIFICATE_PATH",
        "AZURE_USERNAME",
    ):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    yield


def test_azure_with_an_account_url_and_no_key_uses_workload_identity(
    no_static_keys: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    from azure.identity import DefaultAzureCredential, WorkloadIdentityCredential

    # what the Azure Workload Identity webhook injects into the pod
    token_file = tmp_path / "azure-identity-token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n")
    monkeypatch.setenv("AZURE_CLIENT_ID", "00000000-0000-0000-0000-000000000001")
    monkeypatch.setenv("AZURE_TENANT_ID", "00000000-0000-0000-0000-000000000002")
    monkeypatch.setenv("AZURE_FEDERATED_TOKEN_FILE", str(token_file))
    # the same variables k3s/overlays/cloud/azure sets; no key, no connection string
    config = load_config(
        env={
            "FIELDSTATION_CLOUD_STORAGE_BACKEND": "azure",
            "FIELDSTATION_CLOUD_STORAGE_ACCOUNT_URL": "https://wildcamcaptures.blob.core.windows.net",
            "FIELDSTATION_CLOUD_STORAGE_CONTAINER": "captures",
        },
        data_dir=str(tmp_path),
    )
    store = open_store(config)  # builds the client only: the token is fetched on first use
    try:
        credential = store.service.credential  # type: ignore[attr-defined]
        assert isinstance(credential, DefaultAzureCredential)
        assert any(isinstance(c, WorkloadIdentityCredential) for c in credential.credentials)
        assert store.describe() == (
            "azure https://wildcamcaptures.blob.core.windows.net/ container captures"
        )
    finally:
        store.close()


def test_azure_with_an_account_key_keeps_the_key(no_static_keys: None, tmp_path: Path):
    config = load_config(
        env={
            "FIELDSTATION_CLOUD_STORAGE_BACKEND": "azure",
            "FIELDSTATION_CLOUD_STORAGE_ACCOUNT_URL": "https://wildcamcaptures.blob.core.windows.net",
            "FIELDSTATION_CLOUD_STORAGE_ACCOUNT_KEY": "a2V5",
            "FIELDSTATION_CLOUD_STORAGE_CONTAINER": "captures",
        },
        data_dir=str(tmp_path),
    )
    store = open_store(config)
    try:
        credential = store.service.credential  # type: ignore[attr-defined]
        assert (credential.account_name, credential.account_key) == ("wildcamcaptures", "a2V5")
    finally:
        store.close()


def test_s3_with_no_keys_takes_the_web_identity_role(
    no_static_keys: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    # IRSA: EKS injects a role and a projected token; boto3 trades it at STS (moto here)
    token_file = tmp_path / "eks-token"
    token_file.write_text("eyJhbGciOiJSUzI1NiJ9.e30.c2ln\n")
    with moto_s3() as moto:
        monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/fieldstation-cloud")
        monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(token_file))
        monkeypatch.setenv("AWS_ENDPOINT_URL_STS", moto)
        config = load_config(
            env={
                "FIELDSTATION_CLOUD_STORAGE_BACKEND": "s3",
                "FIELDSTATION_CLOUD_STORAGE_BUCKET": "captures",
                "FIELDSTATION_CLOUD_STORAGE_ENDPOINT_URL": moto,
                "FIELDSTATION_CLOUD_STORAGE_CREATE_BUCKET": "true",
            },
            data_dir=str(tmp_path),
        )
        store = open_store(config)
        try:
            # with no key anywhere and no instance metadata, only the web identity can sign these
            store.put("k/one.jpg", b"jpeg bytes", "image/jpeg")
            assert store.get("k/one.jpg") == b"jpeg bytes"
        finally:
            store.close()
