#!/usr/bin/env node
// Static checks of deploy/ that need only node (no npm packages):
//   dashboard   deploy/grafana/phimoe.json: valid JSON, equal to what gen_dashboard.mjs prints,
//               datasource template variable used by every panel, the four rows, unique ids, and
//               every PromQL metric is a family of metric_names.txt or a recording rule.
//   rules       deploy/prometheus/rules.yaml: every expr uses only those names; every family of
//               metric_names.txt is used by the dashboard or the rules.
//   dockerfiles deploy/docker/Dockerfile{,.cuda}: multi-stage; the build stage installs
//               scripts/setup.sh's packages and builds with scripts/build.sh; the final stage is a
//               slim/runtime base, installs no compiler, runs as a non-root USER, and copies every
//               binary that the manifests run.
// Usage: check_static.mjs ROOT dashboard|rules|dockerfiles
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const [root, what] = process.argv.slice(2);
const failures = [];
const fail = (msg) => failures.push(msg);
const read = (p) => readFileSync(join(root, p), "utf8");

// --- metric names --------------------------------------------------------------------------------
// metric_names.txt: "<family> <counter|gauge|histogram>" per line.
const families = new Map(read("tests/deploy/metric_names.txt").split("\n")
  .map((l) => l.replace(/#.*/, "").trim()).filter(Boolean).map((l) => l.split(/\s+/)));
const seriesNames = new Map();  // series name -> family
for (const [f, type] of families) {
  for (const s of type === "histogram" ? [`${f}_bucket`, `${f}_sum`, `${f}_count`] : [f]) seriesNames.set(s, f);
}
// Rule files are YAML, read here without a YAML library: `record:` values and `expr:` values,
// single-line or block scalars (`expr: |` followed by more-indented lines).
function ruleExprs(text) {
  const lines = text.split("\n");
  const out = [];
  const records = [];
  for (let i = 0; i < lines.length; i++) {
    const rec = lines[i].match(/^\s*-?\s*record:\s*(\S+)/);
    if (rec) records.push(rec[1]);
    const m = lines[i].match(/^(\s*)-?\s*expr:\s*(.*)$/);
    if (!m) continue;
    if (m[2] === "|" || m[2] === ">") {
      const ind = m[1].length;
      const body = [];
      while (i + 1 < lines.length && (lines[i + 1].trim() === "" || lines[i + 1].search(/\S/) > ind + 2)) body.push(lines[++i]);
      out.push(body.join("\n"));
    } else {
      out.push(m[2].replace(/^'(.*)'$/, "$1"));
    }
  }
  return { exprs: out, records };
}
const rulesText = read("deploy/prometheus/rules.yaml");
const { exprs: ruleExprList, records } = ruleExprs(rulesText);
const known = new Set([...seriesNames.keys(), ...records, "up"]);
const PROMQL_WORDS = new Set(`sum min max avg count stddev stdvar topk bottomk quantile count_values group
  by without on ignoring group_left group_right and or unless bool offset
  rate irate increase delta idelta deriv predict_linear histogram_quantile label_replace label_join
  abs ceil floor round clamp clamp_min clamp_max exp ln log2 log10 sqrt time timestamp vector scalar
  sort sort_desc absent absent_over_time changes resets avg_over_time min_over_time max_over_time
  sum_over_time count_over_time last_over_time quantile_over_time stddev_over_time
  le inf nan`.split(/\s+/));
const used = new Set();
function checkExpr(expr, where) {
  const stripped = expr
    .replace(/"(?:[^"\\]|\\.)*"/g, '""')          // strings
    .replace(/\{[^}]*\}/g, "")                     // label matchers
    .replace(/\[[^\]]*\]/g, "")                    // ranges, subqueries
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, "")  // label lists
    .replace(/\$\w+/g, "");                        // Grafana variables
  for (const m of stripped.matchAll(/[A-Za-z_:][A-Za-z0-9_:]*/g)) {
    const id = m[0];
    if (PROMQL_WORDS.has(id.toLowerCase())) continue;
    if (/^\d/.test(id)) continue;
    if (!known.has(id)) fail(`${where}: unknown metric "${id}" in: ${expr.replace(/\s+/g, " ")}`);
    if (seriesNames.has(id)) used.add(seriesNames.get(id));
    if (records.includes(id)) {  // a recording rule uses the families its expr names
      const i = ruleExprList.findIndex((_, k) => records[k] === id);
      for (const n of (ruleExprList[i] ?? "").matchAll(/phimoe_[a-z_]+/g)) if (seriesNames.has(n[0])) used.add(seriesNames.get(n[0]));
    }
  }
}

