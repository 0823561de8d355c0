"""Where the Kubernetes API server is and who we are there, inside a pod (or pointed at one from outside).

Inside a pod (https://kubernetes.io/docs/tasks/run-application/access-api-from-pod/): the API server's address
is in ``KUBERNETES_SERVICE_HOST``/``KUBERNETES_SERVICE_PORT``; the service account's ``token``, ``ca.crt`` and
``namespace`` are mounted under /var/run/secrets/kubernetes.io/serviceaccount (unless
``automountServiceAccountToken`` is false); the pod's own name and uid come from the downward API (``POD_NAME``,
``POD_UID``). Projected service-account tokens expire (an hour by default) and the kubelet rewrites the file
before they do, so :class:`KubeConfig` keeps the token file's path, which :class:`BearerToken` re-reads.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

log = logging.getLogger("memmon.kubernetes")

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class KubeConfig:
    """Where the API server is and who memmon is there: its own pod."""

    host: str
    """``https://<KUBERNETES_SERVICE_HOST>:<KUBERNETES_SERVICE_PORT>`` in a cluster; may end in a path prefix."""
    token: str = field(repr=False)
    """The bearer token as first read; the client re-reads ``token_file`` (when set) as the kubelet rotates it."""
    ca_file: str | None
    """The CA bundle that signed the API server's certificate; None = the system CAs (or plain http)."""
    namespace: str
    pod: str
    token_file: str | None = None
    """Where ``token`` came from (re-read every minute and on a 401); None = ``token`` is fixed."""
    pod_uid: str | None = None
    """``POD_UID`` (downward API ``metadata.uid``) when exposed; else learnt from the first annotation patch."""

    @classmethod
    def in_cluster(
        cls,
        environ: Mapping[str, str] = os.environ,
        sa_dir: Path = SERVICE_ACCOUNT_DIR,
        *,
        own_pod: bool = True,
    ) -> KubeConfig | None:
        """The pod's own configuration, or None outside a cluster (:func:`why_not_in_cluster` says why).

        ``MEMMON_KUBE_API`` (an ``http(s)://host:port`` URL) replaces the service-host variables and
        ``MEMMON_KUBE_TOKEN_FILE``/``MEMMON_KUBE_CA_FILE`` the service-account files, for tests and for running
        outside the cluster. ``POD_NAME`` is required, ``POD_NAMESPACE`` falls back to the service-account
        ``namespace`` file, ``POD_UID`` is optional; with ``own_pod=False`` (node mode: the calls are about other
        pods) neither is required.
        """
        found = _resolve(environ, sa_dir, own_pod=own_pod)
        return found if isinstance(found, KubeConfig) else None


def why_not_in_cluster(
    environ: Mapping[str, str] = os.environ, sa_dir: Path = SERVICE_ACCOUNT_DIR, *, own_pod: bool = True
) -> str:
    """Why :meth:`KubeConfig.in_cluster` gives None for these arguments; ``""`` when it gives a config."""
    found = _resolve(environ, sa_dir, own_pod=own_pod)
    return "" if isinstance(found, KubeConfig) else found


def _env(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip()


def read_text(path: Path) -> str | None:
    """The stripped text of ``path``; None when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _resolve(environ: Mapping[str, str], sa_dir: Path, *, own_pod: bool = True) -> KubeConfig | str:
    override = _env(environ, "MEMMON_KUBE_API")
    if override:
        parts = urlsplit(override)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"MEMMON_KUBE_API={override!r} is not an http(s)://host[:port] URL"
        host = override.rstrip("/")
    else:
        service_host = _env(environ, "KUBERNETES_SERVICE_HOST")
        if not service_host:
            return (
                "not in a Kubernetes pod: KUBERNETES_SERVICE_HOST is not set "
                "(set MEMMON_KUBE_API and MEMMON_KUBE_TOKEN_FILE to reach an API server from outside)"
            )
        port = (
            _env(environ, "KUBERNETES_SERVICE_PORT_HTTPS")
            or _env(environ, "KUBERNETES_SERVICE_PORT")
            or "443"
        )
        if ":" in service_host and not service_host.startswith("["):  # an IPv6 address
            service_host = f"[{service_host}]"
        host = f"https://{service_host}:{port}"

    token_file = Path(_env(environ, "MEMMON_KUBE_TOKEN_FILE") or sa_dir / "token")
    token = read_text(token_file)
    if token is None:
        return f"no service-account token: cannot read {token_file} (is automountServiceAccountToken false?)"
    if not token:
        return f"the service-account token file {token_file} is empty"

    ca_setting = _env(environ, "MEMMON_KUBE_CA_FILE")
    if ca_setting:
        if not Path(ca_setting).is_file():
            return f"MEMMON_KUBE_CA_FILE={ca_setting} is not a file"
        ca_file: str | None = ca_setting
    elif not override and (sa_dir / "ca.crt").is_file():
        ca_file = str(sa_dir / "ca.crt")
    else:
        ca_file = None

    namespace = _env(environ, "POD_NAMESPACE") or read_text(sa_dir / "namespace") or ""
    if not namespace and own_pod:
        return f"the pod's namespace is unknown: POD_NAMESPACE is not set and {sa_dir / 'namespace'} is unreadable"
    pod = _env(environ, "POD_NAME")
    if not pod and own_pod:
        return "POD_NAME is not set: expose it with the downward API (env valueFrom fieldRef metadata.name)"
    return KubeConfig(
        host=host,
        token=token,
        ca_file=ca_file,
        namespace=namespace,
        pod=pod,
        token_file=str(token_file),
        pod_uid=_env(environ, "POD_UID") or None,
    )


TOKEN_REFRESH_SECONDS = 60.0
"""How often the token file is re-read (client-go's cached file token source does it every minute)."""


class BearerToken:
    """A :class:`KubeConfig`'s service-account token as the kubelet rotates it: ``current()`` re-reads the token
    file every ``refresh`` seconds, ``reload()`` at once (after a 401). An unreadable or empty file keeps the old
    token."""

    def __init__(
        self,
        config: KubeConfig,
        *,
        refresh: float = TOKEN_REFRESH_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.refresh = refresh
        self.monotonic = monotonic
        self._token = config.token
        self._read_at: float | None = None

    def current(self) -> str:
        """The token, re-read first when it is older than ``refresh``."""
        if self.config.token_file is not None and (
            self._read_at is None or self.monotonic() - self._read_at >= self.refresh
        ):
            self.reload()
        return self._token

    def reload(self) -> bool:
        """Re-read the token file now; True when the token changed."""
        self._read_at = self.monotonic()
        if self.config.token_file is None:
            return False
        text = read_text(Path(self.config.token_file))
        if not text or text == self._token:
            return False
        self._token = text
        log.debug("service-account token reloaded from %s", self.config.token_file)
        return True
