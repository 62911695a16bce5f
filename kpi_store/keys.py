"""The store's secret key: it encrypts data-source credentials and signs the audit chain.

The key comes from ``KPI_SECRET_KEY``, or is generated once into a file beside the store
(owner-only permissions), as Superset's SECRET_KEY and Metabase's encryption key are.
Purpose-specific keys are derived from it, so the credential key never signs anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import pathlib
import secrets
import time
import weakref

import sqlalchemy as sa
from cryptography.fernet import Fernet, InvalidToken

from .config import Settings
from .errors import DataSourceError, KPIStoreError

KEY_FILE_NAME = "kpi_secret.key"
CHECKPOINT_FILE_NAME = "kpi_audit_checkpoints.jsonl"
ENCRYPTED_PREFIX = "fernet:"


class SecretKey:
    """Derives the encryption and signing keys; never shows the key itself."""

    def __init__(self, secret: str):
        if len(secret) < 16:
            raise KPIStoreError("KPI_SECRET_KEY must be at least 16 characters long.")
        root = secret.encode()
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(root, b"kpi-desk credentials")))
        self._signing = _derive(root, b"kpi-desk audit chain")

    def __repr__(self) -> str:
        return "SecretKey(***)"

    def encrypt(self, text: str) -> str:
        return ENCRYPTED_PREFIX + self._fernet.encrypt(text.encode()).decode()

    def decrypt(self, stored: str) -> str:
        if not is_encrypted(stored):
            return stored
        try:
            return self._fernet.decrypt(stored.removeprefix(ENCRYPTED_PREFIX).encode()).decode()
        except InvalidToken:
            raise DataSourceError(
                "A data source's credentials cannot be decrypted with this secret key "
                "(was KPI_SECRET_KEY or its key file changed?)."
            ) from None

    def sign(self, payload: bytes) -> str:
        """HMAC-SHA256 of ``payload`` as hex: only a holder of the key can compute it."""
        return hmac.new(self._signing, payload, hashlib.sha256).hexdigest()

    def verify(self, payload: bytes, signature: str) -> bool:
        return hmac.compare_digest(self.sign(payload), signature or "")


def is_encrypted(stored: str) -> bool:
    return stored.startswith(ENCRYPTED_PREFIX)


def _derive(root: bytes, purpose: bytes) -> bytes:
    return hmac.new(root, purpose, hashlib.sha256).digest()


def default_beside_store(settings: Settings, name: str) -> pathlib.Path:
    """A file beside a SQLite store, else under ./data (a PostgreSQL store has no folder)."""
    url = sa.engine.make_url(settings.url)
    if url.get_backend_name() == "sqlite" and url.database:
        return pathlib.Path(url.database).expanduser().resolve().parent / name
    return pathlib.Path("data", name).resolve()


def database_tag(settings: Settings) -> str:
    """A short name for the store's server and database (files of several stores side by side)."""
    url = sa.engine.make_url(settings.url)
    where = f"{url.host or 'local'}:{url.port or ''}/{url.database or ''}"
    return hashlib.sha256(where.encode()).hexdigest()[:12]


def key_file(settings: Settings) -> pathlib.Path:
    if settings.secret_key_file:
        return pathlib.Path(settings.secret_key_file).expanduser().resolve()
    return default_beside_store(settings, KEY_FILE_NAME)


def checkpoint_file(settings: Settings) -> pathlib.Path:
    """``KPI_AUDIT_CHECKPOINT_FILE``, else beside a SQLite store, else beside the key file
    (named after the server and database, so several stores can share a folder)."""
    if settings.audit_checkpoint_file:
        return pathlib.Path(settings.audit_checkpoint_file).expanduser().resolve()
    if sa.engine.make_url(settings.url).get_backend_name() == "sqlite":
        return default_beside_store(settings, CHECKPOINT_FILE_NAME)
    stem = CHECKPOINT_FILE_NAME.removesuffix(".jsonl")
    return key_file(settings).parent / f"{stem}-{database_tag(settings)}.jsonl"


def load(settings: Settings) -> SecretKey:
    """``KPI_SECRET_KEY``, else the key file, created with a new random key if missing."""
    if settings.secret_key:
        return SecretKey(settings.secret_key)
    path = key_file(settings)
    try:
        return SecretKey(path.read_text(encoding="ascii").strip())
    except FileNotFoundError:
        return SecretKey(_create_key_file(path))  # the first start: make one
    except (OSError, UnicodeDecodeError) as error:
        raise KPIStoreError(f"Cannot read the secret key file {path}: {error}") from None


def _create_key_file(path: pathlib.Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    try:
        # O_EXCL: two processes starting at once never write two different keys.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _written_by_another_process(path)
    with os.fdopen(descriptor, "w", encoding="ascii") as handle:
        handle.write(secret + "\n")
    return secret


def _written_by_another_process(path: pathlib.Path) -> str:
    for _ in range(50):  # it may still be writing the line
        secret = path.read_text(encoding="ascii").strip()
        if secret:
            return secret
        time.sleep(0.02)
    raise KPIStoreError(f"The secret key file {path} is empty.")


_ENGINE_KEYS: weakref.WeakKeyDictionary[sa.engine.Engine, SecretKey] = weakref.WeakKeyDictionary()


def attach(engine: sa.engine.Engine, key: SecretKey) -> None:
    """Make ``key`` the key of everything written through ``engine`` (the store's engine)."""
    _ENGINE_KEYS[engine] = key


def of(bind: sa.engine.Connection | sa.engine.Engine) -> SecretKey:
    engine = bind.engine if isinstance(bind, sa.engine.Connection) else bind
    try:
        return _ENGINE_KEYS[engine]
    except KeyError:
        raise KPIStoreError(
            "This database connection does not belong to an open KPIStore."
        ) from None
