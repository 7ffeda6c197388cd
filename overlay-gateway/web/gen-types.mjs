// The viewer's event types, generated from the event contract's JSON Schema
// (docs/events.schema.json, itself generated from camfleet.events) so that they cannot drift.
//
//   node gen-types.mjs           # write src/events.ts
//   node gen-types.mjs --check   # exit 1 if src/events.ts is stale (the build and CI run this)
//
// Only the schema constructs the contract uses are supported; anything else is an error, not
// a silent `unknown`.
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const schemaPath = join(here, '..', '..', 'docs', 'events.schema.json');
const outPath = join(here, 'src', 'events.ts');

function refName(ref) {
  const m = /^#\/\$defs\/(\w+)$/.exec(ref);
  if (!m) throw new Error(`unsupported $ref ${ref}`);
  return m[1];
}

function typeOf(s) {
  if (s.$ref) return refName(s.$ref);
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.anyOf) return s.anyOf.map(typeOf).join(' | ');
  if (Object.keys(s).every((k) => ['title', 'description'].includes(k))) return 'unknown';
  switch (s.type) {
    case 'string':
      return 'string';
    case 'integer':
    case 'number':
      return 'number';
    case 'boolean':
      return 'boolean';
    case 'null':
      return 'null';
    case 'array':
      if (s.prefixItems) return `[${s.prefixItems.map(typeOf).join(', ')}]`;
      return `${wrap(typeOf(s.items))}[]`;
    case 'object':
      if (s.properties) throw new Error('nested object schemas must be $defs');
      return `Record<string, ${s.additionalProperties ? typeOf(s.additionalProperties) : 'unknown'}>`;
    default:
      throw new Error(`unsupported schema ${JSON.stringify(s)}`);
  }
}

function wrap(t) {
  return t.includes('|') ? `(${t})` : t;
}

function iface(name, s) {
  const required = new Set(s.required ?? []);
  const lines = [];
  if (s.description) lines.push(`/** ${s.description} */`);
  lines.push(`export interface ${name} {`);
  for (const [key, prop] of Object.entries(s.properties)) {
    if (prop.description) lines.push(`  /** ${prop.description} */`);
    lines.push(`  ${key}${required.has(key) ? '' : '?'}: ${typeOf(prop)};`);
  }
  lines.push('}');
  return lines.join('\n');
}

function render(schema) {
  const parts = [
    '// Generated from docs/events.schema.json by gen-types.mjs: do not edit, run `npm run gen-types`.',
    '',
  ];
  for (const [name, def] of Object.entries(schema.$defs ?? {})) {
    parts.push(def.type === 'object' ? iface(name, def) : `export type ${name} = ${typeOf(def)};`, '');
  }
  parts.push(iface(schema.title, schema), '');
  return parts.join('\n');
}

const schema = JSON.parse(await readFile(schemaPath, 'utf8'));
const text = render(schema);
if (process.argv.includes('--check')) {
  const current = await readFile(outPath, 'utf8').catch(() => '');
  if (current !== text) {
    console.error(`${outPath} does not match ${schemaPath}: run \`npm run gen-types\``);
    process.exit(1);
  }
} else if (process.argv.includes('--stdout')) {
  process.stdout.write(text);
} else {
  await writeFile(outPath, text);
}
