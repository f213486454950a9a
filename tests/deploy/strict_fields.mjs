// Unknown-field check for Kubernetes objects. The kubernetes-models JSON schemas (like the API
// server's OpenAPI) allow extra properties, so a misspelt field (`startUpProbe`) would pass schema
// validation and be dropped silently by the API server. This walks an object next to the
// TypeScript declarations (.d.ts) that kubernetes-models ships for the same schemas and reports
// every key the declarations do not name. Maps (`{[key: string]: ...}`) and types it cannot
// follow are accepted as they are.
import { readFileSync, existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";

const cache = new Map();

// Parses one .d.ts file: its imports (type name -> file) and the first exported interface.
function loadDts(file) {
  if (cache.has(file)) return cache.get(file);
  const text = readFileSync(file, "utf8");
  const lines = text.split("\n");
  const imports = new Map();
  for (const m of text.matchAll(/^import \{ ([^}]+) \} from "([^"]+)";$/gm)) {
    for (const name of m[1].split(",").map((s) => s.trim())) {
      imports.set(name.split(" as ").pop(), resolveModule(file, m[2]));
    }
  }
  const start = lines.findIndex((l) => /^export interface \w+( extends [\w, ]+)? \{$/.test(l));
  const type = start < 0 ? { kind: "any" } : parseBody(lines, start + 1, 4).type;
  if (start >= 0 && type.kind === "object" && /extends .*TypeMeta/.test(lines[start])) {
    type.props.set("apiVersion", { kind: "any" });
    type.props.set("kind", { kind: "any" });
  }
  const parsed = { imports, file, type };
  cache.set(file, parsed);
  return parsed;
}

function resolveModule(from, spec) {
  let base;
  if (spec.startsWith(".")) base = resolve(dirname(from), spec);
  else base = join(nodeModulesOf(from), spec);
  return existsSync(base + ".d.ts") ? base + ".d.ts" : join(base, "index.d.ts");
}

function nodeModulesOf(file) {
  const i = file.lastIndexOf("/node_modules/");
  return file.slice(0, i + "/node_modules".length);
}

const indentOf = (l) => l.length - l.trimStart().length;

// Reads properties at `indent` until the closing brace one level up. Returns an object type.
function parseBody(lines, i, indent) {
  const props = new Map();
  let isMap = false;
  for (; i < lines.length; i++) {
    const line = lines[i];
    const t = line.trim();
    if (t === "" || t.startsWith("/**") || t.startsWith("*")) continue;
    const ind = indentOf(line);
    if (ind < indent) break;  // the closing "}" / "};" / "}>;" of this body
    if (ind > indent) continue;  // inside something skipped
    if (t.startsWith("[key: string]")) { isMap = true; continue; }
    const m = t.match(/^"([^"]+)"\??: (.*)$/);
    if (!m) continue;
    const [, name, rest] = m;
    if (rest === "{" || rest === "Array<{") {
      const inner = parseBody(lines, i + 1, indent + 4);
      props.set(name, rest === "{" ? inner.type : { kind: "array", of: inner.type });
      i = inner.end;  // the closing line
    } else if (rest.endsWith(";")) {
      props.set(name, parseType(rest.slice(0, -1)));
    } else {
      props.set(name, { kind: "any" });  // a multi-line type we do not follow
    }
  }
  return { type: isMap ? { kind: "any" } : { kind: "object", props }, end: i };
}

function parseType(s) {
  const arr = s.match(/^Array<(.+)>$/);
  if (arr) return { kind: "array", of: parseType(arr[1]) };
  if (/^I\w+$/.test(s)) return { kind: "ref", name: s };
  return { kind: "any" };
}

function check(value, type, ctx, path, errors) {
  if (value === null || typeof value !== "object") return;
  if (type.kind === "ref") {
    const file = ctx.imports.get(type.name);
    if (!file || !existsSync(file)) return;
    const sub = loadDts(file);
    return check(value, sub.type, sub, path, errors);
  }
  if (type.kind === "array") {
    if (Array.isArray(value)) value.forEach((v, i) => check(v, type.of, ctx, `${path}[${i}]`, errors));
    return;
  }
  if (type.kind !== "object" || Array.isArray(value)) return;
  for (const [k, v] of Object.entries(value)) {
    if (!type.props.has(k)) {
      errors.push(`${path}.${k}: unknown field (known: ${[...type.props.keys()].join(", ")})`);
    } else {
      check(v, type.props.get(k), ctx, `${path}.${k}`, errors);
    }
  }
}

// Returns the unknown fields of `obj`, described by the .d.ts beside the model's module file.
export function unknownFields(obj, modelDtsFile) {
  const root = loadDts(modelDtsFile);
  const errors = [];
  check(obj, root.type, root, obj.kind ?? "object", errors);
  return errors;
}
