#!/usr/bin/env python3
"""Static checks of deploy/ and the Dockerfile (no cluster, no kubectl needed).

  deploy_manifests_test.py REPO_ROOT

- Kubernetes manifests parse as YAML and hold what issue 5 asks for: a Deployment with a
  GPU request, native gRPC health probes, the PVC mounted at --data_dir, the API-key Secret,
  the ConfigMap variables its args use, and Services for 50051, 8000 and 9464. When kubectl is on
  PATH, `kubectl kustomize` must also render the base and the TLS overlay.
- The Grafana dashboard is valid dashboard JSON and every metric it (and every alert rule)
  queries is one the server exports (the list below, cross-checked against
  server/metrics/metrics.cc when that file exists).
- The Dockerfile is multi-stage (CUDA devel -> CUDA runtime) and starts oft_server with the
  listen/metrics/data flags the manifests rely on.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

import yaml

ROOT = None

# name -> type; the service contract (server/metrics/metrics.h).
CONTRACT_METRICS = {
    "oft_jobs": "gauge",
    "oft_queue_depth": "gauge",
    "oft_train_step_seconds": "histogram",
    "oft_train_tokens_per_second": "gauge",
    "oft_train_loss": "gauge",
    "oft_device_memory_bytes": "gauge",
    "oft_rpc_duration_seconds": "histogram",
    "oft_rpcs_total": "counter",
    "oft_jobs_created_total": "counter",
    "oft_jobs_finished_total": "counter",
    "oft_adapters_loaded": "gauge",
    "oft_adapter_load_seconds": "histogram",
    "oft_generated_tokens_total": "counter",
    "oft_time_to_first_token_seconds": "histogram",
    "oft_generate_requests_total": "counter",
    "oft_kernel_self_check": "gauge",
    "oft_kernel_path": "gauge",
}

# What the dashboard must show (issue 5 / the brief): each needs a query on this metric.
DASHBOARD_REQUIRED = [
    "oft_jobs", "oft_queue_depth", "oft_train_step_seconds", "oft_train_tokens_per_second",
    "oft_train_loss", "oft_device_memory_bytes", "oft_rpc_duration_seconds", "oft_rpcs_total",
    "oft_adapters_loaded", "oft_adapter_load_seconds", "oft_generated_tokens_total",
    "oft_time_to_first_token_seconds",
]

REQUIRED_ALERTS = ["OftServerDown", "OftJobFailureRateHigh", "OftQueueDepthHigh",
                   "OftRpcErrorRatioHigh", "OftRpcLatencyP99High"]

METRIC_RE = re.compile(r"\boft_[a-z0-9_]+")


def path(*parts):
    return os.path.join(ROOT, *parts)


def exported_series(name):
    """Maps a queried series name to its metric family, or None when it is not exported."""
    if name in CONTRACT_METRICS:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix):
            base = name[: -len(suffix)]
            if CONTRACT_METRICS.get(base) == "histogram":
                return base
    return None


def load_k8s_docs(directory):
    docs = []
    for dirpath, _, files in os.walk(directory):
        for f in sorted(files):
            if not f.endswith((".yaml", ".yml")) or f == "kustomization.yaml":
                continue
            with open(os.path.join(dirpath, f)) as fh:
                for d in yaml.safe_load_all(fh):
                    if d is not None:
                        docs.append((os.path.join(dirpath, f), d))
    return docs


class K8sManifestsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.docs = load_k8s_docs(path("deploy", "k8s", "base"))
        cls.by_kind = {}
        for f, d in cls.docs:
            for key in ("apiVersion", "kind", "metadata"):
                assert key in d, f"{f}: a document lacks {key}"
            cls.by_kind.setdefault(d["kind"], []).append(d)

    def one(self, kind):
        items = self.by_kind.get(kind, [])
        self.assertEqual(len(items), 1, f"expected exactly one {kind}, found {len(items)}")
        return items[0]

    def test_kinds_present_and_one_namespace(self):
        for kind in ("Namespace", "Secret", "ConfigMap", "PersistentVolumeClaim", "Deployment",
                     "Service"):
            self.assertIn(kind, self.by_kind, f"deploy/k8s/base has no {kind}")
        ns = self.one("Namespace")["metadata"]["name"]
        for f, d in self.docs:
            if d["kind"] != "Namespace":
                self.assertEqual(d["metadata"].get("namespace"), ns,
                                 f"{f}: {d['kind']} {d['metadata']['name']} not in namespace {ns}")

    def test_kustomization_lists_every_file(self):
        base = path("deploy", "k8s", "base")
        with open(os.path.join(base, "kustomization.yaml")) as fh:
            k = yaml.safe_load(fh)
        listed = set(k["resources"])
        present = {f for f in os.listdir(base) if f.endswith(".yaml") and f != "kustomization.yaml"}
        self.assertEqual(listed, present, "kustomization resources != files in deploy/k8s/base")

    def container(self):
        dep = self.one("Deployment")
        pod = dep["spec"]["template"]["spec"]
        cs = pod["containers"]
        self.assertEqual(len(cs), 1)
        return dep, pod, cs[0]

    def test_deployment_gpu_and_probes(self):
        dep, pod, c = self.container()
        self.assertEqual(dep["spec"]["replicas"], 1, "SQLite job store: one replica")
        self.assertEqual(dep["spec"]["strategy"]["type"], "Recreate")
        res = c["resources"]
        self.assertEqual(str(res["requests"]["nvidia.com/gpu"]), "1")
        self.assertEqual(str(res["limits"]["nvidia.com/gpu"]), "1")
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            self.assertIn(probe, c)
            self.assertEqual(c[probe]["grpc"]["port"], 50051, f"{probe} must be a gRPC probe")
        self.assertEqual(c["readinessProbe"]["grpc"].get("service"), "oft.v1.JobService")
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        self.assertEqual(ports, {"grpc": 50051, "http": 8000, "metrics": 9464})
        sel = dep["spec"]["selector"]["matchLabels"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        for k, v in sel.items():
            self.assertEqual(labels.get(k), v, "selector does not match the pod labels")

    def test_deployment_volumes(self):
        _, pod, c = self.container()
        vols = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
        pvc = self.one("PersistentVolumeClaim")["metadata"]["name"]
        self.assertIn("/data", mounts, "--data_dir=/data is not mounted")
        self.assertEqual(vols[mounts["/data"]]["persistentVolumeClaim"]["claimName"], pvc)
        secret = self.one("Secret")
        keyfile = [a.split("=", 1)[1] for a in c["args"] if a.startswith("--api_keys_file=")]
        self.assertEqual(len(keyfile), 1, "no --api_keys_file flag")
        d, fname = os.path.split(keyfile[0])
        self.assertIn(d, mounts, f"{d} (API keys) is not mounted")
        self.assertEqual(vols[mounts[d]]["secret"]["secretName"], secret["metadata"]["name"])
        self.assertIn(fname, secret.get("stringData", {}) or secret.get("data", {}))
        for line in (secret.get("stringData") or {}).get(fname, "").splitlines():
            if line.strip() and not line.lstrip().startswith("#"):
                self.assertEqual(len(line.split()), 2, f"api keys line not 'TENANT KEY': {line}")

    def test_args_variables_come_from_configmap(self):
        _, _, c = self.container()
        cm = self.one("ConfigMap")
        self.assertIn(cm["metadata"]["name"], [e["configMapRef"]["name"] for e in c["envFrom"]])
        used = set(re.findall(r"\$\(([A-Z0-9_]+)\)", " ".join(c["args"])))
        self.assertTrue(used)
        self.assertEqual(used - set(cm["data"]), set(), "args use variables the ConfigMap lacks")
        for a in c["args"]:
            self.assertRegex(a, r"^--[a-z_]+=", f"flag not in --name=value form: {a}")

    def test_services(self):
        _, _, c = self.container()
        pod_labels = self.one("Deployment")["spec"]["template"]["metadata"]["labels"]
        names = {p["name"] for p in c["ports"]}
        ports = set()
        for s in self.by_kind["Service"]:
            for k, v in s["spec"]["selector"].items():
                self.assertEqual(pod_labels.get(k), v)
            for p in s["spec"]["ports"]:
                self.assertIn(p["targetPort"], names)
                ports.add(p["port"])
        self.assertTrue({50051, 8000, 9464} <= ports, f"Services expose {ports}")

    def test_kubectl_kustomize_renders(self):
        kubectl = shutil.which("kubectl")
        if not kubectl:
            self.skipTest("kubectl not installed")
        for overlay in ("base", "tls"):
            out = subprocess.run([kubectl, "kustomize", path("deploy", "k8s", overlay)],
                                 capture_output=True, text=True, timeout=120)
            self.assertEqual(out.returncode, 0, f"kubectl kustomize {overlay}: {out.stderr}")
            docs = [d for d in yaml.safe_load_all(out.stdout) if d]
            dep = [d for d in docs if d["kind"] == "Deployment"][0]
            c = dep["spec"]["template"]["spec"]["containers"][0]
            if overlay == "tls":
                self.assertIn("--tls_cert=/etc/oft/tls/tls.crt", c["args"])
                self.assertIn("--tls_key=/etc/oft/tls/tls.key", c["args"])
                mounts = {m["mountPath"] for m in c["volumeMounts"]}
                self.assertIn("/etc/oft/tls", mounts)


class TrainManifestsTest(unittest.TestCase):
    """deploy/k8s/train: an Indexed Job of oft_train ranks with torchrun's environment,
    rank 0 reachable through a headless Service, on an RWX volume (issue 12)."""

    @classmethod
    def setUpClass(cls):
        cls.dir = path("deploy", "k8s", "train")
        cls.docs = load_k8s_docs(cls.dir)
        cls.by_kind = {}
        for f, d in cls.docs:
            cls.by_kind.setdefault(d["kind"], []).append(d)

    def one(self, kind):
        items = self.by_kind.get(kind, [])
        self.assertEqual(len(items), 1, f"expected exactly one {kind} in deploy/k8s/train")
        return items[0]

    def test_kustomization_lists_every_file(self):
        with open(os.path.join(self.dir, "kustomization.yaml")) as fh:
            k = yaml.safe_load(fh)
        present = {f for f in os.listdir(self.dir) if f.endswith(".yaml") and f != "kustomization.yaml"}
        self.assertEqual(set(k["resources"]), present)

    def test_indexed_job_runs_oft_train_ranks_with_torchrun_env(self):
        job = self.one("Job")
        spec = job["spec"]
        self.assertEqual(spec["completionMode"], "Indexed")
        world = spec["completions"]
        self.assertEqual(spec["parallelism"], world, "all ranks must run at once")
        pod = spec["template"]["spec"]
        svc = self.one("Service")
        self.assertEqual(pod["subdomain"], svc["metadata"]["name"])
        c = pod["containers"][0]
        self.assertTrue(c["command"][0].endswith("/oft_train"), c["command"])
        env = {e["name"]: e for e in c["env"]}
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                     "MASTER_PORT"):
            self.assertIn(name, env, f"the rank's environment lacks {name}")
        self.assertIn("job-completion-index", env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"])
        self.assertEqual(int(env["WORLD_SIZE"]["value"]), world, "WORLD_SIZE != completions")
        name = job["metadata"]["name"]
        self.assertEqual(env["MASTER_ADDR"]["value"], f"{name}-0.{svc['metadata']['name']}",
                         "MASTER_ADDR must be rank 0's pod through the headless Service")
        port = int(env["MASTER_PORT"]["value"])
        self.assertIn(port, [p["port"] for p in svc["spec"]["ports"]])
        args = " ".join(c["args"])
        for flag in ("--model_dir=/shared", "--train=/shared", "--checkpoint_dir=/shared",
                     "--out=/shared"):
            self.assertIn(flag, args, f"{flag}... must be on the shared volume")

    def test_headless_service_and_shared_volume(self):
        svc = self.one("Service")
        self.assertEqual(svc["spec"]["clusterIP"], "None")
        self.assertEqual(svc["spec"]["selector"], {"job-name": self.one("Job")["metadata"]["name"]})
        pvc = self.one("PersistentVolumeClaim")
        self.assertIn("ReadWriteMany", pvc["spec"]["accessModes"])
        pod = self.one("Job")["spec"]["template"]["spec"]
        claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"]]
        self.assertEqual(claims, [pvc["metadata"]["name"]])
        mounts = [m["mountPath"] for m in pod["containers"][0]["volumeMounts"]]
        self.assertEqual(mounts, ["/shared"])

    def test_kubectl_kustomize_renders(self):
        kubectl = shutil.which("kubectl")
        if not kubectl:
            self.skipTest("kubectl not installed")
        out = subprocess.run([kubectl, "kustomize", self.dir], capture_output=True, text=True)
        self.assertEqual(out.returncode, 0, f"kubectl kustomize train: {out.stderr}")


class PrometheusFilesTest(unittest.TestCase):
    def test_config_and_rules(self):
        with open(path("deploy", "prometheus", "prometheus.yml")) as fh:
            cfg = yaml.safe_load(fh)
        self.assertTrue(cfg["scrape_configs"])
        for rf in cfg["rule_files"]:
            self.assertTrue(os.path.exists(path("deploy", "prometheus", rf)), rf)
        with open(path("deploy", "prometheus", "alerts.yml")) as fh:
            rules = yaml.safe_load(fh)
        alerts = {r["alert"]: r for g in rules["groups"] for r in g["rules"] if "alert" in r}
        for a in REQUIRED_ALERTS:
            self.assertIn(a, alerts)
        self.assertEqual(alerts["OftQueueDepthHigh"]["for"], "15m")
        for name, r in alerts.items():
            for m in METRIC_RE.findall(r["expr"]):
                self.assertIsNotNone(exported_series(m), f"alert {name} queries unknown {m}")


class DashboardTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        with open(path("deploy", "grafana", "oftv2-dashboard.json")) as fh:
            cls.dash = json.load(fh)

    def all_panels(self):
        out = []
        for p in self.dash["panels"]:
            out.append(p)
            out.extend(p.get("panels", []))
        return out

    def test_dashboard_shape(self):
        d = self.dash
        for key in ("title", "uid", "panels", "schemaVersion", "templating", "time"):
            self.assertIn(key, d)
        ids = [p["id"] for p in self.all_panels()]
        self.assertEqual(len(ids), len(set(ids)), "duplicate panel ids")
        for p in self.all_panels():
            g = p["gridPos"]
            self.assertTrue(0 <= g["x"] and g["x"] + g["w"] <= 24, f"panel {p['title']} width")
            if p["type"] != "row":
                self.assertTrue(p["targets"], f"panel {p['title']} has no query")
                refs = [t["refId"] for t in p["targets"]]
                self.assertEqual(len(refs), len(set(refs)))

    def test_every_metric_exported_and_required_ones_shown(self):
        used = set()
        exprs = [t["expr"] for p in self.all_panels() for t in p.get("targets", [])]
        exprs += [v["definition"] for v in self.dash["templating"]["list"] if "definition" in v]
        for e in exprs:
            self.assertEqual(e.count("("), e.count(")"), f"unbalanced parentheses: {e}")
            for m in METRIC_RE.findall(e):
                fam = exported_series(m)
                self.assertIsNotNone(fam, f"dashboard queries {m}, which the server does not export")
                if CONTRACT_METRICS[fam] == "histogram":
                    self.assertTrue(m.endswith("_bucket") or m.endswith("_sum") or
                                    m.endswith("_count"), f"histogram {m} queried without suffix")
                used.add(fam)
        missing = [m for m in DASHBOARD_REQUIRED if m not in used]
        self.assertEqual(missing, [], "dashboard lacks panels for these metrics")

    def test_contract_matches_server_metrics(self):
        src = path("server", "metrics", "metrics.cc")
        if not os.path.exists(src):
            self.skipTest("server/metrics/metrics.cc not present")
        with open(src) as fh:
            names = set(re.findall(r'\.Name\("(oft_[a-z0-9_]+)"\)', fh.read()))
        self.assertEqual(names, set(CONTRACT_METRICS),
                         "server/metrics/metrics.cc and the deploy/ metric list differ")


class DockerfileTest(unittest.TestCase):
    def test_stages_and_entrypoint(self):
        with open(path("Dockerfile")) as fh:
            text = fh.read()
        froms = re.findall(r"^FROM\s+(\S+)", text, re.M)
        self.assertEqual(len(froms), 2, "expected a build and a runtime stage")
        self.assertRegex(froms[0], r"^nvidia/cuda:.*devel")
        self.assertRegex(froms[1], r"^nvidia/cuda:.*runtime")
        m = re.search(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.M)
        self.assertIsNotNone(m, "no exec-form ENTRYPOINT")
        ep = json.loads(m.group(1))
        self.assertTrue(ep[0].endswith("/oft_server"), ep)
        for flag in ("--listen=0.0.0.0:50051", "--http_listen=0.0.0.0:8000", "--metrics_listen=0.0.0.0:9464",
                     "--data_dir=/data"):
            self.assertIn(flag, ep)
        self.assertIn("oftctl", text)
        self.assertIn("models/default", text)
        # Jobs train in oft_train_worker processes by default (--job_isolation=process); the
        # server finds the worker next to its own binary, so both land in one bin directory.
        self.assertFalse([a for a in ep if a.startswith("--job_isolation")], ep)
        self.assertRegex(text, r"--target[^\n]*\boft_server\b[^\n]*\boft_train_worker\b|"
                               r"--target[^\n]*\boft_train_worker\b[^\n]*\boft_server\b")
        cp = re.search(r"^\s*cp\s+([^;\n]*)\s(\S+)/;", text, re.M)
        self.assertIsNotNone(cp, "no cp of the binaries into one directory")
        self.assertIn("build/server/oft_server", cp.group(1).split())
        self.assertIn("build/tools/oft_train_worker", cp.group(1).split())
        self.assertRegex(text, r"COPY --from=\S+ " + re.escape(cp.group(2)) + r" " + re.escape(os.path.dirname(ep[0])) + r"\s")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: deploy_manifests_test.py REPO_ROOT")
    ROOT = os.path.abspath(sys.argv.pop(1))
    unittest.main(verbosity=2)
