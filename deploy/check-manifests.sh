#!/usr/bin/env bash
# Checks the Kubernetes manifests in deploy/kubernetes:
#   1. `kubectl kustomize` renders the base and every overlay;
#   2. each rendering validates in strict mode (no unknown fields) against
#      the Kubernetes API schemas of $K8S_VERSIONS, offline, with the PyPI
#      package kubernetes-validate (installed with pip when missing);
#   3. every --flag in a container's command/args and every REACHMAP_*
#      variable in its env is one its binary's --help lists; every $(VAR)
#      in an env value names a variable defined before it (Kubernetes
#      leaves an unknown reference as it is, silently);
#   4. the agent's capabilities are exactly the systemd unit's
#      (deploy/systemd/reachmap-agent.service), privileged is never
#      combined with allowPrivilegeEscalation: false (the API refuses it),
#      and every component is used by an overlay (so it is checked too).
#
# Usage: deploy/check-manifests.sh [BIN_DIR]
#   BIN_DIR          where reachmap-agent, reachmap-collector and reachmap
#                    are (default: target/debug; also $BIN_DIR)
#   MANIFESTS_DIR    the kustomize tree to check (default: deploy/kubernetes)
#   K8S_VERSIONS     Kubernetes versions to validate against (default: 1.30.0)
# Runs from any directory; exits non-zero with a one-line reason per problem.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
bin_dir=${1:-${BIN_DIR:-$repo/target/debug}}
manifests=${MANIFESTS_DIR:-$here/kubernetes}
versions=${K8S_VERSIONS:-1.30.0}
unit="$repo/deploy/systemd/reachmap-agent.service"
validator_pin="kubernetes-validate==1.37.0"

fail() {
    echo "check-manifests: $*" >&2
    exit 1
}

# --- tools ---------------------------------------------------------------
command -v kubectl >/dev/null || fail "kubectl is not installed (it renders the kustomizations: kubectl kustomize)"
command -v python3 >/dev/null || fail "python3 is not installed (kubernetes-validate runs on it)"
if ! python3 -c 'import kubernetes_validate, yaml' 2>/dev/null; then
    echo "check-manifests: installing $validator_pin"
    python3 -m pip install --quiet --disable-pip-version-check "$validator_pin" >/dev/null 2>&1 ||
        python3 -m pip install --quiet --disable-pip-version-check --break-system-packages "$validator_pin" >/dev/null 2>&1 ||
        fail "cannot install $validator_pin with pip"
    python3 -c 'import kubernetes_validate, yaml' 2>/dev/null ||
        fail "kubernetes_validate does not import after installing $validator_pin"
fi
for b in reachmap-agent reachmap-collector reachmap; do
    [[ -x "$bin_dir/$b" ]] || fail "$bin_dir/$b is missing: build it first (cargo build --workspace --bins) or pass the binaries' directory"
done
[[ -d "$manifests/base" ]] || fail "$manifests/base: no such directory"
[[ -f "$unit" ]] || fail "$unit: no such file"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$bin_dir/reachmap-agent" --help >"$work/help-reachmap-agent" 2>&1 ||
    fail "$bin_dir/reachmap-agent --help failed"
"$bin_dir/reachmap-collector" --help >"$work/help-reachmap-collector" 2>&1 ||
    fail "$bin_dir/reachmap-collector --help failed"
"$bin_dir/reachmap" --help >"$work/help-reachmap" 2>&1 ||
    fail "$bin_dir/reachmap --help failed"

# --- the kustomizations: the base and every overlay ------------------------
targets=(base)
for k in "$manifests"/overlays/*/kustomization.yaml; do
    [[ -e "$k" ]] || continue
    d=${k%/kustomization.yaml}
    targets+=("overlays/${d##*/}")
