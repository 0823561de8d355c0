// Validates Grafana dashboard JSON files against the schema generated from @grafana/schema's Dashboard type.
//
//   node scripts/validate_dashboard.mjs TOOLS_DIR FILE...
//
// TOOLS_DIR is what scripts/grafana_schema.sh installs: node_modules (ajv) and dashboard.schema.json. Prints, per
// file, "FILE: valid" or "FILE: N errors" followed by every error (ajv allErrors) as
// "  /json/pointer (where): message [schema definition]". Exit code 0 when every file is valid, 1 otherwise.
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";

// Fields Grafana writes and reads that the generated schema lacks. Each entry names the definition, the property,
// its JSON schema and the evidence; applying an entry fails when the schema already has that property, so a newer
// @grafana/schema that adds it makes this list shrink instead of hiding a change.
const SCHEMA_GAPS = [
  {
    definition: "VariableModel",
    property: "definition",
    schema: { type: "string", description: "Display text of a query variable's query (written by Grafana)." },
    // The classic VariableModel lists no `definition`, but Grafana's query variables carry one: the classic model
    // Grafana's frontend keeps them in declares it (@grafana/data, packages/grafana-data/src/types/templateVars.ts:
    // QueryVariableModel.definition: string), and @grafana/schema's own v2 model of the same variable has it
    // (dist/types/schema/dashboard/v2/types.spec.gen.d.ts: QueryVariableSpec.definition?: string).
    // ts-json-schema-generator closes every interface (additionalProperties: false), so this one field is added;
    // nothing else is opened.
  },
];

const [toolsDir, ...files] = process.argv.slice(2);
if (!toolsDir || files.length === 0) {
  console.error("usage: node validate_dashboard.mjs TOOLS_DIR FILE...");
  process.exit(1);
}
const require = createRequire(join(toolsDir, "package.json"));
const Ajv = require("ajv");

const schema = JSON.parse(readFileSync(join(toolsDir, "dashboard.schema.json"), "utf8"));
for (const gap of SCHEMA_GAPS) {
  const definition = schema.definitions?.[gap.definition];
  if (!definition?.properties) throw new Error(`schema has no definition ${gap.definition} to add ${gap.property} to`);
  if (gap.property in definition.properties) {
    throw new Error(`schema's ${gap.definition} now has ${gap.property}: remove it from SCHEMA_GAPS`);
  }
  definition.properties[gap.property] = gap.schema;
}
// Grafana treats a panel of type "row" as a row and every other panel as a panel; the generated schema says "Panel or
// RowPanel" (anyOf), which reports every error twice, once per branch. Choosing the branch by type gives one
// set of errors, and is no looser: a "row" must now be a valid RowPanel (anyOf let it pass as a Panel too).
const items = schema.definitions.Dashboard?.properties?.panels?.items;
const refs = (items?.anyOf ?? []).map((branch) => branch.$ref).join(" ");
if (refs !== "#/definitions/Panel #/definitions/RowPanel") {
  throw new Error(`Dashboard.panels.items is no longer anyOf Panel | RowPanel (${refs}): revisit the row choice`);
}
schema.definitions.Dashboard.properties.panels.items = {
  if: { type: "object", properties: { type: { const: "row" } }, required: ["type"] },
  then: { $ref: "#/definitions/RowPanel" },
  else: { $ref: "#/definitions/Panel" },
};
const validate = new Ajv({ allErrors: true, verbose: true }).compile(schema);

/** The value at a JSON pointer's parent chain: the nearest panel title or variable name, for a readable path. */
function where(document, pointer) {
  const keys = pointer.split("/").slice(1).map((key) => key.replaceAll("~1", "/").replaceAll("~0", "~"));
  let node = document;
  let found = "";
  for (const key of keys) {
    if (node === null || typeof node !== "object") break;
    node = node[key];
    if (node && typeof node === "object" && !Array.isArray(node)) {
      if (typeof node.title === "string") found = `panel "${node.title}"`;
      else if (typeof node.name === "string" && typeof node.type === "string") found = `variable "${node.name}"`;
    }
  }
  return found;
}

/** The schema definition (e.g. RowPanel) whose keyword, or whose property's keyword, an error reports (ajv's
 * verbose parentSchema). */
function definitionOf(error) {
  const entries = Object.entries(schema.definitions);
  const found =
    entries.find(([, value]) => value === error.parentSchema) ??
    entries.find(([, value]) => Object.values(value.properties ?? {}).includes(error.parentSchema));
  return found ? found[0] : "";
}

function describe(error) {
  const details = {
    additionalProperties: () => ` '${error.params.additionalProperty}'`,
    enum: () => `: ${error.params.allowedValues.map((v) => JSON.stringify(v)).join(", ")}`,
    const: () => `: ${JSON.stringify(error.params.allowedValue)}`,
    anyOf: () => {
      const branches = error.parentSchema.anyOf.map((branch) => branch.$ref?.split("/").pop() ?? "inline");
      return ` (${branches.join(" | ")})`;
    },
  }[error.keyword];
  return `${error.message}${details ? details() : ""}`;
}

let failed = false;
for (const file of files) {
  let document;
  try {
    document = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    console.log(`${file}: not readable JSON: ${error.message}`);
    failed = true;
    continue;
  }
  if (validate(document)) {
    console.log(`${file}: valid`);
    continue;
  }
  failed = true;
  // An "if" error only says that the then/else branch failed; that branch's own errors are printed.
  const errors = validate.errors.filter((error) => error.keyword !== "if");
  console.log(`${file}: ${errors.length} ${errors.length === 1 ? "error" : "errors"}`);
  for (const error of errors) {
    const path = error.instancePath || "/";
    const context = where(document, error.instancePath);
    const definition = definitionOf(error);
    const suffix = definition ? ` [${definition}]` : "";
    console.log(`  ${path}${context ? ` (${context})` : ""}: ${describe(error)}${suffix}`);
  }
}
process.exit(failed ? 1 : 0);
