"""The ``node`` section: one memmon per Kubernetes node watching every pod and container of that node.

The node's pods are found in its cgroup tree (``memmon.sampling.kubepods``) and named from a watch of the API
server restricted to the node (``memmon.kits.pod_watch``); ``memmon.noderoster`` joins the two into targets.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, model_validator
from pydantic_settings import NoDecode

from memmon.config.fields import Int, Section, split_list
from memmon.config.rules import Unsure, problem
from memmon.config.sources import load_environ

NODE_NAME_ENV = "NODE_NAME"
"""The variable the chart sets from the downward API (``spec.nodeName``); the fallback of ``node.name``."""


class NodeSettings(Section):
    """Node mode (``--node``): the pods of one node as targets, each container against its own limit and each pod
    against the pod's; acting per pod by eviction or a SIGTERM to a container's main process."""

    enabled: bool = False
    """Watch the node's pods instead of the ``target``/``targets`` sections."""
    name: Annotated[str, Field(min_length=1, max_length=253)] | None = None
    """The node (``spec.nodeName`` of its pods); null = the ``NODE_NAME`` environment variable."""
    cgroup_root: Annotated[str, Field(min_length=1)] = "/sys/fs/cgroup"
    """Where the node's cgroup tree is mounted (the chart mounts the host's read-only at /host/sys/fs/cgroup)."""
    select: Literal["all", "annotated", "namespaces"] = "all"
    """Which pods are watched: ``all``, ``annotated`` (``memmon.io/watch: "true"``), or those of ``namespaces``.
    ``memmon.io/watch: "false"`` leaves a pod out whatever this says."""
    namespaces: Annotated[
        list[Annotated[str, Field(min_length=1)]], NoDecode, BeforeValidator(split_list)
    ] = Field(default_factory=list)
    """The namespaces watched with ``select: namespaces``."""
    exclude_namespaces: Annotated[
        list[Annotated[str, Field(min_length=1)]], NoDecode, BeforeValidator(split_list)
    ] = Field(default_factory=list)
    """Namespaces never watched."""
    containers: bool = True
    """Judge each container against its own limit, as well as each pod against the pod's."""
    restart: Literal["evict", "signal", "none"] = "evict"
    """The graceful restart at emergency: ``evict`` (the Eviction API: PodDisruptionBudgets are honoured),
    ``signal`` (SIGTERM to the container's main process: the kubelet restarts that container in place; needs the
    host's PID namespace and CAP_KILL), or ``none``. A pod may choose with ``memmon.io/restart``."""
    annotate_pods: bool = True
    """Annotate each watched pod with its level (``memmon.io/level``...) and emit Events on it."""
    max_restarts_per_hour: Annotated[Int, Field(ge=0)] = 10
    """Restarts of the whole node per rolling hour (0 = none); one pod at a time restarts once per cool-down."""
    unknown_pods: bool = True
    """Watch pod cgroups the API has not named (yet, or while it is unreachable) as ``pod-<uid>``; they are
    alerted on but never evicted (no name to evict by)."""

    @model_validator(mode="after")
    def _name_from_environment(self) -> NodeSettings:
        """``name`` null: ``NODE_NAME`` of the environment the settings are loaded from, read once here."""
        if self.enabled and self.name is None:
            found = load_environ().get(NODE_NAME_ENV, "").strip()
            if found:
                object.__setattr__(self, "name", found)
        return self

    def node_name(self) -> str | None:
        """``name`` (or ``NODE_NAME`` as it was at load time); None when neither is set."""
        return self.name

    def rule_problems(self, unsure: Unsure) -> list[dict[str, Any]]:
        """A node name when enabled; namespaces with ``select: namespaces``."""
        problems = []
        if (
            self.enabled
            and not unsure("name")
            and not (self.name or load_environ().get(NODE_NAME_ENV, "").strip())
        ):
            problems.append(
                problem(
                    "node mode needs the node's name",
                    at="name",
                    expected=f"node.name, --node-name or the {NODE_NAME_ENV} environment variable",
                )
            )
        if self.select == "namespaces" and not self.namespaces and not unsure("namespaces"):
            problems.append(
                problem(
                    "select: namespaces needs namespaces",
                    at="namespaces",
                    expected="a list of namespace names",
                )
            )
        return problems
