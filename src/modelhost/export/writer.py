"""Writing an export directory: per variant ``<variant>/`` (Dockerfile, serving.json, model/), then
the chosen manifests and a README. Nothing in it needs a modelhost server."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import yaml

from modelhost.export.manifests import PORT, compose, dockerfile, ecs_task_definition, image_name, kubernetes
from modelhost.export.plan import Plan, Variant

FORMATS = ("docker", "kubernetes", "ecs", "compose")
SERVING_FILE = "serving.json"  # what serve-model needs beside model/: the runtime and the model's environment


class ExportError(Exception):
    pass


class _PlainDumper(yaml.SafeDumper):
    """No anchors and aliases: each manifest spells its labels out (kubectl and readers expect that)."""

    def ignore_aliases(self, data: object) -> bool:
        return True


def parse_formats(text: str) -> tuple[str, ...]:
    chosen = tuple(f.strip().lower() for f in text.split(",") if f.strip())
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown or not chosen:
        raise ExportError(f"--format takes a comma-separated list of {', '.join(FORMATS)} (got {text!r})")
    return chosen


def serving_config(variant: Variant) -> dict[str, object]:
    return {
        "name": variant.name,
        "runtime": variant.runtime,
        "image": variant.model.image,
        "environment": variant.model.environment,
    }


def _write_variant(dest: Path, variant: Variant, version: str) -> None:
    target = dest / variant.slug
    shutil.copytree(variant.model.model_dir, target / "model", ignore=shutil.ignore_patterns("__pycache__"))
    (target / SERVING_FILE).write_text(json.dumps(serving_config(variant), indent=2) + "\n")
    has_requirements = (target / "model" / "code" / "requirements.txt").is_file()
    (target / "Dockerfile").write_text(dockerfile(variant, version, has_requirements))


def write_export(
    plan: Plan, dest: Path, formats: tuple[str, ...], version: str, registry: str = "", region: str = "us-east-1"
) -> list[Path]:
    """Write the export; the paths written (for the CLI to list). ``dest`` must be new or empty."""
    if dest.exists() and any(dest.iterdir()):
        raise ExportError(f"{dest} is not empty; export writes into a new or empty directory")
    dest.mkdir(parents=True, exist_ok=True)
    slugs = [v.slug for v in plan.variants]
    if len(set(slugs)) != len(slugs):
        raise ExportError(f"variant names {', '.join(v.name for v in plan.variants)} collide as directory names")
    written: list[Path] = []
    for variant in plan.variants:
        _write_variant(dest, variant, version)
        written.append(dest / variant.slug)
    if "kubernetes" in formats:
        path = dest / "kubernetes.yaml"
        path.write_text(yaml.dump_all(kubernetes(plan, registry), Dumper=_PlainDumper, sort_keys=False))
        written.append(path)
    if "ecs" in formats:
        (dest / "ecs").mkdir()
        for variant in plan.variants:
            path = dest / "ecs" / f"{variant.slug}.json"
            path.write_text(json.dumps(ecs_task_definition(plan, variant, registry, region), indent=2) + "\n")
            written.append(path)
    if "compose" in formats:
        path = dest / "docker-compose.yaml"
        path.write_text(yaml.dump(compose(plan), Dumper=_PlainDumper, sort_keys=False))
        written.append(path)
    (dest / "README.md").write_text(readme(plan, formats, registry))
    written.append(dest / "README.md")
    return written


def readme(plan: Plan, formats: tuple[str, ...], registry: str) -> str:
    lines = [
        f"# {plan.name}",
        "",
        f"Exported by `modelhost export` from the {plan.kind} `{plan.name}`. Each directory below serves one "
        f"model behind the SageMaker container contract (`GET /ping`, `POST /invocations` on port {PORT}), "
        "with no modelhost server.",
        "",
        "| directory | variant | runtime | instance type | instances | weight |",
        "|---|---|---|---|---|---|",
    ]
    for v in plan.variants:
        lines.append(
            f"| `{v.slug}/` | {v.name} | {v.runtime} | {v.instance_type} | {v.instance_count} | {v.weight:g} |"
        )
    first = plan.variants[0]
    lines += [
        "",
        "## Run it here",
        "",
        "```",
        f"pip install '{'modelhost[' + first.extra + ']' if first.extra else 'modelhost'}'",
        f"modelhost serve-model {first.slug} --port {PORT}",
        f"curl -X POST --data-binary @input.csv -H 'Content-Type: text/csv' http://127.0.0.1:{PORT}/invocations",
        "```",
    ]
    if "docker" in formats:
        lines += ["", "## Docker", "", "```"]
        for v in plan.variants:
            lines.append(f"docker build -t {image_name(plan, v, registry)} {v.slug}")
        lines += [f"docker run -p {PORT}:{PORT} {image_name(plan, first, registry)}", "```"]
    if "kubernetes" in formats:
        lines += [
            "",
            "## Kubernetes",
            "",
            "`kubectl apply -f kubernetes.yaml` (push the images first). One Deployment and Service per "
            "variant, readiness on `/ping`. With several variants a Service over all of them splits traffic by "
            "ready pods; the SageMaker weights are in each Deployment's `modelhost.io/variant-weight` annotation "
            "for a service mesh to apply. Autoscaled variants get a HorizontalPodAutoscaler on the per-pod "
            "metric `invocations_per_instance` (serve it with a Prometheus adapter).",
        ]
    if "ecs" in formats:
        lines += [
            "",
            "## ECS / Fargate",
            "",
            "`aws ecs register-task-definition --cli-input-json file://ecs/<variant>.json`, then "
            "`aws ecs run-task --launch-type FARGATE ...` (CPU and memory come from the instance type).",
        ]
    if "compose" in formats:
        lines += ["", "## docker compose", "", f"`docker compose up --build`: variant k listens on {PORT}+k."]
    return "\n".join(lines) + "\n"