done
((${#targets[@]} > 1)) || fail "$manifests/overlays: no overlay with a kustomization.yaml"

# Every component must be used by an overlay, or nothing here checks it.
for c in "$manifests"/components/*/; do
    [[ -d "$c" ]] || continue
    name=$(basename "$c")
    grep -qs -- "components/$name\b" "$manifests"/overlays/*/kustomization.yaml ||
        fail "components/$name is used by no overlay, so it is never rendered or validated"
done

failed=0
for t in "${targets[@]}"; do
    bad=0
    out="$work/${t//\//-}.yaml"
    if ! kubectl kustomize "$manifests/$t" >"$out" 2>"$work/err"; then
        # The innermost reason, without kubectl's log prefix.
        reason=$(grep -m1 . "$work/err" | sed -E 's/^[EWI][0-9]{4} [^]]*\] //; s/"$//; s/.*: ([^:]+: [^:]+)$/\1/' || true)
        echo "check-manifests: $t: kubectl kustomize failed: ${reason:-no message}" >&2
        failed=$((failed + 1))
        continue
    fi
    [[ -s "$out" ]] || { echo "check-manifests: $t: renders nothing" >&2; failed=$((failed + 1)); continue; }

    for v in $versions; do
        set +e
        python3 -m kubernetes_validate --strict --quiet -k "$v" "$out" >"$work/validate" 2>&1
        status=$?
        set -e
        # A kind without a schema is only a WARN to kubernetes-validate;
        # everything here is a core kind, so it is a problem too.
        if ((status != 0)) || grep -qE '^(ERROR|WARN|FATAL)' "$work/validate"; then
            while IFS= read -r line; do
                line=${line/#* did not validate for resource /}
                echo "check-manifests: $t: Kubernetes $v schema: ${line//$out/the rendering}" >&2
            done < <(grep -E '^(ERROR|WARN|FATAL)' "$work/validate" || tail -n1 "$work/validate")
            bad=1
        fi
    done

    set +e
    python3 - "$t" "$out" "$work" "$unit" <<'PY'
import re, sys, yaml

target, rendered, work, unit = sys.argv[1:5]
helps = {}
for b in ("reachmap-agent", "reachmap-collector", "reachmap"):
    text = open(f"{work}/help-{b}").read()
    helps[b] = (
        set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*)", text)),
        set(re.findall(r"\[env: (REACHMAP_[A-Z0-9_]+)", text)),
    )
# Read by the binaries' logging, not a flag.
extra_env = {"REACHMAP_LOG"}

unit_caps = set()
for line in open(unit):
    if line.startswith("CapabilityBoundingSet="):
        unit_caps = {c.removeprefix("CAP_") for c in line.split("=", 1)[1].split()}
if not unit_caps:
    print(f"check-manifests: {unit}: no CapabilityBoundingSet= line", file=sys.stderr)
    sys.exit(1)

problems = []
def problem(msg):
    problems.append(f"check-manifests: {target}: {msg}")

# The schemas take any string for a quantity; the API server does not.
QUANTITY = re.compile(r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+|[numkMGTPE]|[KMGTPE]i)?$")
def quantities(node, path):
    if isinstance(node, dict):
        for k, v in node.items():
            if k in ("requests", "limits") and path.endswith("resources") and isinstance(v, dict):
                for r, q in v.items():
                    if not QUANTITY.match(str(q)):
                        yield f"{path}.{k}.{r}", q
            elif k == "sizeLimit" and not QUANTITY.match(str(v)):
                yield f"{path}.{k}", v
            else:
                yield from quantities(v, f"{path}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from quantities(v, f"{path}[{i}]")

for doc in yaml.safe_load_all(open(rendered)):
    if not doc:
        continue
    kind, name = doc.get("kind"), doc.get("metadata", {}).get("name")
    for path, q in quantities(doc, ""):
        problem(f"{kind.lower()}/{name}: {path.lstrip('.')}: {q!r} is not a Kubernetes quantity")
    spec = doc.get("spec", {})
    pod = spec.get("template", {}).get("spec") if kind in ("DaemonSet", "StatefulSet", "Deployment", "Job") else (spec if kind == "Pod" else None)
    if pod is None:
        continue
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        where = f"{kind.lower()}/{name} container {c['name']}"
        argv = list(c.get("command", [])) + list(c.get("args", []))
        binary = argv[0].rsplit("/", 1)[-1] if argv else None
        env = c.get("env", [])
        if binary not in helps:
            if any(e["name"].startswith("REACHMAP_") for e in env) or any(a.startswith("--") for a in argv):
                problem(f"{where}: its command {argv[:1]} names none of reachmap-agent, reachmap-collector, reachmap, so its flags cannot be checked")
            continue
        flags, envs = helps[binary]
        for a in argv[1:]:
            if a.startswith("--") and a != "--":
                flag = a.split("=", 1)[0]
                if flag not in flags:
                    problem(f"{where}: flag {flag} is not in `{binary} --help`")
        defined = set()
        for e in env:
            n = e["name"]
            if n.startswith("REACHMAP_") and n not in envs and n not in extra_env:
                problem(f"{where}: env {n} is not in `{binary} --help`")
            for ref in re.findall(r"(?<!\$)\$\(([A-Za-z_][A-Za-z0-9_]*)\)", e.get("value", "") or ""):
                if ref not in defined:
                    problem(f"{where}: env {n} refers to $({ref}), which is not defined before it (Kubernetes would pass it literally)")
            defined.add(n)
        sc = c.get("securityContext", {})
        if sc.get("privileged") and sc.get("allowPrivilegeEscalation") is False:
            problem(f"{where}: privileged: true with allowPrivilegeEscalation: false (the API server refuses it)")
        if binary == "reachmap-agent":
            caps = sc.get("capabilities", {})
            if caps.get("drop") != ["ALL"]:
                problem(f"{where}: capabilities.drop is {caps.get('drop')}, not [ALL]")
            add = {x.removeprefix("CAP_") for x in caps.get("add", [])}
            if add != unit_caps:
                problem(f"{where}: capabilities.add {sorted(add)} differ from the systemd unit's {sorted(unit_caps)}")

for p in problems:
    print(p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
    status=$?
    set -e
    ((status == 0)) || bad=1
    if ((bad)); then
        failed=$((failed + 1))
    else
        echo "check-manifests: $t: renders, validates against Kubernetes $versions (strict), flags and capabilities match the binaries and the unit"
    fi
done

((failed == 0)) || fail "$failed of ${#targets[@]} kustomizations have problems (above)"
echo "check-manifests: all ${#targets[@]} kustomizations in ${manifests#"$repo"/} passed"
