// One build: TypeScript → one bundled, minified viewer.js (livekit-client inside, no CDN), the
// frame-metadata worker livekit-client needs, the stylesheet and the page, into the Python
// package's static/ folder (git-ignored; `npm run build` or scripts/setup regenerates it).
import { build } from 'esbuild';
import { copyFile, mkdir, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, '..', 'overlay_gateway', 'static');
const common = {
  bundle: true,
  minify: true,
  sourcemap: true,
  target: ['chrome110', 'firefox115', 'safari16'],
  logLevel: 'warning',
  legalComments: 'linked',
};

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
// An ES module with code splitting: the test hooks (src/testhooks.ts) end up in a chunk of
// their own that the page imports only when its URL asks for them (`?testhooks`).
await build({
  ...common,
  entryPoints: { viewer: join(here, 'src', 'main.ts') },
  outdir: out,
  format: 'esm',
  splitting: true,
  chunkNames: 'chunks/[name]-[hash]',
});
// livekit-client reads frame metadata (user_timestamp, frame_id) off the encoded frames in a
// dedicated worker; it must be a same-origin file, so it is bundled next to the page.
await build({ ...common, entryPoints: ['livekit-client/frame-metadata-worker'], outfile: join(out, 'fm-worker.js'), format: 'iife' });
await copyFile(join(here, 'src', 'index.html'), join(out, 'index.html'));
await copyFile(join(here, 'src', 'viewer.css'), join(out, 'viewer.css'));
await copyFile(join(here, 'src', 'favicon.svg'), join(out, 'favicon.svg'));
console.log(`viewer built into ${out}`);
