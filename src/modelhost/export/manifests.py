"""The files of an export: a Dockerfile per variant, Kubernetes Deployments + Services (+ an HPA per
autoscaled variant), an ECS/Fargate task definition per variant, a docker-compose file."""

from __future__ import annotations

from typing import Any

from modelhost.export.plan import Plan, Variant
from modelhost.export.sizing import fargate_size, instance_size

PORT = 8080
BASE_IMAGE = "python:3.12-slim"
MODEL_ROOT = "/opt/ml"  # SageMaker's layout: the model under /opt/ml/model
INVOCATIONS_METRIC = "SageMakerVariantInvocationsPerInstance"


def object_name(plan: Plan, variant: Variant) -> str:
    """``<endpoint>-<variant>`` (a DNS label); just the name when a model is exported."""
    name = plan.slug if variant.slug == plan.slug else f"{plan.slug}-{variant.slug}"
    return name[:63].strip("-")


def image_name(plan: Plan, variant: Variant, registry: str = "") -> str:
    prefix = registry.rstrip("/") + "/" if registry else ""
    return f"{prefix}{object_name(plan, variant)}:latest"


def requirement(variant: Variant, version: str) -> str:
    extra = f"[{variant.extra}]" if variant.extra else ""
    return f"modelhost{extra}=={version}"


def dockerfile(variant: Variant, version: str, has_requirements: bool) -> str:
    lines = [
        f"# {variant.name}: the {variant.runtime} model behind the SageMaker container contract",
        "# (GET /ping, POST /invocations on port 8080), served by `modelhost serve-model`.",
        f"FROM {BASE_IMAGE}",
        "ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1",
        f'RUN pip install --no-cache-dir "{requirement(variant, version)}"',
    ]
    if has_requirements:  # what SageMaker's framework containers install at start-up, here at build time
        lines += [
            "COPY model/code/requirements.txt /tmp/requirements.txt",
            "RUN pip install --no-cache-dir -r /tmp/requirements.txt",
        ]
    lines += [
        f"COPY serving.json {MODEL_ROOT}/serving.json",
        f"COPY model {MODEL_ROOT}/model",
        f"EXPOSE {PORT}",
        f'ENTRYPOINT ["modelhost", "serve-model", "{MODEL_ROOT}", "--host", "0.0.0.0", "--port", "{PORT}"]',
    ]
    return "\n".join(lines) + "\n"


def _labels(plan: Plan, variant: Variant) -> dict[str, str]:
    return {"app.kubernetes.io/name": plan.slug, "modelhost.io/variant": variant.slug}


def _probe(initial: int) -> dict[str, Any]:
    return {"httpGet": {"path": "/ping", "port": PORT}, "initialDelaySeconds": initial, "periodSeconds": 10}


def deployment(plan: Plan, variant: Variant, registry: str) -> dict[str, Any]:
    size = instance_size(variant.instance_type)
    labels = _labels(plan, variant)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": object_name(plan, variant),
            "labels": labels,
            "annotations": {
                "modelhost.io/variant-name": variant.name,
                "modelhost.io/variant-weight": f"{variant.weight:g}",
                "modelhost.io/instance-type": variant.instance_type,
            },
        },
        "spec": {
            "replicas": variant.instance_count,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "model",
                            "image": image_name(plan, variant, registry),
                            "ports": [{"name": "http", "containerPort": PORT}],
                            "readinessProbe": _probe(5),
                            "livenessProbe": {**_probe(60), "failureThreshold": 3},
                            "resources": {
                                "requests": {"cpu": str(size.vcpus), "memory": f"{size.memory_mib}Mi"},
                                "limits": {"memory": f"{size.memory_mib}Mi"},
                            },
                        }
                    ]
                },
            },
        },
    }


def service(name: str, selector: dict[str, str], labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": PORT, "targetPort": PORT}]},
    }


def autoscaler(plan: Plan, variant: Variant) -> dict[str, Any] | None:
    """The variant's target tracking as an HPA: invocations per instance (per minute, as SageMaker
    measures it) become a per-pod metric that a Prometheus adapter serves from /metrics."""
    scaling = variant.scaling
    if scaling is None:
        return None
    spec: dict[str, Any] = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": object_name(plan, variant)},
        "minReplicas": max(1, scaling.min_capacity),
        "maxReplicas": max(1, scaling.max_capacity),
    }
    if scaling.metric:
        metric = "invocations_per_instance" if scaling.metric == INVOCATIONS_METRIC else scaling.metric
        spec["metrics"] = [
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": metric},
                    "target": {"type": "AverageValue", "averageValue": f"{scaling.target:g}"},
                },
            }
        ]
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": object_name(plan, variant), "labels": _labels(plan, variant)},
        "spec": spec,
    }


def kubernetes(plan: Plan, registry: str = "") -> list[dict[str, Any]]:
    """One Deployment and Service per variant, one Service over all of them (traffic in proportion to
    ready pods; the weights are in annotations for a mesh to apply), an HPA per autoscaled variant."""
    docs: list[dict[str, Any]] = []
    for variant in plan.variants:
        docs.append(deployment(plan, variant, registry))
        docs.append(service(object_name(plan, variant), _labels(plan, variant), _labels(plan, variant)))
        hpa = autoscaler(plan, variant)
        if hpa is not None:
            docs.append(hpa)
    if len(plan.variants) > 1:
        everyone = {"app.kubernetes.io/name": plan.slug}
        docs.append(service(plan.slug, everyone, everyone))
    return docs


def ecs_task_definition(plan: Plan, variant: Variant, registry: str = "", region: str = "us-east-1") -> dict[str, Any]:
    """A RegisterTaskDefinition request for Fargate (CPU and memory from the instance type)."""
    cpu, memory = fargate_size(instance_size(variant.instance_type))
    family = object_name(plan, variant)
    return {
        "family": family,
        "requiresCompatibilities": ["FARGATE"],
        "networkMode": "awsvpc",
        "cpu": str(cpu),
        "memory": str(memory),
        "runtimePlatform": {"cpuArchitecture": "X86_64", "operatingSystemFamily": "LINUX"},
        "containerDefinitions": [
            {
                "name": "model",
                "image": image_name(plan, variant, registry),
                "essential": True,
                "portMappings": [{"containerPort": PORT, "hostPort": PORT, "protocol": "tcp"}],
                "healthCheck": {
                    "command": [
                        "CMD",
                        "python",
                        "-c",
                        f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}/ping', timeout=4)",
                    ],
                    "interval": 15,
                    "timeout": 5,
                    "retries": 3,
                    "startPeriod": 60,
                },
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": f"/modelhost/{plan.slug}",
                        "awslogs-region": region,
                        "awslogs-stream-prefix": variant.slug,
                        "awslogs-create-group": "true",
                    },
                },
            }
        ],
    }


def compose(plan: Plan) -> dict[str, Any]:
    services: dict[str, Any] = {}
    for i, variant in enumerate(plan.variants):
        services[variant.slug] = {
            "build": f"./{variant.slug}",
            "image": image_name(plan, variant),
            "ports": [f"{PORT + i}:{PORT}"],
            "healthcheck": {
                "test": [
                    "CMD",
                    "python",
                    "-c",
                    f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{PORT}/ping')",
                ],
                "interval": "15s",
                "start_period": "60s",
            },
        }
    return {"services": services}
