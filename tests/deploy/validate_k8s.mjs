#!/usr/bin/env node
// Checks the Kubernetes manifests of deploy/k8s: renders base and every overlay with
// `kubectl kustomize`, validates each object against the Kubernetes / prometheus-operator schemas
// (npm kubernetes-models, @kubernetes-models/prometheus-operator) plus an unknown-field check, and
// cross-checks the objects against each other (selectors, ports, ConfigMaps, probes, the mesh
// wiring and expert placement). With a BIN_DIR it also checks every container's flags against the
// binary's --help and runs the expert entrypoint for every ordinal.
//
// Usage: validate_k8s.mjs ROOT KUBECTL [BIN_DIR]
// Exit: 0 pass, 1 fail, 77 skipped (kubectl or node_modules missing; the reason is printed).
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync, chmodSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const SKIP = 77;
const here = dirname(fileURLToPath(import.meta.url));
const [root, kubectl, binDir] = process.argv.slice(2);
if (!root || !kubectl) {
  console.error("usage: validate_k8s.mjs ROOT KUBECTL [BIN_DIR]");
  process.exit(2);
}
if (!existsSync(kubectl) && spawnSync(kubectl, ["version", "--client"]).status !== 0) {
  console.log(`SKIP: kubectl not found (${kubectl}); it renders the kustomize overlays`);
  process.exit(SKIP);
}
const nodeModules = join(here, "node_modules");
if (!existsSync(join(nodeModules, "kubernetes-models")) || !existsSync(join(nodeModules, "yaml"))) {
  console.log(`SKIP: ${nodeModules} is missing: run scripts/setup.sh (npm ci in tests/deploy)`);
  process.exit(SKIP);
}
const YAML = (await import("yaml")).default;
const { unknownFields } = await import("./strict_fields.mjs");

const failures = [];
const fail = (where, msg) => failures.push(`${where}: ${msg}`);

// --- rendering -----------------------------------------------------------------------------------
const k8sDir = join(root, "deploy", "k8s");
const overlays = ["base", ...readdirSync(join(k8sDir, "overlays")).map((o) => `overlays/${o}`)];
const rendered = {};
for (const o of overlays) {
  const res = spawnSync(kubectl, ["kustomize", join(k8sDir, o)], { encoding: "utf8" });
  if (res.status !== 0) {
    fail(o, `kubectl kustomize failed:\n${res.stderr}`);
    continue;
  }
  rendered[o] = YAML.parseAllDocuments(res.stdout).map((d) => d.toJS()).filter(Boolean);
}

// --- schema validation ---------------------------------------------------------------------------
async function modelFor(apiVersion, kind) {
  const [group, version] = apiVersion.includes("/") ? apiVersion.split("/") : ["", apiVersion];
  const candidates = group === ""
    ? [join(nodeModules, "kubernetes-models", version, kind)]
    : [join(nodeModules, "kubernetes-models", group, version, kind),
       join(nodeModules, "@kubernetes-models", "prometheus-operator", group, version, kind)];
  for (const c of candidates) {
    if (existsSync(c + ".mjs")) {
      const mod = await import(c + ".mjs");
      return { Model: mod[kind], dts: c + ".d.ts" };
    }
  }
  return null;
}

for (const [o, objs] of Object.entries(rendered)) {
  for (const obj of objs) {
    const where = `${o} ${obj.kind}/${obj.metadata?.name}`;
    const m = await modelFor(obj.apiVersion ?? "", obj.kind ?? "");
    if (!m) {
      fail(where, `no schema for ${obj.apiVersion} ${obj.kind}`);
      continue;
    }
    try {
      new m.Model(obj).validate();
    } catch (e) {
      fail(where, `schema: ${e.message}`);
    }
    for (const u of unknownFields(obj, m.dts)) fail(where, u);
  }
}

