#!/usr/bin/env node
// Writes phimoe.json, the Grafana dashboard of the phimoe mesh. Edit this file, not the JSON:
//   node deploy/grafana/gen_dashboard.mjs [OUT]   (default: phimoe.json beside this file)
// tests/deploy checks that the committed JSON is what this prints. No dependencies.
import { writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const DS = { type: "prometheus", uid: "${datasource}" };
const panels = [];
let nextId = 1;
let y = 0;

function row(title) {
  panels.push({ type: "row", title, id: nextId++, collapsed: false,
                gridPos: { h: 1, w: 24, x: 0, y }, panels: [] });
  y += 1;
}

function panel(type, title, targets, x, { w = 8, h = 8, unit, extra, description } = {}) {
  const p = {
    type, title, id: nextId++, datasource: DS, gridPos: { h, w, x, y },
    targets: targets.map((t, i) => ({ datasource: DS, refId: String.fromCharCode(65 + i), ...t })),
    fieldConfig: { defaults: unit ? { unit } : {}, overrides: [] },
    options: {},
  };
  if (description) p.description = description;
  Object.assign(p, extra ?? {});
  panels.push(p);
  if (x + w >= 24) y += h;
}

const q = (expr, legendFormat) => ({ expr, legendFormat });

function quantiles(metric, by = "") {
  const grp = by ? `${by}, le` : "le";
  const suffix = by ? ` {{${by}}}` : "";
  return ["0.5", "0.9", "0.99"].map((p) =>
    q(`histogram_quantile(${p}, sum by (${grp}) (rate(${metric}_bucket[$__rate_interval])))`,
      `p${Math.round(Number(p) * 100)}${suffix}`));
}

const rate = (m) => `rate(${m}[$__rate_interval])`;

row("Requests");
panel("timeseries", "Requests running / waiting", [
  q("sum(phimoe_gateway_requests_running)", "running"),
  q("sum(phimoe_gateway_requests_waiting)", "waiting")], 0, { unit: "short" });
panel("timeseries", "Token throughput", [
  q(`sum(${rate("phimoe_gateway_prompt_tokens_total")})`, "prompt tokens/s"),
  q(`sum(${rate("phimoe_gateway_generation_tokens_total")})`, "generated tokens/s")],
  8, { unit: "short" });
panel("timeseries", "Finished, rejected, preempted", [
  q(`sum by (reason) (${rate("phimoe_gateway_requests_finished_total")})`, "finished {{reason}}"),
  q(`sum by (code) (${rate("phimoe_gateway_requests_rejected_total")})`, "rejected {{code}}"),
  q(`sum(${rate("phimoe_gateway_preemptions_total")})`, "preemptions")], 16, { unit: "reqps" });

row("Latency");
panel("timeseries", "Time to first token",
      quantiles("phimoe_gateway_time_to_first_token_seconds"), 0, { w: 6, unit: "s" });
panel("timeseries", "Inter-token latency",
      quantiles("phimoe_gateway_inter_token_latency_seconds"), 6, { w: 6, unit: "s" });
panel("timeseries", "End-to-end request latency",
      quantiles("phimoe_gateway_e2e_request_latency_seconds"), 12, { w: 6, unit: "s" });
panel("timeseries", "Queue time",
      quantiles("phimoe_gateway_request_queue_time_seconds"), 18, { w: 6, unit: "s" });

row("KV cache and attention nodes");
panel("timeseries", "KV blocks used / total", [
  q("sum by (pod) (phimoe_attention_kv_blocks_used)", "used {{pod}}"),
  q("sum by (pod) (phimoe_attention_kv_blocks_capacity)", "total {{pod}}")], 0, { unit: "short" });
panel("timeseries", "KV usage", [q("phimoe_attention:kv_blocks_used:ratio", "{{pod}}")], 8,
      { unit: "percentunit" });
panel("timeseries", "Sequences and step time", [
  q("sum by (pod) (phimoe_attention_sequences)", "sequences {{pod}}"),
  q("histogram_quantile(0.99, sum by (pod, le) (rate(phimoe_attention_step_seconds_bucket[$__rate_interval])))",
    "step p99 s {{pod}}"),
  q("histogram_quantile(0.5, sum by (pod, le) (rate(phimoe_attention_step_tokens_bucket[$__rate_interval])))",
    "step tokens p50 {{pod}}"),
  q("sum by (pod) (rate(phimoe_attention_processed_tokens_total[$__rate_interval]))",
    "computed tok/s {{pod}}"),
  q("sum by (pod) (rate(phimoe_attention_recomputed_tokens_total[$__rate_interval]))",
    "recomputed tok/s {{pod}}")], 16, { unit: "short" });

row("Experts");
panel("table", "Tokens routed per layer x expert (tokens/s, last 5 min)",
  [{ ...q("sum by (layer, expert) (rate(phimoe_attention_routed_tokens_total[5m]))", ""),
     instant: true, format: "table" }], 0, {
    w: 16, h: 10,
    description: "Rows are layers, columns experts; the cell colour is the load. An even router " +
                 "gives one colour per row.",
    extra: {
      transformations: [{ id: "groupingToMatrix",
        options: { columnField: "expert", rowField: "layer", valueField: "Value" } }],
      fieldConfig: { defaults: { unit: "short", color: { mode: "continuous-GrYlRd" },
                                 custom: { cellOptions: { type: "color-background" } } },
                     overrides: [] },
    },
  });
panel("timeseries", "Expert imbalance (max / mean per layer)",
      [q("phimoe_attention:expert_imbalance_ratio:5m", "layer {{layer}}")], 16,
      { h: 10, unit: "short" });
panel("heatmap", "Tokens per expert over time (layers $layer)",
  [{ ...q('sum by (expert) (rate(phimoe_attention_routed_tokens_total{layer=~"$layer"}[$__rate_interval]))',
          "{{expert}}"), format: "time_series" }], 0, {
    w: 12,
    extra: { options: { calculate: false, yAxis: { axisLabel: "expert" },
                        color: { mode: "scheme", scheme: "Oranges" } } },
  });
panel("timeseries", "Dispatch round trip per expert node",
      quantiles("phimoe_attention_dispatch_round_trip_seconds", "node"), 12, { w: 12, unit: "s" });
panel("timeseries", "Dispatch bytes per expert node", [
  q(`sum by (node) (${rate("phimoe_attention_dispatch_bytes_sent_total")})`, "sent {{node}}"),
  q(`sum by (node) (${rate("phimoe_attention_dispatch_bytes_received_total")})`, "received {{node}}")],
  0, { unit: "Bps" });
panel("timeseries", "Tokens dispatched per expert node (replica choices)", [
  q(`sum by (node) (${rate("phimoe_attention_dispatch_tokens_total")})`, "{{node}}")],
  8, { unit: "short" });
panel("timeseries", "Expert nodes up (as seen by attention nodes)", [
  q("min by (node) (phimoe_attention_expert_node_up)", "{{node}}"),
  q("sum by (node, event) (increase(phimoe_attention_expert_node_events_total[$__rate_interval]))",
    "{{event}} {{node}}")], 16, { unit: "short" });
panel("timeseries", "Expert node batch size", quantiles("phimoe_expert_batch_tokens", "pod"), 0,
      { unit: "short" });
panel("timeseries", "Expert node compute time", quantiles("phimoe_expert_compute_seconds", "pod"),
      8, { unit: "s" });
panel("timeseries", "Expert node traffic", [
  q(`sum by (pod) (${rate("phimoe_expert_bytes_received_total")})`, "received {{pod}}"),
  q(`sum by (pod) (${rate("phimoe_expert_bytes_sent_total")})`, "sent {{pod}}"),
  q(`sum by (pod) (${rate("phimoe_expert_requests_total")})`, "requests/s {{pod}}"),
  q(`sum by (layer) (${rate("phimoe_expert_tokens_total")})`, "tokens/s layer {{layer}}")],
  16, { unit: "Bps" });

const layerQuery = "label_values(phimoe_attention_routed_tokens_total, layer)";
const dashboard = {
  title: "phimoe mesh",
  uid: "phimoe-mesh",
  description: "Phi-3.5-MoE serving mesh: requests, latency, KV cache, expert routing " +
               "(rules: deploy/prometheus/rules.yaml; generated by deploy/grafana/gen_dashboard.mjs).",
  tags: ["phimoe", "llm"],
  timezone: "browser",
  schemaVersion: 39,
  version: 1,
  editable: true,
  refresh: "30s",
  time: { from: "now-1h", to: "now" },
  annotations: { list: [] },
  links: [],
  templating: { list: [
    { name: "datasource", label: "Data source", type: "datasource", query: "prometheus",
      current: {}, hide: 0, refresh: 1 },
    { name: "layer", label: "Layer", type: "query", datasource: DS,
      query: { query: layerQuery, refId: "layer" }, definition: layerQuery,
      multi: true, includeAll: true, allValue: ".*", current: {}, refresh: 2, sort: 3, hide: 0 },
  ] },
  panels,
};

const out = process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), "phimoe.json");
writeFileSync(out, JSON.stringify(dashboard, null, 2) + "\n");