function checkDashboard() {
  const path = "deploy/grafana/phimoe.json";
  let d;
  try {
    d = JSON.parse(read(path));
  } catch (e) {
    fail(`${path}: not valid JSON: ${e.message}`);
    return;
  }
  const tmp = mkdtempSync(join(tmpdir(), "phimoe-dash-"));
  try {
    const out = join(tmp, "phimoe.json");
    const res = spawnSync(process.execPath, [join(root, "deploy/grafana/gen_dashboard.mjs"), out], { encoding: "utf8" });
    if (res.status !== 0) fail(`gen_dashboard.mjs failed: ${res.stderr}`);
    else if (readFileSync(out, "utf8") !== read(path)) fail(`${path} differs from what deploy/grafana/gen_dashboard.mjs prints: run it`);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  const vars = d.templating?.list ?? [];
  if (!vars.some((v) => v.name === "datasource" && v.type === "datasource" && v.query === "prometheus")) {
    fail(`${path}: no datasource template variable of type prometheus`);
  }
  const rows = d.panels.filter((p) => p.type === "row").map((p) => p.title);
  for (const want of ["Requests", "Latency", "KV", "Experts"]) {
    if (!rows.some((r) => r.startsWith(want))) fail(`${path}: no row "${want}..." (rows: ${rows})`);
  }
  const ids = new Set();
  for (const p of d.panels) {
    if (ids.has(p.id)) fail(`${path}: duplicate panel id ${p.id}`);
    ids.add(p.id);
    if (p.type === "row") continue;
    if (p.datasource?.uid !== "${datasource}") fail(`${path}: panel "${p.title}" does not use the datasource variable`);
    if (!p.targets?.length) fail(`${path}: panel "${p.title}" has no query`);
    for (const t of p.targets ?? []) {
      if (t.datasource?.uid !== "${datasource}") fail(`${path}: panel "${p.title}" query ${t.refId} does not use the datasource variable`);
      checkExpr(t.expr ?? "", `${path} panel "${p.title}"`);
    }
  }
  if (!d.panels.some((p) => p.type === "heatmap")) fail(`${path}: no heatmap panel`);
  for (const v of vars) if (v.definition) checkExpr(v.definition.replace(/^label_values\(([^,]+),.*\)$/, "$1"), `${path} variable ${v.name}`);
}

function checkRules() {
  if (ruleExprList.length === 0) fail("deploy/prometheus/rules.yaml: no expr found");
  for (const e of ruleExprList) checkExpr(e, "deploy/prometheus/rules.yaml");
  for (const name of records) {
    if (!/^phimoe_(gateway|attention|expert):[a-z0-9_]+:[a-z0-9_]+$/.test(name)) fail(`recording rule ${name}: not level:metric:operation`);
  }
  for (const alert of ["PhimoeQueueGrowing", "PhimoeTimeToFirstTokenHigh", "PhimoeExpertNodeDown", "PhimoeExpertImbalance"]) {
    if (!rulesText.includes(`alert: ${alert}`)) fail(`deploy/prometheus/rules.yaml: no alert ${alert}`);
  }
  const tests = read("deploy/prometheus/rules_test.yaml");
  for (const m of rulesText.matchAll(/alert:\s*(\w+)/g)) {
    if (!tests.includes(`alertname: ${m[1]}`)) fail(`deploy/prometheus/rules_test.yaml: alert ${m[1]} is not tested`);
  }
  // Coverage: the dashboard and the rules together show every family.
  const d = JSON.parse(read("deploy/grafana/phimoe.json"));
  for (const p of d.panels) for (const t of p.targets ?? []) checkExpr(t.expr ?? "", "deploy/grafana/phimoe.json");
  for (const f of families.keys()) if (!used.has(f)) fail(`metric family ${f} appears in neither the dashboard nor the rules`);
}

// --- Dockerfiles ---------------------------------------------------------------------------------
function stages(text) {
  // Joins continuation lines, drops comments, splits at FROM.
  const instrs = text.replace(/\\\n/g, " ").split("\n").map((l) => l.trim()).filter((l) => l && !l.startsWith("#"));
  const out = [];
  for (const l of instrs) {
    const [op, ...rest] = l.split(/\s+/);
    if (op.toUpperCase() === "FROM") out.push({ from: rest.join(" "), instrs: [] });
    else if (out.length) out[out.length - 1].instrs.push({ op: op.toUpperCase(), args: rest.join(" ") });
  }
  return out;
}
function walk(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : [p];
  });
}