// --- cross-checks --------------------------------------------------------------------------------
const matches = (selector, labels) =>
  selector && Object.keys(selector).length > 0 &&
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);
const podSpecOf = (w) => w.spec.template.spec;
const containersOf = (w) => [...(podSpecOf(w).initContainers ?? []), ...podSpecOf(w).containers];

// The mesh: which workload runs which binary, and the flags wired between them.
const EXPERT_SPEC_RE = /^(\d+(-\d+)?)(,\d+(-\d+)?)*$/;
function parseRanges(s, where) {
  const out = new Set();
  for (const part of s.split(",")) {
    const [a, b] = part.split("-").map(Number);
    for (let i = a; i <= (b ?? a); i++) out.add(i);
  }
  return out;
}
// Returns Map(layer|"all" -> Set(expert)) for an --experts SPEC.
function parseExpertSpec(spec, where) {
  const out = new Map();
  for (const group of spec.split(";")) {
    const [layers, experts] = group.includes(":") ? group.split(":") : ["all", group];
    if (!EXPERT_SPEC_RE.test(experts) || (layers !== "all" && !EXPERT_SPEC_RE.test(layers))) {
      fail(where, `bad --experts SPEC "${spec}"`);
      return out;
    }
    const ex = parseRanges(experts);
    for (const e of ex) if (e > 15) fail(where, `expert ${e} out of range 0-15 in "${spec}"`);
    for (const l of layers === "all" ? ["all"] : parseRanges(layers)) {
      out.set(l, new Set([...(out.get(l) ?? []), ...ex]));
    }
  }
  return out;
}

function envOf(container, objs, where) {
  const env = {};
  for (const ef of container.envFrom ?? []) {
    const cm = objs.find((x) => x.kind === "ConfigMap" && x.metadata.name === ef.configMapRef?.name);
    if (!cm) fail(where, `envFrom ConfigMap ${ef.configMapRef?.name} not rendered`);
    else Object.assign(env, cm.data);
  }
  for (const e of container.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    const ref = e.valueFrom?.configMapKeyRef;
    if (ref) {
      const cm = objs.find((x) => x.kind === "ConfigMap" && x.metadata.name === ref.name);
      if (!cm || !(ref.key in (cm.data ?? {}))) fail(where, `env ${e.name}: ConfigMap ${ref.name} key ${ref.key} missing`);
      else env[e.name] = cm.data[ref.key];
    }
    if (e.valueFrom?.fieldRef) env[e.name] = `<${e.valueFrom.fieldRef.fieldPath}>`;
  }
  return env;
}

// Container args with $(VAR) expanded the way the kubelet does.
function expandedArgs(container, env, where) {
  return (container.args ?? []).map((a) => a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v) => {
    if (!(v in env)) fail(where, `args use $(${v}), which no env or envFrom defines`);
    return env[v] ?? m;
  }));
}
function flagValue(args, flag) {
  const i = args.indexOf(flag);
  if (i >= 0) return args[i + 1];
  const eq = args.find((a) => a.startsWith(flag + "="));
  return eq?.slice(flag.length + 1);
}

