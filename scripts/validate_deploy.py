#!/usr/bin/env python3
"""Validate the deployment files in deploy/ (and the Dockerfile) before anyone applies them.

    .venv-bqemu/bin/python scripts/validate_deploy.py        # needs kubernetes-validate, jsonschema, pyyaml

What it checks, one line per file (and Kubernetes version) checked:

* every Kubernetes manifest in deploy/kubernetes/*.yaml against the official OpenAPI schemas of each supported
  Kubernetes version, in strict mode (kubernetes-validate: unknown fields are errors);
* the API server's rules a schema cannot express (podFailurePolicy exit codes sorted and unique, no 0 with
  operator In, onPodConditions with type and status, restartPolicy Never, containerName naming a container,
  Indexed Job fields) and the project's own (CronJob concurrencyPolicy Forbid, secrets only from Secrets);
* deploy/cloudrun/job.yaml against a JSON Schema of the Cloud Run Admin API v1 Job resource (namespaces.jobs);
* that the exit-code policy agrees everywhere: the README's exit-code table, the Kubernetes FailJob codes, the
  Cloud Run maxRetries, the systemd failure hook and the crontab line (run with a stand-in dealsync);
* the systemd units: `systemd-analyze security --offline=true --threshold=30` (its threshold counts tenths:
  30 is an exposure of 3.0) and `systemd-analyze verify`, when systemd-analyze is installed;
* deploy/prometheus/alerts.yaml parses and uses only the metrics dealsync exports;
* a self-test, every time: mutated copies of the files (unsorted or duplicate exit codes, a DisruptionTarget
  condition without status, restartPolicy OnFailure, maxRetries "x", ...) must each be rejected, so that the
  validator cannot pass vacuously.

Exits 0 when everything holds, 1 naming the file and the field of every failure, 2 when a dependency is missing.
"""

from __future__ import annotations

import copy
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable

try:
    import jsonschema
    import kubernetes_validate
    import yaml
except ImportError as e:
    print(
        f"validate_deploy: the Python package {e.name} is missing; install the pinned packages: "
        "pip install kubernetes-validate==1.37.0 jsonschema pyyaml",
        file=sys.stderr,
    )
    sys.exit(2)

ROOT = Path(__file__).resolve().parent.parent

# Kubernetes versions the manifests are checked against (docs/deploy.md says the same): 1.29 is the first with
# backoffLimitPerIndex on by default; podFailurePolicy and CronJob timeZone are older.
K8S_MIN = (1, 29)
# The exit codes the README documents, and the metrics `dealsync sync` exports (docs/deploy.md).
EXIT_CODES = {0, 1, 2, 3, 75, 78}
METRICS = {
    "dealsync_last_run_timestamp_seconds",
    "dealsync_last_success_timestamp_seconds",
    "dealsync_last_partial_timestamp_seconds",
    "dealsync_last_exit_code",
    "dealsync_rows_written",
    "dealsync_rows_quarantined",
    "dealsync_rows_repaired",
    "dealsync_run_duration_seconds",
    "dealsync_reconciliation_missing",
}
CONTAINER = "dealsync"
DEALSYNC_DEADLINE_SECS = 7200  # dealsync's own --deadline default (2h)
CLOUD_RUN_MAX_RETRIES = 0  # the choice, and why: deploy/cloudrun/job.yaml, docs/deploy.md
SECRET_VARS = ["ZOHO_CLIENT_ID", "ZOHO_CLIENT_SECRET", "ZOHO_REFRESH_TOKEN"]