function checkDockerfiles() {
  const setup = read("scripts/setup.sh");
  const pkgBlock = setup.match(/PACKAGES=\(([^)]*)\)/);
  // prometheus (promtool) is there for the tests only; the images do not build or run it.
  const TEST_ONLY = new Set(["prometheus"]);
  const packages = pkgBlock ? pkgBlock[1].split(/\s+/).filter((p) => p && !TEST_ONLY.has(p)) : [];
  if (packages.length === 0) fail("scripts/setup.sh: no PACKAGES=( ... ) list found");
  // Binaries the manifests run, from every kustomization folder (text, no YAML library needed).
  const commands = new Set();
  for (const f of walk(join(root, "deploy/k8s")).filter((f) => f.endsWith(".yaml"))) {
    for (const m of readFileSync(f, "utf8").matchAll(/command:\s*\[\s*"?([\w./-]+)"?/g)) commands.add(m[1]);
  }
  if (!commands.has("phimoe-expert-entrypoint")) fail("the expert StatefulSet does not run phimoe-expert-entrypoint");
  const runtimeBinaries = new Set([...commands].map((c) => c.split("/").pop()));
  runtimeBinaries.add("phimoe-expert-node");  // what the entrypoint execs
  const compilers = /^(gcc|g\+\+|cpp|clang|clang\+\+)(-[\d.]+)?$|^(cmake|ninja-build|build-essential|make)$|^cuda-(nvcc|toolkit|compiler)|-dev$/;
  for (const [file, buildBase, runtimeBase] of [
    ["deploy/docker/Dockerfile", /^debian:12\b/, /^debian:12-slim\b/],
    ["deploy/docker/Dockerfile.cuda", /^nvidia\/cuda:\S*devel/, /^nvidia\/cuda:\S*runtime/]]) {
    const text = read(file).replace(/\$\{CUDA_VERSION\}/g, "X");
    const st = stages(text);
    if (st.length < 2) { fail(`${file}: not multi-stage`); continue; }
    const build = st[0];
    const final = st[st.length - 1];
    if (!buildBase.test(build.from)) fail(`${file}: build stage FROM ${build.from}, want ${buildBase}`);
    if (!runtimeBase.test(final.from)) fail(`${file}: final stage FROM ${final.from}, want ${runtimeBase}`);
    const buildRuns = build.instrs.filter((i) => i.op === "RUN").map((i) => i.args).join("\n");
    const installed = new Set((buildRuns.match(/apt-get install[^&;]*/g) ?? []).flatMap((s) => s.split(/\s+/)));
    for (const p of packages) if (!installed.has(p)) fail(`${file}: build stage does not install ${p} (scripts/setup.sh does)`);
    if (!/scripts\/build\.sh/.test(buildRuns)) fail(`${file}: build stage does not build with scripts/build.sh`);
    const finalRuns = final.instrs.filter((i) => i.op === "RUN").map((i) => i.args).join("\n");
    for (const inst of finalRuns.match(/apt-get install[^&;]*/g) ?? []) {
      const bad = inst.split(/\s+/).filter((w) => compilers.test(w));
      if (bad.length) fail(`${file}: final stage installs build tools: ${bad}`);
    }
    if (/COPY\s+--from=\S+\s+\/usr\/bin\/(gcc|g\+\+|cc|c\+\+)/.test(final.instrs.map((i) => `${i.op} ${i.args}`).join("\n"))) {
      fail(`${file}: final stage copies a compiler`);
    }
    const users = final.instrs.filter((i) => i.op === "USER");
    const user = users.length ? users[users.length - 1].args.split(":")[0] : "root";
    if (user === "root" || user === "0" || user === "") fail(`${file}: final stage runs as root (USER ${user})`);
    else if (!/^\d+$/.test(user)) fail(`${file}: USER ${user} is not numeric (Kubernetes runAsNonRoot cannot verify a name)`);
    const copied = new Set(final.instrs.filter((i) => i.op === "COPY").map((i) => i.args.split(/\s+/).pop().split("/").pop()));
    for (const b of runtimeBinaries) if (!copied.has(b)) fail(`${file}: final stage does not copy ${b} (the manifests run it)`);
    for (const i of st.flatMap((s) => s.instrs).filter((i) => i.op === "COPY" && !i.args.includes("--from"))) {
      const src = i.args.split(/\s+/).filter((w) => !w.startsWith("--")).slice(0, -1);
      for (const s of src) {
        if (s === ".") continue;
        try { statSync(join(root, s)); } catch { fail(`${file}: COPY source ${s} does not exist`); }
      }
    }
    if (!/tokenizer/.test(final.instrs.map((i) => i.args).join("\n"))) fail(`${file}: the demo tokenizer is not in the image`);
  }
}

const checks = { dashboard: checkDashboard, rules: checkRules, dockerfiles: checkDockerfiles };
if (!checks[what]) {
  console.error(`usage: check_static.mjs ROOT ${Object.keys(checks).join("|")}`);
  process.exit(2);
}
checks[what]();
if (failures.length) {
  console.log(failures.map((f) => `FAIL ${f}`).join("\n"));
  process.exit(1);
}
console.log(`check_static ${what}: ok`);