const containerRuns = [];  // {overlay, where, binary, args, env, implied}
for (const [o, objs] of Object.entries(rendered)) {
  const byKind = (k) => objs.filter((x) => x.kind === k);
  const workloads = [...byKind("Deployment"), ...byKind("StatefulSet")];
  const services = byKind("Service");
  const named = (k, n) => objs.find((x) => x.kind === k && x.metadata.name === n);

  for (const w of workloads) {
    const where = `${o} ${w.kind}/${w.metadata.name}`;
    const tmplLabels = w.spec.template.metadata?.labels;
    if (!matches(w.spec.selector.matchLabels, tmplLabels)) fail(where, "selector does not match the pod template labels");
    if (w.kind === "StatefulSet") {
      const svc = named("Service", w.spec.serviceName);
      if (!svc) fail(where, `serviceName ${w.spec.serviceName} has no Service`);
      else if (svc.spec.clusterIP !== "None") fail(where, `Service ${svc.metadata.name} must be headless`);
    }
    const pod = podSpecOf(w);
    if (!pod.securityContext?.runAsNonRoot) fail(where, "pod securityContext.runAsNonRoot is not true");
    const volumes = new Map((pod.volumes ?? []).map((v) => [v.name, v]));
    for (const v of volumes.values()) {
      if (v.configMap && !named("ConfigMap", v.configMap.name)) fail(where, `volume ${v.name}: ConfigMap ${v.configMap.name} not rendered`);
      if (v.persistentVolumeClaim && !named("PersistentVolumeClaim", v.persistentVolumeClaim.claimName)) {
        fail(where, `volume ${v.name}: PVC ${v.persistentVolumeClaim.claimName} not rendered`);
      }
    }
    for (const c of containersOf(w)) {
      const cw = `${where} container ${c.name}`;
      const isInit = (pod.initContainers ?? []).includes(c);
      for (const vm of c.volumeMounts ?? []) {
        if (!volumes.has(vm.name)) fail(cw, `volumeMount ${vm.name} has no volume`);
        if (!isInit && vm.mountPath === "/models/phimoe" && !vm.readOnly) fail(cw, "the model must be mounted read-only");
      }
      if (!c.securityContext || c.securityContext.allowPrivilegeEscalation !== false) fail(cw, "allowPrivilegeEscalation must be false");
      if (!c.resources?.requests) fail(cw, "no resource requests");
      if (!c.command?.length) fail(cw, "no command: the image has no entrypoint for it");
      const env = envOf(c, objs, cw);
      const args = expandedArgs(c, env, cw);
      containerRuns.push({ overlay: o, where: cw, workload: w, container: c, binary: c.command?.[0], args, env, isInit });
      if (isInit) continue;
      const ports = new Map((c.ports ?? []).map((p) => [p.name, p.containerPort]));
      const portNums = new Set(ports.values());
      for (const probe of ["startupProbe", "livenessProbe", "readinessProbe"]) {
        const p = c[probe];
        if (!p) { fail(cw, `no ${probe}`); continue; }
        const port = p.grpc?.port ?? p.tcpSocket?.port ?? p.httpGet?.port;
        if (!portNums.has(port) && !ports.has(port)) fail(cw, `${probe} port ${port} is not a container port`);
      }
      if (!c.readinessProbe?.grpc) fail(cw, "readinessProbe must use grpc.health.v1 (grpc:)");
      if (!c.startupProbe?.grpc) fail(cw, "startupProbe must use grpc.health.v1 (grpc:)");
      if (!ports.has("grpc") || !ports.has("metrics")) fail(cw, "needs container ports named grpc and metrics");
      const listen = flagValue(args, "--listen");
      if (listen && Number(listen.split(":").pop()) !== ports.get("grpc")) fail(cw, `--listen ${listen} is not the grpc port ${ports.get("grpc")}`);
      const metrics = flagValue(args, "--metrics-listen");
      if (Number(metrics?.split(":").pop()) !== ports.get("metrics")) fail(cw, `--metrics-listen ${metrics} is not the metrics port`);
      const http = flagValue(args, "--http-listen");
      if (http && Number(http.split(":").pop()) !== ports.get("http")) fail(cw, `--http-listen ${http} is not the http port`);
      const startup = c.startupProbe;
      if (startup && (startup.periodSeconds ?? 10) * (startup.failureThreshold ?? 3) < 60) {
        fail(cw, "startupProbe allows under 60 s: too short for loading a model");
      }
    }
  }

  for (const svc of services) {
    const where = `${o} Service/${svc.metadata.name}`;
    const pods = workloads.filter((w) => matches(svc.spec.selector, w.spec.template.metadata?.labels));
    if (pods.length === 0) { fail(where, "selects no workload"); continue; }
    for (const p of svc.spec.ports) {
      if (typeof p.targetPort === "string" &&
          !pods.every((w) => podSpecOf(w).containers.some((c) => (c.ports ?? []).some((cp) => cp.name === p.targetPort)))) {
        fail(where, `targetPort ${p.targetPort} is not a named port of the selected pods`);
      }
    }
  }
  for (const pdb of byKind("PodDisruptionBudget")) {
    if (!workloads.some((w) => matches(pdb.spec.selector.matchLabels, w.spec.template.metadata?.labels))) {
      fail(`${o} PodDisruptionBudget/${pdb.metadata.name}`, "selects no workload");
    }
  }
  for (const w of workloads) {
    if (!byKind("PodDisruptionBudget").some((p) => matches(p.spec.selector.matchLabels, w.spec.template.metadata?.labels))) {
      fail(`${o} ${w.kind}/${w.metadata.name}`, "no PodDisruptionBudget");
    }
  }
  const monitors = byKind("ServiceMonitor");
  if (monitors.length === 0) fail(o, "no ServiceMonitor");
  for (const svc of services) {
    const sm = monitors.find((m) => matches(m.spec.selector.matchLabels, svc.metadata.labels));
    if (!sm) fail(`${o} Service/${svc.metadata.name}`, "no ServiceMonitor selects it");
    else for (const ep of sm.spec.endpoints) {
      if (!svc.spec.ports.some((p) => p.name === ep.port)) fail(`${o} Service/${svc.metadata.name}`, `has no port ${ep.port} for ServiceMonitor ${sm.metadata.name}`);
    }
  }
  const hpas = byKind("HorizontalPodAutoscaler");
  if (hpas.length === 0) fail(o, "no autoscaler");
  const adapter = readFileSync(join(k8sDir, "prometheus-adapter-values.yaml"), "utf8");
  for (const h of hpas) {
    const where = `${o} HorizontalPodAutoscaler/${h.metadata.name}`;
    const t = named(h.spec.scaleTargetRef.kind, h.spec.scaleTargetRef.name);
    if (!t) fail(where, "scaleTargetRef names no rendered workload");
    for (const m of h.spec.metrics ?? []) {
      const name = m.external?.metric?.name ?? m.pods?.metric?.name;
      if (name !== "phimoe_gateway_requests_waiting") fail(where, `metric ${name} is not the gateway's queue depth`);
      if (m.type === "External" && !adapter.includes(`as: ${name}`)) fail(where, `prometheus-adapter-values.yaml serves no external metric ${name}`);
    }
  }

  // Mesh wiring: the node lists and the placement agree with the workloads.
  const expert = named("StatefulSet", "phimoe-expert");
  const attention = named("StatefulSet", "phimoe-attention");
  const gateway = named("Deployment", "phimoe-gateway");
  if (!expert || !attention || !gateway) { fail(o, "expected StatefulSets phimoe-expert, phimoe-attention and Deployment phimoe-gateway"); continue; }
  const runOf = (w) => containerRuns.find((r) => r.overlay === o && r.workload === w && !r.isInit);
  const nodeList = (w, i) => `${w.metadata.name}-${i}.${w.spec.serviceName}:${runOf(w).container.ports.find((p) => p.name === "grpc").containerPort}`;
  const expertReplicas = expert.spec.replicas ?? 1;
  const wantExperts = Array.from({ length: expertReplicas }, (_, i) => nodeList(expert, i)).join(",");
  const gotExperts = flagValue(runOf(attention).args, "--expert-nodes");
  if (gotExperts !== wantExperts) fail(o, `attention --expert-nodes is "${gotExperts}", the expert StatefulSet gives "${wantExperts}"`);
  const attMax = Math.max(attention.spec.replicas ?? 1,
    ...hpas.filter((h) => h.spec.scaleTargetRef.name === attention.metadata.name).map((h) => h.spec.maxReplicas));
  const wantAtt = Array.from({ length: attMax }, (_, i) => nodeList(attention, i)).join(",");
  const gotAtt = flagValue(runOf(gateway).args, "--attention-nodes");
  if (gotAtt !== wantAtt) fail(o, `gateway --attention-nodes is "${gotAtt}", want every attention replica up to the autoscaler's max: "${wantAtt}"`);
  const placementVol = (podSpecOf(expert).volumes ?? []).find((v) => v.name === "placement");
  const placement = placementVol && named("ConfigMap", placementVol.configMap.name);
  if (!placement) { fail(o, "expert StatefulSet mounts no placement ConfigMap"); continue; }
  const keys = Object.keys(placement.data ?? {}).sort();
  const wantKeys = Array.from({ length: expertReplicas }, (_, i) => `expert-${i}`).sort();
  if (keys.join() !== wantKeys.join()) fail(o, `placement keys ${keys} do not match the ${expertReplicas} expert replicas (${wantKeys})`);
  const cover = new Map();
  for (const k of keys) {
    for (const [l, ex] of parseExpertSpec(placement.data[k], `${o} placement ${k}`)) {
      cover.set(l, new Set([...(cover.get(l) ?? []), ...ex]));
    }
  }
  const all = cover.get("all") ?? new Set();
  const layers = [...cover.keys()].filter((l) => l !== "all");
  const maxLayer = layers.length ? Math.max(...layers) : -1;
  for (const l of layers.length ? Array.from({ length: maxLayer + 1 }, (_, i) => i) : ["all"]) {
    const have = new Set([...all, ...(cover.get(l) ?? [])]);
    const missing = Array.from({ length: 16 }, (_, e) => e).filter((e) => !have.has(e));
    if (missing.length) fail(o, `placement leaves experts ${missing} of layer ${l} on no node`);
  }
  if (o.endsWith("gpu")) {
    for (const w of [expert, attention]) {
      const c = runOf(w).container;
      if (c.resources?.limits?.["nvidia.com/gpu"] === undefined) fail(`${o} ${w.metadata.name}`, "no nvidia.com/gpu limit");
      if (flagValue(runOf(w).args, "--device") !== "cuda") fail(`${o} ${w.metadata.name}`, "not --device cuda");
      if (!podSpecOf(w).tolerations?.length || !podSpecOf(w).nodeSelector) fail(`${o} ${w.metadata.name}`, "no GPU node selector / tolerations");
    }
  }
  if (o.endsWith("cpu-demo")) {
    for (const w of [expert, attention, gateway]) {
      const init = (podSpecOf(w).initContainers ?? []).find((c) => c.command?.[0] === "phimoe-make-checkpoint");
      if (!init) fail(`${o} ${w.metadata.name}`, "no make-checkpoint initContainer");
      else if (flagValue(init.args, "--preset") !== "tiny" || flagValue(init.args, "--out") !== "/models/phimoe") fail(`${o} ${w.metadata.name}`, "initContainer must write the tiny preset to /models/phimoe");
      if (!podSpecOf(w).volumes.find((v) => v.name === "model")?.emptyDir) fail(`${o} ${w.metadata.name}`, "model volume is not an emptyDir");
    }
  }
}

