"""Rows of the operations table (``univrs.service.operations``): the cluster's objects.

Workloads, instances, registered machines (``node.*``), the watch (``events.poll``) and the
reconciler's status, in the order of the REST API's documentation.
"""

from __future__ import annotations

from univrs.service import schemas as s
from univrs.service.declare import (
    Arg,
    Command,
    Http,
    Kind,
    Operation,
    Opt,
    Param,
    Type,
    Where,
    delete_one,
    expected_version,
    get_one,
    in_path,
    labels_selector,
    list_paged,
    new_id,
    required_id,
    status_arg,
    status_filter,
    text_filter,
    workload_spec,
)
from univrs.sm.validate import MAX_ADDRESSES, MAX_REPLICAS, MAX_TEXT_LEN

# ---------------------------------------------------------------- schemas only these rows use

_INSTANCE_STATUS = {"type": "string", "enum": list(s.INSTANCE_STATUSES)}
_NODE_STATUS = {"type": "string", "enum": list(s.NODE_STATUSES)}
_KIND = "(workload|instance|node)s?"
_KINDS = rf"^({_KIND}(,{_KIND})*)?$"  # comma-separated kinds; empty: every kind


OBJECT_OPERATIONS: tuple[Operation, ...] = (
    # ------------------------------------------------------------ workloads
    Operation(
        name="workload.create",
        kind=Kind.WRITE,
        summary="Create a workload (the node assigns the id unless the body gives one)",
        http=Http(method="POST", path="/v1/workloads", creates=True),
        params=(new_id("workload"), workload_spec()),
        result="Workload",
        client="create_workload",
        cli=Command(
            group="workload",
            name="create",
            help="Create a workload: --name and --image at least (or --file).",
        ),
    ),
    list_paged(
        name="workload.list",
        summary="List workloads, filtered by labels and name, paginated by id",
        path="/v1/workloads",
        filters=(
            labels_selector(),
            text_filter(
                "name",
                flag="--name",
                help="Only workloads with this exact name.",
                description="exact workload name",
            ),
        ),
        result="WorkloadList",
        client="list_workloads",
        cli=Command(group="workload", name="list", help="List workloads (sorted by id)."),
    ),
    get_one(
        name="workload.get",
        summary="Get a workload",
        path="/v1/workloads/{id}",
        result="Workload",
        client="get_workload",
        cli=Command(group="workload", name="get", help="Show one workload."),
    ),
    Operation(
        name="workload.update",
        kind=Kind.WRITE,
        summary="Replace a workload's spec",
        http=Http(method="PUT", path="/v1/workloads/{id}", versioned=True),
        params=(in_path("id"), workload_spec(), expected_version()),
        result="Workload",
        client="update_workload",
        cli=Command(
            group="workload",
            name="update",
            help="Replace a workload's whole spec (--name and --image at least, or --file).",
        ),
    ),
    Operation(
        name="workload.scale",
        kind=Kind.WRITE,
        summary="Set a workload's replica count",
        http=Http(method="POST", path="/v1/workloads/{id}/scale", versioned=True),
        params=(
            in_path("id"),
            Param(
                name="replicas",
                type=Type.INT,
                schema={"type": "integer", "minimum": 0, "maximum": MAX_REPLICAS},
                required=True,
                cli=Arg("replicas"),
            ),
            expected_version(),
        ),
        result="Workload",
        client="scale_workload",
        cli=Command(group="workload", name="scale", help="Set a workload's replica count."),
    ),
    delete_one(
        name="workload.delete",
        summary="Delete a workload and its instances",
        path="/v1/workloads/{id}",
        client="delete_workload",
        cli=Command(group="workload", name="delete", help="Delete a workload and its instances."),
    ),
    # ------------------------------------------------------------ instances
    Operation(
        name="instance.create",
        kind=Kind.WRITE,
        summary="Create an instance of a workload",
        http=Http(method="POST", path="/v1/instances", creates=True),
        params=(
            new_id("instance"),
            required_id("workload_id"),
            Param(
                name="node_id",
                type=Type.STR,
                schema=s.ID,
                cli=Opt(flag="--node", help="Place it on this node (default: unscheduled)."),
            ),
        ),
        result="Instance",
        client="create_instance",
        cli=Command(group="instance", name="create", help="Create an instance of a workload."),
    ),
    list_paged(
        name="instance.list",
        summary="List instances, by workload, node and status, paginated by id",
        path="/v1/instances",
        filters=(
            text_filter("workload_id", flag="--workload", help="Only instances of this workload."),
            text_filter("node_id", flag="--node", help="Only instances on this node."),
            status_filter(s.INSTANCE_STATUSES, "instances"),
        ),
        result="InstanceList",
        client="list_instances",
        cli=Command(group="instance", name="list", help="List instances (sorted by id)."),
    ),
    get_one(
        name="instance.get",
        summary="Get an instance",
        path="/v1/instances/{id}",
        result="Instance",
        client="get_instance",
        cli=Command(group="instance", name="get", help="Show one instance."),
    ),
    Operation(
        name="instance.update_status",
        kind=Kind.WRITE,
        summary="Report an instance's status (and bind it to a node)",
        http=Http(method="PUT", path="/v1/instances/{id}/status", versioned=True),
        params=(
            in_path("id"),
            status_arg(_INSTANCE_STATUS),
            Param(
                name="message",
                type=Type.STR,
                schema=s.TEXT,
                cli=Opt(flag="--message", help="Free text (exit reason, error)."),
            ),
            Param(
                name="node_id",
                type=Type.STR,
                schema=s.ID,
                cli=Opt(flag="--node", help="Bind an unscheduled instance to this node."),
            ),
            expected_version(),
        ),
        result="Instance",
        client="update_instance_status",
        cli=Command(
            group="instance",
            name="status",
            help="Report an instance's STATUS (pending, running, succeeded, failed, unknown).",
        ),
    ),
    delete_one(
        name="instance.delete",
        summary="Delete an instance",
        path="/v1/instances/{id}",
        client="delete_instance",
        cli=Command(group="instance", name="delete", help="Delete an instance."),
    ),
    # ------------------------------------------------------------ nodes
    Operation(
        name="node.register",
        kind=Kind.WRITE,
        summary="Register a node",
        http=Http(method="POST", path="/v1/nodes", creates=True),
        params=(
            required_id("id", "ident"),
            Param(
                name="addresses",
                type=Type.STR_LIST,
                schema={
                    "type": "array",
                    "maxItems": MAX_ADDRESSES,
                    "items": {**s.ASCII_TOKEN, "maxLength": MAX_TEXT_LEN},
                },
                cli=Opt(flag="--address", help="How to reach it (repeatable)."),
            ),
            Param(
                name="capacity",
                type=Type.RESOURCES,
                schema=s.ref("Resources"),
                cli=Opt(help="capacity"),
            ),
            Param(
                name="labels",
                type=Type.STR_MAP,
                schema=s.LABELS,
                cli=Opt(flag="--label", help="KEY=VALUE (repeatable)."),
            ),
            Param(
                name="status",
                type=Type.STR,
                schema={**_NODE_STATUS, "default": "ready"},
                cli=Opt(flag="--status", help="ready (default), not-ready, draining or down."),
            ),
        ),
        result="Node",
        client="register_node",
        cli=Command(group="nodeinfo", name="register", help="Register a node."),
    ),
    list_paged(
        name="node.list",
        summary="List nodes, by labels and status, paginated by id",
        path="/v1/nodes",
        filters=(labels_selector(), status_filter(s.NODE_STATUSES, "nodes")),
        result="NodeList",
        client="list_nodes",
        cli=Command(group="nodeinfo", name="list", help="List registered nodes (sorted by id)."),
    ),
    get_one(
        name="node.get",
        summary="Get a node",
        path="/v1/nodes/{id}",
        result="Node",
        client="get_node",
        cli=Command(group="nodeinfo", name="get", help="Show one registered node."),
    ),
    Operation(
        name="node.update_status",
        kind=Kind.WRITE,
        summary="Set a node's status",
        http=Http(method="PUT", path="/v1/nodes/{id}/status", versioned=True),
        params=(
            in_path("id"),
            status_arg(_NODE_STATUS),
            expected_version(),
        ),
        result="Node",
        client="update_node_status",
        cli=Command(
            group="nodeinfo",
            name="status",
            help="Set a node's STATUS (ready, not-ready, draining, down).",
        ),
    ),
    delete_one(
        name="node.deregister",
        summary="Deregister a node and delete its instances",
        path="/v1/nodes/{id}",
        client="deregister_node",
        cli=Command(
            group="nodeinfo",
            name="deregister",
            help="Deregister a node (its instances are deleted).",
        ),
    ),
    Operation(
        name="node.heartbeat",
        kind=Kind.WRITE,
        summary="Report a registered node alive (a down node comes back ready)",
        http=Http(method="POST", path="/v1/nodes/{id}/heartbeat", body=True),
        params=(in_path("id"),),
        result="Heartbeat",
        client="heartbeat_node",
        cli=Command(
            group="nodeinfo",
            name="heartbeat",
            help="Report a node alive; send one every third of the TTL it answers with.",
        ),
    ),
    # ------------------------------------------------------------ watch
    Operation(
        name="events.poll",
        kind=Kind.READ,
        summary="Change events from a revision on, from this node's history (waits up to "
        "wait_ms for one)",
        http=Http(method="GET", path="/v1/events"),
        params=(
            Param(
                name="kinds",
                type=Type.STR,
                schema={"type": "string", "pattern": _KINDS, "maxLength": 64},
                where=Where.QUERY,
                description="comma-separated: workloads, instances, nodes (default: all)",
            ),
            Param(
                name="from_revision",
                type=Type.INT,
                schema={"type": "integer", "minimum": 1, "maximum": s.MAX_REVISION},
                where=Where.QUERY,
                description="the first revision wanted (default: the next one applied here)",
            ),
            Param(
                name="wait_ms",
                type=Type.INT,
                schema={"type": "integer", "minimum": 0, "maximum": s.MAX_WAIT_MS, "default": 0},
                where=Where.QUERY,
                description="wait this long for an event when there is none yet",
            ),
            Param(
                name="limit",
                type=Type.INT,
                schema={
                    "type": "integer",
                    "minimum": 1,
                    "maximum": s.MAX_EVENTS,
                    "default": s.DEFAULT_EVENTS,
                },
                where=Where.QUERY,
                description="events per answer (whole revisions: one may exceed it)",
            ),
        ),
        result="EventBatch",
        client="poll_events",
    ),
    # ------------------------------------------------------------ the reconciler
    Operation(
        name="reconcile.status",
        kind=Kind.READ,
        summary="What the reconciler has left to do: per workload, its desired and live "
        "instances, those to place or remove, and those no node can take (from the state)",
        http=Http(method="GET", path="/v1/reconcile/status"),
        result="ReconcileStatus",
        client="reconcile_status",
        cli=Command(
            group="reconcile",
            name="status",
            help="Show what the reconciler has left to place and remove, per workload.",
        ),
    ),
)
"""The workload, instance, machine, watch and reconciler operations."""
