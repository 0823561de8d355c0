"""A pod as node mode needs it (:class:`PodInfo`), read from a pod object of the API, and Kubernetes quantities.

The pods are keyed by the uid the kubelet names the pod's cgroup by (``kubepods-…-pod<uid>.slice``): the pod's
``metadata.uid``, except for a static pod. The kubelet gives a static pod (from a manifest file or URL) a uid of
its own, the hash of the manifest, kept in the ``kubernetes.io/config.hash`` annotation
(pkg/kubelet/config/common.go, applyDefaults), and the *mirror pod* it creates in the API server gets a new
``metadata.uid`` plus the annotation ``kubernetes.io/config.mirror`` holding that hash
(pkg/kubelet/pod/mirror_client.go, CreateMirrorPod). So a mirror pod's cgroup is named by that annotation.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from types import MappingProxyType
from typing import Any

log = logging.getLogger("memmon.kubernetes.watch")

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"
_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Fraction(1, 10**9), "u": Fraction(1, 10**6), "m": Fraction(1, 1000), "": Fraction(1),
            "k": Fraction(10**3), "M": Fraction(10**6), "G": Fraction(10**9), "T": Fraction(10**12),
            "P": Fraction(10**15), "E": Fraction(10**18)}  # fmt: skip
_QUANTITY = re.compile(
    r"(?P<number>[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))(?P<suffix>[A-Za-z]*(?:[+-]?[0-9]+)?)"
)
_EXPONENT = re.compile(r"[eE][+-]?[0-9]+")


@dataclass(frozen=True)
class ContainerInfo:
    """One of a pod's (regular) containers."""

    name: str
    container_id: str | None
    """``status.containerStatuses[].containerID`` without its ``<runtime>://``; None before it starts."""
    memory_limit_bytes: int | None
    """``spec.containers[].resources.limits.memory``; None without a limit."""


@dataclass(frozen=True)
class PodInfo:
    """What memmon needs to know about a pod on its node."""

    uid: str
    namespace: str
    name: str
    node: str
    phase: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    owner: str | None
    """``<kind>/<name>`` of the controller ownerReference (``ReplicaSet/shop-7d9``); None without one."""
    containers: tuple[ContainerInfo, ...]
    """``spec.containers`` (init and ephemeral containers left out)."""
    cgroup_uid: str
    """The uid in the pod's cgroup name: ``metadata.uid``, or a mirror pod's ``kubernetes.io/config.mirror``."""


def parse_quantity(text: str) -> int:
    """A Kubernetes quantity (``128Mi``, ``1.5Gi``, ``129M``, ``129e6``, ``128974848``, ``500m``) as an integer,
    rounded away from zero as ``resource.Quantity.Value()`` does; ``ValueError`` naming ``text`` when it is not
    one.

    Grammar (k8s.io/apimachinery/pkg/api/resource/quantity.go): a signed decimal number, then a binary-SI
    suffix (Ki Mi Gi Ti Pi Ei), a decimal-SI suffix (n u m "" k M G T P E) or a decimal exponent (e3, E-2).
    ``1E`` is an exa, ``1E3`` a thousand.
    """
    match = _QUANTITY.fullmatch(text)
    if match is None:
        raise ValueError(
            f"{text!r} is not a Kubernetes quantity (a number with an optional suffix like Mi or G)"
        )
    value = Fraction(match["number"])
    suffix = match["suffix"]
    if suffix in _BINARY:
        value *= _BINARY[suffix]
    elif suffix in _DECIMAL:
        value *= _DECIMAL[suffix]
    elif _EXPONENT.fullmatch(suffix):
        value *= Fraction(10) ** int(suffix[1:])
    else:
        raise ValueError(f"{text!r} is not a Kubernetes quantity: unknown suffix {suffix!r}")
    whole = -(-abs(value.numerator) // value.denominator)  # a limit is never rounded below what was set
    return whole if value >= 0 else -whole


def pod_info(obj: Mapping[str, Any]) -> PodInfo:
    """The :class:`PodInfo` of a pod object; ``ValueError`` when it has no uid, name or namespace."""
    metadata = _mapping(obj.get("metadata"))
    spec = _mapping(obj.get("spec"))
    status = _mapping(obj.get("status"))
    uid, name, namespace = (metadata.get(key) for key in ("uid", "name", "namespace"))
    if not (isinstance(uid, str) and uid and isinstance(name, str) and name and isinstance(namespace, str)):
        raise ValueError("a pod without metadata.uid, metadata.name or metadata.namespace")
    annotations = _strings(metadata.get("annotations"))
    owner = None
    for reference in metadata.get("ownerReferences") or ():
        if isinstance(reference, dict) and reference.get("controller") is True:
            owner = f"{reference.get('kind')}/{reference.get('name')}"
            break
    ids: dict[str, str] = {}
    for container_status in status.get("containerStatuses") or ():
        if isinstance(container_status, dict) and isinstance(container_status.get("containerID"), str):
            # "containerd://<64 hex>", "cri-o://…", "docker://…": the id the cgroup is named by follows "://".
            ids[str(container_status.get("name"))] = container_status["containerID"].partition("://")[2]
    containers = []
    for container in spec.get("containers") or ():
        if not isinstance(container, dict) or not isinstance(container.get("name"), str):
            continue
        limits = _mapping(_mapping(container.get("resources")).get("limits"))
        containers.append(
            ContainerInfo(container["name"], ids.get(container["name"]) or None, _limit(limits.get("memory")))
        )
    mirror = annotations.get(MIRROR_ANNOTATION)
    return PodInfo(
        uid=uid,
        namespace=namespace,
        name=name,
        node=str(spec.get("nodeName") or ""),
        phase=str(status.get("phase") or ""),
        labels=MappingProxyType(_strings(metadata.get("labels"))),
        annotations=MappingProxyType(annotations),
        owner=owner,
        containers=tuple(containers),
        cgroup_uid=mirror or uid,
    )


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else {}


def _strings(value: object) -> dict[str, str]:
    return {str(k): str(v) for k, v in value.items()} if isinstance(value, dict) else {}


def _limit(value: object) -> int | None:
    if not isinstance(value, str | int):
        return None
    try:
        return parse_quantity(str(value))
    except ValueError as exc:
        log.debug("memory limit ignored: %s", exc)
        return None