// --- the expert entrypoint, for every ordinal of every overlay ----------------------------------
const entrypoint = join(root, "deploy", "docker", "expert-entrypoint.sh");
const work = mkdtempSync(join(tmpdir(), "phimoe-deploy-"));
try {
  const stub = join(work, "stub-expert-node");
  writeFileSync(stub, "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done\n");
  chmodSync(stub, 0o755);
  for (const [o, objs] of Object.entries(rendered)) {
    const expert = objs.find((x) => x.kind === "StatefulSet" && x.metadata.name === "phimoe-expert");
    const vol = expert && (podSpecOf(expert).volumes ?? []).find((v) => v.name === "placement");
    const cm = vol && objs.find((x) => x.kind === "ConfigMap" && x.metadata.name === vol.configMap.name);
    if (!cm) continue;
    const dir = join(work, o.replace("/", "_"));
    execFileSync("mkdir", ["-p", dir]);
    for (const [k, v] of Object.entries(cm.data)) writeFileSync(join(dir, k), v);
    for (let i = 0; i <= (expert.spec.replicas ?? 1); i++) {
      const res = spawnSync("sh", [entrypoint, "--model", "/m"], {
        encoding: "utf8",
        env: { PATH: process.env.PATH, POD_NAME: `phimoe-expert-${i}`, PHIMOE_PLACEMENT_DIR: dir, PHIMOE_EXPERT_NODE_BIN: stub },
      });
      const where = `${o} expert-entrypoint ordinal ${i}`;
      if (i === (expert.spec.replicas ?? 1)) {  // one past the last replica: no placement
        if (res.status !== 2) fail(where, `expected exit 2 for an ordinal without placement, got ${res.status}`);
        continue;
      }
      const args = res.stdout.trim().split("\n");
      if (res.status !== 0 || flagValue(args, "--experts") !== cm.data[`expert-${i}`] ||
          flagValue(args, "--node-name") !== `phimoe-expert-${i}` || flagValue(args, "--model") !== "/m") {
        fail(where, `unexpected run: exit ${res.status}, args ${JSON.stringify(args)}, stderr ${res.stderr}`);
      }
    }
  }

  // --- flags against the binaries ----------------------------------------------------------------
  if (binDir) {
    // Flags issue 6 adds to binaries that exist already; tolerated (with a note) until they land.
    const PENDING = new Set();
    const IMPLIED = { "phimoe-expert-entrypoint": { binary: "phimoe-expert-node", args: ["--experts", "0-15", "--node-name", "x"] } };
    const helpCache = new Map();
    const checked = new Set();
    for (const r of containerRuns) {
      if (!r.binary) continue;
      const implied = IMPLIED[r.binary];
      const binary = implied?.binary ?? r.binary;
      const path = join(binDir, binary);
      if (!existsSync(path)) {
        if (!checked.has(binary)) console.log(`NOTE: ${binary} is not built in ${binDir}: its flags are not checked`);
        checked.add(binary);
        continue;
      }
      checked.add(binary);
      if (!helpCache.has(binary)) {
        const res = spawnSync(path, ["--help"], { encoding: "utf8" });
        const text = res.stdout + res.stderr;
        helpCache.set(binary, new Set([...text.matchAll(/^\s+(--[a-z0-9][a-z0-9-]*)/gm)].map((m) => m[1])));
      }
      const known = helpCache.get(binary);
      for (const a of [...(implied?.args ?? []), ...r.args]) {
        if (!a.startsWith("--")) continue;
        const flag = a.split("=")[0];
        if (known.has(flag)) continue;
        if (PENDING.has(flag)) {
          const note = `NOTE: ${binary} does not list ${flag} yet (issue 6 adds it)`;
          if (!checked.has(note)) console.log(note);
          checked.add(note);
          continue;
        }
        fail(r.where, `${binary} has no flag ${flag} (its --help lists ${[...known].join(" ")})`);
      }
    }
    // The demo's initContainer must really produce a checkpoint.
    const mk = join(binDir, "phimoe-make-checkpoint");
    const init = containerRuns.find((r) => r.binary === "phimoe-make-checkpoint");
    if (init && existsSync(mk)) {
      const out = join(work, "tiny");
      const args = init.args.map((a, i) => (init.args[i - 1] === "--out" ? out : a));
      const res = spawnSync(mk, args, { encoding: "utf8", timeout: 60000 });
      if (res.status !== 0 || !existsSync(join(out, "config.json"))) fail(init.where, `phimoe-make-checkpoint ${args.join(" ")} failed: ${res.stderr}`);
    }
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

const nObjects = Object.values(rendered).reduce((n, objs) => n + objs.length, 0);
if (failures.length) {
  console.log(failures.map((f) => `FAIL ${f}`).join("\n"));
  console.log(`validate_k8s: ${failures.length} problem(s) in ${Object.keys(rendered).length} renderings`);
  process.exit(1);
}
console.log(`validate_k8s: ${nObjects} objects in ${Object.keys(rendered).join(", ")}: all valid`);