def rel(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


def load_yaml_docs(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def get(obj: Any, dotted: str) -> Any:
    """`get(doc, "spec.template.spec")`, None when any step is missing."""
    for key in dotted.split("."):
        if isinstance(obj, list) and key.isdigit() and int(key) < len(obj):
            obj = obj[int(key)]
        elif isinstance(obj, dict) and key in obj:
            obj = obj[key]
        else:
            return None
    return obj


# --------------------------------------------------------------------------------------------- the README


def readme_exit_table(text: str) -> dict[int, str]:
    """The README's "## Exit codes" table: code -> its "Retry?" cell."""
    section = re.search(r"^## Exit codes\s*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    if not section:
        raise ValueError('README.md: no "## Exit codes" section')
    rows: dict[int, str] = {}
    for line in section.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            rows[int(cells[0])] = cells[-1]
    return rows


def check_readme(text: str) -> tuple[list[str], list[int]]:
    """Errors, and the codes the README says never to retry (the fail-fast set)."""
    errors: list[str] = []
    try:
        rows = readme_exit_table(text)
    except ValueError as e:
        return [str(e)], []
    if set(rows) != EXIT_CODES:
        errors.append(
            f"README.md: exit-code table: codes {sorted(rows)}, expected {sorted(EXIT_CODES)} "
            "(0 ok, 1 internal, 2 usage, 3 partial, 75 unavailable/interrupted, 78 configuration)"
        )
    fail_fast = sorted(c for c, retry in rows.items() if re.match(r"(?i)no\b|not\b", retry))
    return errors, fail_fast


# ------------------------------------------------------------------------------------------- Kubernetes


def k8s_versions() -> list[str]:
    from kubernetes_validate.utils import all_versions  # the schemas the pinned package ships

    out = []
    for v in all_versions():
        major, minor = (int(x) for x in v.split(".")[:2])
        if (major, minor) >= K8S_MIN:
            out.append(f"{major}.{minor}")
    return sorted(set(out), key=lambda v: tuple(int(x) for x in v.split(".")))


def schema_errors_k8s(doc: dict, version: str) -> list[str]:
    try:
        got = kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(str(p) for p in e.path) or "(top)"
        return [f"{path}: {e.message}"]
    except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
        return [e.message]
    if got != version:
        return [f"validated against {got} instead of {version}: kubernetes-validate has no {version} schema"]
    return []


def pod_spec_and_job_spec(doc: dict) -> tuple[str, dict | None]:
    kind = doc.get("kind")
    if kind == "CronJob":
        return "spec.jobTemplate.spec", get(doc, "spec.jobTemplate.spec")
    if kind == "Job":
        return "spec", get(doc, "spec")
    return "", None


def api_rules(doc: dict) -> list[str]:
    """Rules the API server enforces beyond the OpenAPI schema, and the project's own, for one document."""
    errors: list[str] = []
    kind = doc.get("kind")
    name = get(doc, "metadata.name")
    if not name:
        errors.append("metadata.name: missing")
    if kind == "CronJob":
        spec = doc.get("spec") or {}
        if spec.get("concurrencyPolicy") != "Forbid":
            errors.append(f"spec.concurrencyPolicy: {spec.get('concurrencyPolicy')!r}, must be Forbid (never two syncs)")
        schedule = str(spec.get("schedule", ""))
        if len(schedule.split()) != 5:
            errors.append(f"spec.schedule: {schedule!r} is not five cron fields")
        if "TZ=" in schedule:
            errors.append("spec.schedule: CRON_TZ/TZ is not allowed; use spec.timeZone")
        if not spec.get("timeZone"):
            errors.append("spec.timeZone: missing (the schedule would follow the controller's zone)")
        sds = spec.get("startingDeadlineSeconds")
        if sds is not None and (not isinstance(sds, int) or sds < 0):
            errors.append("spec.startingDeadlineSeconds: must be a non-negative integer")
    base, job = pod_spec_and_job_spec(doc)
    if job is None:
        return errors
    pod = get(job, "template.spec") or {}
    pb = f"{base}.template.spec"
    containers = pod.get("containers") or []
    names = [c.get("name") for c in containers] + [c.get("name") for c in pod.get("initContainers") or []]
    restart = pod.get("restartPolicy")
    if restart not in ("Never", "OnFailure"):
        errors.append(f"{pb}.restartPolicy: {restart!r}; a Job needs Never or OnFailure")

    # Indexed Jobs.
    indexed = job.get("completionMode") == "Indexed"
    if indexed and not isinstance(job.get("completions"), int):
        errors.append(f"{base}.completions: required when completionMode is Indexed")
    if job.get("backoffLimitPerIndex") is not None and not indexed:
        errors.append(f"{base}.backoffLimitPerIndex: requires completionMode Indexed")
    mfi = job.get("maxFailedIndexes")
    if mfi is not None and (job.get("backoffLimitPerIndex") is None or mfi > (job.get("completions") or 0)):
        errors.append(f"{base}.maxFailedIndexes: needs backoffLimitPerIndex and at most completions")
    if indexed:
        for i, c in enumerate(containers):
            count = next((e.get("value") for e in c.get("env") or [] if e.get("name") == "DEALSYNC_TASK_COUNT"), None)
            if count is None or str(count) != str(job.get("completions")):
                errors.append(
                    f"{pb}.containers.{i}.env.DEALSYNC_TASK_COUNT: {count!r}, must equal completions "
                    f"({job.get('completions')}), or each task syncs the wrong slice"
                )

    # podFailurePolicy (pkg/apis/batch/validation).
    pfp = job.get("podFailurePolicy")
    if pfp is not None:
        rules = pfp.get("rules") or []
        if restart != "Never":
            errors.append(f"{pb}.restartPolicy: {restart!r}; podFailurePolicy requires Never")
        if len(rules) > 20:
            errors.append(f"{base}.podFailurePolicy.rules: {len(rules)} rules, at most 20")
        for i, rule in enumerate(rules):
            rp = f"{base}.podFailurePolicy.rules.{i}"
            action = rule.get("action")
            if action not in ("FailJob", "FailIndex", "Ignore", "Count"):
                errors.append(f"{rp}.action: {action!r} is not FailJob, FailIndex, Ignore or Count")
            if action == "FailIndex" and job.get("backoffLimitPerIndex") is None:
                errors.append(f"{rp}.action: FailIndex requires backoffLimitPerIndex")
            has_codes, has_conds = "onExitCodes" in rule, "onPodConditions" in rule
            if has_codes == has_conds:
                errors.append(f"{rp}: exactly one of onExitCodes and onPodConditions is required")
            if has_codes:
                oc = rule["onExitCodes"] or {}
                op, values = oc.get("operator"), oc.get("values")
                if op not in ("In", "NotIn"):
                    errors.append(f"{rp}.onExitCodes.operator: {op!r} is not In or NotIn")
                if not isinstance(values, list) or not values or not all(isinstance(v, int) for v in values):
                    errors.append(f"{rp}.onExitCodes.values: {values!r} must be a non-empty list of integers")
                else:
                    if len(values) > 255:
                        errors.append(f"{rp}.onExitCodes.values: at most 255 values")
                    if len(set(values)) != len(values):
                        errors.append(f"{rp}.onExitCodes.values: {values} has duplicates")
                    if values != sorted(values):
                        errors.append(f"{rp}.onExitCodes.values: {values} is not sorted in ascending order")
                    if op == "In" and 0 in values:
                        errors.append(f"{rp}.onExitCodes.values: 0 is not allowed with operator In")
                cn = oc.get("containerName")
                if cn is not None and cn not in names:
                    errors.append(f"{rp}.onExitCodes.containerName: {cn!r} names no container of the pod ({names})")
            if has_conds:
                conds = rule["onPodConditions"]
                if not isinstance(conds, list) or not conds or len(conds) > 20:
                    errors.append(f"{rp}.onPodConditions: 1 to 20 conditions")
                    conds = conds if isinstance(conds, list) else []
                for j, cond in enumerate(conds):
                    cond = cond or {}
                    if not cond.get("type"):
                        errors.append(f"{rp}.onPodConditions.{j}.type: required")
                    if cond.get("status") not in ("True", "False", "Unknown"):
                        errors.append(
                            f"{rp}.onPodConditions.{j}.status: {cond.get('status')!r}; required, "
                            'one of "True", "False", "Unknown" (quote it: YAML reads True as a boolean)'
                        )

    # Secrets never as literal values.
    for i, c in enumerate(containers):
        for e in c.get("env") or []:
            n = str(e.get("name", ""))
            if "value" in e and ("SECRET" in n or "TOKEN" in n) and not n.endswith("_FILE"):
                errors.append(f"{pb}.containers.{i}.env.{n}: a secret as a literal value; use valueFrom.secretKeyRef")
            if n.endswith("_FILE") and not any(str(e.get("value", "")).startswith(str(m.get("mountPath", "")) + "/")
                                               for m in c.get("volumeMounts") or []):
                errors.append(f"{pb}.containers.{i}.env.{n}: the file is not on a mounted volume")
    return errors


def exit_policy_k8s(doc: dict, fail_fast: list[int]) -> list[str]:
    """The project's exit-code policy, for a Job or CronJob."""
    base, job = pod_spec_and_job_spec(doc)
    if job is None:
        return []
    errors: list[str] = []
    rules = get(job, "podFailurePolicy.rules") or []
    fail = [r for r in rules if r.get("action") == "FailJob" and "onExitCodes" in r]
    if len(fail) != 1:
        errors.append(f"{base}.podFailurePolicy.rules: {len(fail)} FailJob rules on exit codes, expected one")
    else:
        oc = fail[0]["onExitCodes"]
        if oc.get("containerName") != CONTAINER or oc.get("operator") != "In" or oc.get("values") != fail_fast:
            errors.append(
                f"{base}.podFailurePolicy.rules (FailJob).onExitCodes: {oc}, expected "
                f"{{containerName: {CONTAINER}, operator: In, values: {fail_fast}}} (README: never retried)"
            )
    ignore = [
        r
        for r in rules
        if r.get("action") == "Ignore"
        and any((c or {}).get("type") == "DisruptionTarget" and (c or {}).get("status") == "True"
                for c in r.get("onPodConditions") or [])
    ]
    if not ignore:
        errors.append(
            f'{base}.podFailurePolicy.rules: no Ignore rule on {{type: DisruptionTarget, status: "True"}} '
            "(evictions and drains would use up the retries)"
        )
    retries = job.get("backoffLimitPerIndex") if job.get("completionMode") == "Indexed" else job.get("backoffLimit")
    if retries is None:
        retries = job.get("backoffLimit")
    if not isinstance(retries, int) or not 1 <= retries <= 6:
        errors.append(f"{base}.backoffLimit: {retries!r}; 1 to 6 retries for exit 75 and 1")
    pod = get(job, "template.spec") or {}
    if not any(c.get("name") == CONTAINER for c in pod.get("containers") or []):
        errors.append(f"{base}.template.spec.containers: none is named {CONTAINER!r}")
    if doc.get("kind") == "CronJob":
        ads = job.get("activeDeadlineSeconds")
        if not isinstance(ads, int) or ads <= DEALSYNC_DEADLINE_SECS:
            errors.append(f"{base}.activeDeadlineSeconds: {ads!r}; must exceed dealsync's own 2h --deadline")
    return errors


# ------------------------------------------------------------------------------------------- Cloud Run

# The Cloud Run Admin API v1 Job resource (run.googleapis.com/v1, namespaces.jobs), as documented in the API's
# discovery document and reference: Job -> JobSpec -> ExecutionTemplateSpec -> ExecutionSpec ->
# TaskTemplateSpec -> TaskSpec -> Container. Output-only fields (status, uid, generation, ...) and fields the
# reference marks "Not supported by Cloud Run" are refused. Limits: maxRetries 0-10 and a task timeout of at
# most 168 hours (Cloud Run jobs documentation); timeoutSeconds is an int64, sent as a JSON string or number.
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_OBJECT_META = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$"},
        "namespace": {"type": "string"},
        "labels": _STR_MAP,
        "annotations": _STR_MAP,
    },
}
_ENV_VAR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "value": {"type": "string"},
        "valueFrom": {
            "type": "object",
            "additionalProperties": False,
            "required": ["secretKeyRef"],
            "properties": {
                "secretKeyRef": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["name", "key"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "key": {"type": "string", "pattern": "^(latest|[1-9][0-9]*)$"},
                        "optional": {"type": "boolean"},
                    },
                }
            },
        },
    },
    "oneOf": [{"required": ["value"]}, {"required": ["valueFrom"]}],
}
_CONTAINER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["image"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
        "image": {"type": "string", "minLength": 1},
        "command": {"type": "array", "items": {"type": "string"}},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": {"type": "array", "items": _ENV_VAR},
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {"limits": _STR_MAP, "requests": _STR_MAP},
        },
        "workingDir": {"type": "string"},
        "volumeMounts": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["name", "mountPath"],
                "properties": {
                    "name": {"type": "string"},
                    "mountPath": {"type": "string"},
                    "readOnly": {"type": "boolean"},
                    "subPath": {"type": "string"},
                },
            },
        },
        "imagePullPolicy": {"enum": ["Always", "Never", "IfNotPresent"]},
        "terminationMessagePath": {"type": "string"},
        "terminationMessagePolicy": {"enum": ["File", "FallbackToLogsOnError"]},
    },
}
_INT64 = {
    "anyOf": [
        {"type": "integer", "minimum": 1, "maximum": 604800},
        {"type": "string", "pattern": "^[1-9][0-9]{0,5}$"},
    ]
}
CLOUD_RUN_JOB_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "Cloud Run Admin API v1 Job",
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "run.googleapis.com/v1"},
        "kind": {"const": "Job"},
        "metadata": {**_OBJECT_META, "required": ["name"]},
        "spec": {  # JobSpec
            "type": "object",
            "additionalProperties": False,
            "required": ["template"],
            "properties": {
                "startExecutionToken": {"type": "string"},
                "runExecutionToken": {"type": "string"},
                "template": {  # ExecutionTemplateSpec
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["spec"],
                    "properties": {
                        "metadata": _OBJECT_META,
                        "spec": {  # ExecutionSpec
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["template"],
                            "properties": {
                                "parallelism": {"type": "integer", "minimum": 0},
                                "taskCount": {"type": "integer", "minimum": 1, "maximum": 10000},
                                "template": {  # TaskTemplateSpec
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["spec"],
                                    "properties": {
                                        "spec": {  # TaskSpec
                                            "type": "object",
                                            "additionalProperties": False,
                                            "required": ["containers"],
                                            "properties": {
                                                "containers": {
                                                    "type": "array",
                                                    "minItems": 1,
                                                    "maxItems": 10,
                                                    "items": _CONTAINER,
                                                },
                                                "volumes": {"type": "array", "items": {"type": "object"}},
                                                "maxRetries": {"type": "integer", "minimum": 0, "maximum": 10},
                                                "timeoutSeconds": _INT64,
                                                "serviceAccountName": {
                                                    "type": "string",
                                                    "pattern": r"^[^@\s]+@[^@\s]+\.iam\.gserviceaccount\.com$",
                                                },
                                                "nodeSelector": _STR_MAP,
                                            },
                                        }
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def check_cloud_run(doc: Any, fail_fast: list[int]) -> list[str]:
    errors: list[str] = []
    validator = jsonschema.Draft202012Validator(CLOUD_RUN_JOB_SCHEMA)
    for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.path))):
        path = ".".join(str(p) for p in e.absolute_path) or "(top)"
        errors.append(f"{path}: {e.message}")
    if errors:
        return errors
    task = get(doc, "spec.template.spec.template.spec")
    tp = "spec.template.spec.template.spec"
    if task.get("maxRetries") != CLOUD_RUN_MAX_RETRIES:
        errors.append(
            f"{tp}.maxRetries: {task.get('maxRetries')!r}, expected {CLOUD_RUN_MAX_RETRIES}: Cloud Run cannot skip "
            f"exit codes {fail_fast}, and dealsync retries transient failures itself (docs/deploy.md)"
        )
    timeout = int(task.get("timeoutSeconds", 600))
    if timeout <= DEALSYNC_DEADLINE_SECS:
        errors.append(f"{tp}.timeoutSeconds: {timeout}; must exceed dealsync's own 2h --deadline")
    c = next((c for c in task["containers"] if c.get("name", CONTAINER) == CONTAINER), task["containers"][0])
    env = {e["name"]: e for e in c.get("env") or []}
    for var in SECRET_VARS:
        ref = get(env.get(var, {}), "valueFrom.secretKeyRef")
        if not ref:
            errors.append(f"{tp}.containers.0.env.{var}: must come from Secret Manager (valueFrom.secretKeyRef)")
    for name, e in env.items():
        if "value" in e and ("SECRET" in name or "TOKEN" in name):
            errors.append(f"{tp}.containers.0.env.{name}: a secret as a literal value")
    return errors


# ---------------------------------------------------------------------------------------------- systemd


def systemd_static(service: str, failure_unit_exists: bool) -> list[str]:
    errors: list[str] = []
    lines = [line.strip() for line in service.splitlines() if line.strip() and not line.strip().startswith("#")]

    def values(key: str) -> list[str]:
        return [line.split("=", 1)[1] for line in lines if line.startswith(key + "=")]

    want = {
        "Type": "oneshot",
        "UMask": "0077",
        "StateDirectory": "dealsync",
        "WorkingDirectory": "/var/lib/dealsync",
        "ExecStart": "/usr/local/bin/dealsync sync",
        "OnFailure": "dealsync-failure@%n.service",
        "EnvironmentFile": "/etc/dealsync/dealsync.env",
        "NoNewPrivileges": "yes",
    }
    for key, value in want.items():
        if value not in values(key):
            errors.append(f"dealsync.service: {key}={value} missing (found {values(key)})")
    if any(u in ("root", "0") for u in values("User")) or not values("User") and "yes" not in values("DynamicUser"):
        errors.append("dealsync.service: User= must name an unprivileged user")
    families = " ".join(values("RestrictAddressFamilies")).split()
    for fam in ("AF_INET", "AF_INET6", "AF_UNIX"):
        if fam not in families or any(f.startswith("~") for f in families):
            errors.append(f"dealsync.service: RestrictAddressFamilies= must allow {fam} (HTTPS to Zoho and Google)")
    if "yes" in values("PrivateNetwork") or any("any" in v.split() for v in values("IPAddressDeny")):
        errors.append("dealsync.service: PrivateNetwork=/IPAddressDeny=any would cut dealsync off from Zoho")
    if any(v.strip() not in ("", "no") for v in values("Restart")):
        errors.append("dealsync.service: Restart= would retry exit 3 and 78; the policy is no automatic restart")
    if not failure_unit_exists:
        errors.append("dealsync.service: OnFailure= names dealsync-failure@.service, which deploy/systemd lacks")
    return errors


def systemd_security(unit: Path) -> tuple[list[str], str]:
    """`systemd-analyze security --offline=true --threshold=30` (tenths: an exposure of 3.0): errors, and the
    exposure figure, which is also compared here in case --threshold changes its scale."""
    proc = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--threshold=30", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
    )
    m = re.search(r"Overall exposure level for \S+: ([0-9.]+)", proc.stdout + proc.stderr)
    figure = m.group(1) if m else "?"
    if proc.returncode != 0 or not m:
        detail = (proc.stderr.strip() or proc.stdout.strip().splitlines()[-1:] or [""])[-1]
        return [f"{unit.name}: systemd-analyze security exited {proc.returncode}: exposure {figure} ({detail})"], figure
    if float(figure) > 3.0:
        return [f"{unit.name}: systemd-analyze security: exposure {figure} is over 3.0"], figure
    return [], figure


def systemd_verify(units: list[Path]) -> list[str]:
    """`systemd-analyze verify` on copies whose ExecStart points at an existing binary (dealsync is not
    installed here). It exits 0 on unknown keys and bad values, so any line it prints is a failure."""
    with tempfile.TemporaryDirectory() as tmp:
        copies = []
        for u in units:
            text = u.read_text().replace("/usr/local/bin/dealsync", "/bin/true")
            dst = Path(tmp) / u.name
            dst.write_text(text)
            copies.append(str(dst))
        proc = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", *copies], capture_output=True, text=True, cwd=tmp
        )
    out = [line for line in (proc.stdout + proc.stderr).splitlines() if line.strip()]
    return [f"systemd-analyze verify: {line.replace(tmp + '/', '')}" for line in out] + (
        [f"systemd-analyze verify exited {proc.returncode}"] if proc.returncode and not out else []
    )


# ------------------------------------------------------------------------------------------------- cron


def cron_entry(text: str) -> tuple[list[str], str]:
    entries = [
        line
        for line in text.splitlines()
        if line.strip() and not line.lstrip().startswith("#") and not re.match(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=", line)
    ]
    if len(entries) != 1:
        return [f"crontab: {len(entries)} entries, expected one line to paste"], ""
    fields = entries[0].split(None, 5)
    if len(fields) < 6:
        return ["crontab: five schedule fields, then the command"], ""
    return [], fields[5]


def check_cron(text: str) -> list[str]:
    errors, command = cron_entry(text)
    if errors:
        return errors
    if re.search(r"(?<!\\)%", command):
        errors.append("crontab: an unescaped % in the command (cron turns it into a newline)")
    for needed in ("flock -n", "dealsync sync", "/etc/dealsync/dealsync.env", "/var/lib/dealsync"):
        if needed not in command:
            errors.append(f"crontab: the command lacks {needed!r}")
    syntax = subprocess.run(["bash", "-n", "-c", command], capture_output=True, text=True)
    if syntax.returncode != 0:
        return errors + [f"crontab: bash -n: {syntax.stderr.strip()}"]
    if errors:
        return errors
    return errors + cron_behaviour(command)


def cron_behaviour(command: str) -> list[str]:
    """Run the line as cron would (/bin/sh -c) with a stand-in dealsync and logger: it must exit with
    dealsync's code, log a line naming it when it is not 0, and exit 75 while another run holds the lock."""
    errors: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        (t / "bin").mkdir()
        (t / "state").mkdir()
        fake = t / "dealsync"
        fake.write_text('#!/bin/sh\necho "stand-in dealsync $* $ZOHO_DC"\nexit "$FAKE_EXIT"\n')
        logger = t / "bin" / "logger"
        logger.write_text('#!/bin/sh\n{ echo "logger $*"; cat; } >> "$FAKE_LOG"\n')
        for f in (fake, logger):
            f.chmod(0o755)
        (t / "env").write_text("ZOHO_DC=eu\n")
        cmd = (
            command.replace("/usr/local/bin/dealsync", str(fake))
            .replace("/etc/dealsync/dealsync.env", str(t / "env"))
            .replace("/var/lib/dealsync", str(t / "state"))
        )
        env = dict(os.environ, PATH=f"{t / 'bin'}:/usr/bin:/bin", FAKE_LOG=str(t / "log"))
        for code in sorted(EXIT_CODES):
            (t / "log").write_text("")
            env["FAKE_EXIT"] = str(code)
            proc = subprocess.run(
                ["/bin/sh", "-c", cmd], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
            )
            log = (t / "log").read_text()
            if proc.returncode != code:
                errors.append(f"crontab: dealsync exited {code}, the line exited {proc.returncode}: the code is lost")
            if "stand-in dealsync sync eu" not in log:
                errors.append(f"crontab: dealsync's output (with the env file loaded) did not reach logger: {log!r}")
            if code != 0 and not re.search(rf"\b{code}\b", log.replace("stand-in", "")):
                errors.append(f"crontab: exit {code} left no log line naming the code")
        lock = t / "state" / ".lock"
        with open(lock, "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
            env["FAKE_EXIT"] = "0"
            proc = subprocess.run(
                ["/bin/sh", "-c", cmd], env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30
            )
        if proc.returncode != 75:
            errors.append(f"crontab: with the lock held by another run the line exited {proc.returncode}, expected 75")
    return errors


# ------------------------------------------------------------------------------------- Dockerfile, alerts


def check_dockerfile(text: str) -> list[str]:
    errors: list[str] = []
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]
    froms = [i for i, line in enumerate(lines) if line.startswith("FROM ")]
    runtime = lines[froms[-1]:] if froms else []
    for needed in ("WORKDIR /var/lib/dealsync", "VOLUME /var/lib/dealsync", "USER nonroot:nonroot"):
        if needed not in runtime:
            errors.append(f"Dockerfile: the runtime stage lacks `{needed}`")
    if not any(line.startswith("COPY ") and "--chown=65532:65532" in line and "/var/lib/" in line for line in runtime):
        errors.append("Dockerfile: /var/lib/dealsync is not copied in with --chown=65532:65532 (distroless has no shell)")
    header = text.split("\nFROM ", 1)[0]
    if "-v dealsync-data:/var/lib/dealsync" not in header:
        errors.append("Dockerfile: the header's `docker run` example does not mount a volume on /var/lib/dealsync")
    return errors


def check_alerts(doc: Any) -> list[str]:
    errors: list[str] = []
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not isinstance(groups, list) or not groups:
        return ["groups: missing"]
    seen: set[str] = set()
    for gi, group in enumerate(groups):
        if not group.get("name"):
            errors.append(f"groups.{gi}.name: missing")
        for ri, rule in enumerate(group.get("rules") or []):
            rp = f"groups.{gi}.rules.{ri}"
            if not rule.get("alert") or not isinstance(rule.get("expr"), str):
                errors.append(f"{rp}: an alerting rule needs alert and expr")
                continue
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", rule["alert"]):
                errors.append(f"{rp}.alert: {rule['alert']!r} is not a valid alert name")
            if rule["expr"].count("(") != rule["expr"].count(")"):
                errors.append(f"{rp}.expr: unbalanced parentheses")
            for metric in re.findall(r"\bdealsync_[a-z_]+\b", rule["expr"]):
                seen.add(metric)
                if metric not in METRICS:
                    errors.append(f"{rp}.expr: {metric} is not a metric dealsync exports")
            if "for" in rule and not re.fullmatch(r"([0-9]+(ms|s|m|h|d|w|y))+", str(rule["for"])):
                errors.append(f"{rp}.for: {rule['for']!r} is not a Prometheus duration")
            if not (rule.get("labels") or {}).get("severity"):
                errors.append(f"{rp}.labels.severity: missing")
    for needed in ("dealsync_last_success_timestamp_seconds", "dealsync_last_exit_code",
                   "dealsync_reconciliation_missing"):
        if needed not in seen:
            errors.append(f"no alert on {needed}")
    return errors


# ------------------------------------------------------------------------------------------------- main


class Report:
    def __init__(self) -> None:
        self.failures: list[str] = []

    def check(self, label: str, errors: list[str]) -> None:
        if errors:
            for e in errors:
                print(f"FAIL {label}: {e}")
            self.failures += [f"{label}: {e}" for e in errors]
        else:
            print(f"ok   {label}")


def self_test(originals: dict[str, Any], fail_fast: list[int], versions: list[str], systemd: bool) -> list[str]:
    """Each mutation of a file that passes must be rejected; returns the mutations that were accepted."""
    cj, bf, cr = originals["cronjob"], originals["backfill"], originals["cloudrun"]

    def k8s(doc: dict, schema_version: str | None = None) -> list[str]:
        errs = api_rules(doc) + exit_policy_k8s(doc, fail_fast)
        return errs + (schema_errors_k8s(doc, schema_version) if schema_version else [])

    def mutate(doc: Any, fn: Callable[[Any], None]) -> Any:
        d = copy.deepcopy(doc)
        fn(d)
        return d

    def cj_rules(d: dict) -> list:
        return d["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]

    def fail_rule(rules: list) -> dict:
        return next(r for r in rules if r.get("action") == "FailJob")["onExitCodes"]

    def ignore_rule(rules: list) -> dict:
        return next(r for r in rules if r.get("action") == "Ignore")["onPodConditions"][0]

    def task(d: dict) -> dict:
        return d["spec"]["template"]["spec"]["template"]["spec"]

    cases: list[tuple[str, Callable[[], list[str]]]] = [
        ("cronjob: FailJob exit codes unsorted [78, 2, 3]",
         lambda: k8s(mutate(cj, lambda d: fail_rule(cj_rules(d)).update(values=[78, 2, 3])))),
        ("cronjob: FailJob exit codes duplicated [2, 3, 3, 78]",
         lambda: k8s(mutate(cj, lambda d: fail_rule(cj_rules(d)).update(values=[2, 3, 3, 78])))),
        ("cronjob: FailJob without 3 [2, 78]",
         lambda: k8s(mutate(cj, lambda d: fail_rule(cj_rules(d)).update(values=[2, 78])))),
        ("cronjob: exit code 0 with operator In",
         lambda: k8s(mutate(cj, lambda d: fail_rule(cj_rules(d)).update(values=[0, 2, 3, 78])))),
        ("cronjob: containerName names no container",
         lambda: k8s(mutate(cj, lambda d: fail_rule(cj_rules(d)).update(containerName="sync")))),
        ("cronjob: DisruptionTarget without status",
         lambda: k8s(mutate(cj, lambda d: ignore_rule(cj_rules(d)).pop("status")))),
        ("cronjob: DisruptionTarget status as a YAML boolean",
         lambda: k8s(mutate(cj, lambda d: ignore_rule(cj_rules(d)).update(status=True)))),
        ("cronjob: restartPolicy OnFailure",
         lambda: k8s(mutate(cj, lambda d: d["spec"]["jobTemplate"]["spec"]["template"]["spec"].update(
             restartPolicy="OnFailure")))),
        ("cronjob: concurrencyPolicy Allow",
         lambda: k8s(mutate(cj, lambda d: d["spec"].update(concurrencyPolicy="Allow")))),
        (f"cronjob: an unknown field, strict schema {versions[0]}",
         lambda: schema_errors_k8s(mutate(cj, lambda d: d["spec"]["jobTemplate"]["spec"].update(retries=3)),
                                   versions[0])),
        (f"cronjob: backoffLimit as a string, schema {versions[-1]}",
         lambda: schema_errors_k8s(mutate(cj, lambda d: d["spec"]["jobTemplate"]["spec"].update(backoffLimit="2")),
                                   versions[-1])),
        ("backfill: FailJob exit codes unsorted",
         lambda: k8s(mutate(bf, lambda d: fail_rule(d["spec"]["podFailurePolicy"]["rules"]).update(values=[3, 2, 78])))),
        ("backfill: DEALSYNC_TASK_COUNT differs from completions",
         lambda: k8s(mutate(bf, lambda d: d["spec"].update(completions=5)))),
        ("backfill: restartPolicy OnFailure",
         lambda: k8s(mutate(bf, lambda d: d["spec"]["template"]["spec"].update(restartPolicy="OnFailure")))),
        ('cloud run: maxRetries "x"', lambda: check_cloud_run(mutate(cr, lambda d: task(d).update(maxRetries="x")), fail_fast)),
        ("cloud run: maxRetries 3", lambda: check_cloud_run(mutate(cr, lambda d: task(d).update(maxRetries=3)), fail_fast)),
        ("cloud run: maxRetries 11", lambda: check_cloud_run(mutate(cr, lambda d: task(d).update(maxRetries=11)), fail_fast)),
        ("cloud run: maxRetries one level too high (ExecutionSpec)",
         lambda: check_cloud_run(mutate(cr, lambda d: d["spec"]["template"]["spec"].update(maxRetries=0)), fail_fast)),
        ("cloud run: container without image",
         lambda: check_cloud_run(mutate(cr, lambda d: task(d)["containers"][0].pop("image")), fail_fast)),
        ("cloud run: env with both value and valueFrom",
         lambda: check_cloud_run(mutate(cr, lambda d: task(d)["containers"][0]["env"][0].update(value="x")), fail_fast)),
        ("cloud run: secretKeyRef without key",
         lambda: check_cloud_run(mutate(cr, lambda d: task(d)["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"].pop("key")), fail_fast)),
        ("cloud run: timeoutSeconds under dealsync's deadline",
         lambda: check_cloud_run(mutate(cr, lambda d: task(d).update(timeoutSeconds=3600)), fail_fast)),
        ("README: the 78 row removed",
         lambda: check_readme(re.sub(r"^\| 78 \|.*$", "", originals["readme"], flags=re.M))[0]),
        ("crontab: the exit code lost in the pipe (no pipefail)",
         lambda: check_cron(originals["crontab"].replace("set -o pipefail; ", ""))),
        ("crontab: % unescaped",
         lambda: check_cron(originals["crontab"].replace("dealsync sync exited", "dealsync sync on %F exited"))),
        ("dealsync.service: UMask removed", lambda: systemd_static(originals["service"].replace("UMask=0077", ""), True)),
        ("dealsync.service: Restart=on-failure",
         lambda: systemd_static(originals["service"] + "\nRestart=on-failure\n", True)),
        ("dealsync.service: AF_INET6 not allowed",
         lambda: systemd_static(originals["service"].replace(" AF_INET6", ""), True)),
        ("Dockerfile: VOLUME removed",
         lambda: check_dockerfile(originals["dockerfile"].replace("VOLUME /var/lib/dealsync", ""))),
        ("alerts: an unknown metric",
         lambda: check_alerts(mutate(originals["alerts"], lambda d: d["groups"][0]["rules"][0].update(
             expr="dealsync_last_sucess_timestamp_seconds < time() - 3600")))),
    ]
    if systemd:
        def weak_unit() -> list[str]:
            keep = ("[", "Description", "Type", "User", "Group", "EnvironmentFile", "StateDirectory",
                    "WorkingDirectory", "ExecStart", "UMask", "NoNewPrivileges", "OnFailure")
            text = "\n".join(line for line in originals["service"].splitlines() if line.startswith(keep))
            with tempfile.TemporaryDirectory() as tmp:
                unit = Path(tmp) / "dealsync.service"
                unit.write_text(text + "\n")
                return systemd_security(unit)[0]

        def bad_key() -> list[str]:
            with tempfile.TemporaryDirectory() as tmp:
                unit = Path(tmp) / "dealsync.service"
                unit.write_text(originals["service"].replace("UMask=0077", "UMask=0077\nProtectSystm=strict"))
                return systemd_verify([unit])

        cases += [("dealsync.service: hardening removed (exposure over 3)", weak_unit),
                  ("dealsync.service: a misspelt key (verify)", bad_key)]

    accepted = []
    for label, run in cases:
        try:
            errors = run()
        except Exception as e:  # a crash on a mutation is a rejection too, but say so
            errors = [f"{type(e).__name__}: {e}"]
        if errors:
            print(f"ok   self-test: rejected {label} ({errors[0]})")
        else:
            print(f"FAIL self-test: accepted {label}")
            accepted.append(label)
    return accepted


def main() -> int:
    report = Report()
    readme_text = (ROOT / "README.md").read_text()
    errors, fail_fast = check_readme(readme_text)
    report.check(f"README.md exit codes {sorted(EXIT_CODES)}, never retried {fail_fast}", errors)
    if not fail_fast:
        fail_fast = [2, 3, 78]

    versions = k8s_versions()
    print(f"     kubernetes-validate {kubernetes_validate.__version__}: Kubernetes {', '.join(versions)} (strict)")
    docs: dict[str, list[Any]] = {}
    for path in sorted((ROOT / "deploy" / "kubernetes").glob("*.yaml")):
        try:
            docs[path.name] = load_yaml_docs(path)
        except yaml.YAMLError as e:
            report.check(rel(path), [f"YAML: {e}"])
            continue
        for version in versions:
            errs = []
            for doc in docs[path.name]:
                what = f"{doc.get('kind')}/{get(doc, 'metadata.name')}"
                errs += [f"{what}: {e}" for e in schema_errors_k8s(doc, version)]
            report.check(f"{rel(path)} Kubernetes {version}", errs)
        errs = []
        for doc in docs[path.name]:
            what = f"{doc.get('kind')}/{get(doc, 'metadata.name')}"
            errs += [f"{what}: {e}" for e in api_rules(doc) + exit_policy_k8s(doc, fail_fast)]
        report.check(f"{rel(path)} API server rules and exit-code policy", errs)
    for needed in ("cronjob.yaml", "backfill-indexed-job.yaml"):
        if needed not in docs:
            report.check(f"deploy/kubernetes/{needed}", ["missing"])

    cloudrun_path = ROOT / "deploy" / "cloudrun" / "job.yaml"
    cloudrun = load_yaml_docs(cloudrun_path)
    report.check(
        f"{rel(cloudrun_path)} Cloud Run Admin API v1 Job schema, maxRetries {CLOUD_RUN_MAX_RETRIES}",
        check_cloud_run(cloudrun[0], fail_fast) if len(cloudrun) == 1 else ["expected one document"],
    )

    systemd_dir = ROOT / "deploy" / "systemd"
    service_path = systemd_dir / "dealsync.service"
    service = service_path.read_text()
    failure_unit = systemd_dir / "dealsync-failure@.service"
    report.check(f"{rel(service_path)} settings", systemd_static(service, failure_unit.exists()))
    have_systemd = shutil.which("systemd-analyze") is not None
    if have_systemd:
        errs, figure = systemd_security(service_path)
        report.check(f"{rel(service_path)} systemd-analyze security: exposure {figure} (at most 3.0)", errs)
        units = [service_path, systemd_dir / "dealsync.timer", failure_unit]
        report.check(f"{rel(systemd_dir)} systemd-analyze verify ({', '.join(u.name for u in units)})",
                     systemd_verify([u for u in units if u.exists()]))
    else:
        print("skip systemd-analyze is not installed: exposure and verify not measured")
    failure_text = failure_unit.read_text() if failure_unit.exists() else ""
    report.check(
        f"{rel(failure_unit)} names every exit code",
        [f"no case for exit {c}" for c in sorted(EXIT_CODES - {0}) if not re.search(rf"\b{c}\b", failure_text)],
    )

    crontab_path = ROOT / "deploy" / "cron" / "crontab"
    crontab = crontab_path.read_text()
    report.check(f"{rel(crontab_path)} bash -n, exit codes kept ({', '.join(map(str, sorted(EXIT_CODES)))}), lock",
                 check_cron(crontab))

    dockerfile = (ROOT / "Dockerfile").read_text()
    report.check("Dockerfile runtime stage", check_dockerfile(dockerfile))

    alerts_path = ROOT / "deploy" / "prometheus" / "alerts.yaml"
    try:
        alerts = yaml.safe_load(alerts_path.read_text())
        report.check(f"{rel(alerts_path)} rules and metric names", check_alerts(alerts))
    except (OSError, yaml.YAMLError) as e:
        alerts = {}
        report.check(rel(alerts_path), [str(e)])

    if {"cronjob.yaml", "backfill-indexed-job.yaml"} <= set(docs) and not report.failures:
        originals = {
            "cronjob": docs["cronjob.yaml"][0],
            "backfill": docs["backfill-indexed-job.yaml"][0],
            "cloudrun": cloudrun[0],
            "readme": readme_text,
            "crontab": crontab,
            "service": service,
            "dockerfile": dockerfile,
            "alerts": alerts,
        }
        accepted = self_test(originals, fail_fast, versions, have_systemd)
        report.failures += [f"self-test: the validator accepted a broken file: {a}" for a in accepted]
    elif report.failures:
        print("skip self-test: the files themselves fail")

    if report.failures:
        print(f"\nvalidate_deploy: {len(report.failures)} failure(s):", file=sys.stderr)
        for f in report.failures:
            print(f"  {f}", file=sys.stderr)
        return 1
    print("validate_deploy: every deployment file holds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
